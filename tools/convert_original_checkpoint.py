"""Rename the keys of an original EPro-PnP-Det checkpoint (v1/v1b or v2) to this package's names.

    python tools/convert_original_checkpoint.py IN.pth OUT.pth [--version v1|v2] [--non-strict]

The table is in docs/checkpoint_mapping.md (rules: epropnp_det/utils/original_checkpoint.py). Only the state dict
and meta are written (the optimizer state refers to the original parameter order). ``--non-strict`` keeps going
when keys have no mapping and lists them in ``meta['unmapped_original_keys']``. Load the result with
``tools/test.py CONFIG OUT.pth`` using the matching config (v1 basic: epropnp_det_r101.py, v1b:
epropnp_det_r101_v1b.py, v2: epropnp_det_r101_v2.py).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

import torch  # noqa: E402

from epropnp_det.utils.original_checkpoint import convert_checkpoint  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='original checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--version', choices=('v1', 'v2'), default='v2',
                        help='v1: EPro-PnP-Det basic / coord_regr / v1b; v2: EPro-PnP-Det_v2')
    parser.add_argument('--non-strict', action='store_true', help='do not fail on keys without a mapping')
    args = parser.parse_args(argv)
    # original checkpoints hold numpy/mmcv objects in meta: this is a trusted, user-supplied file
    ckpt = torch.load(args.src, map_location='cpu', weights_only=False)
    out = convert_checkpoint(ckpt, args.version, strict=not args.non_strict)
    torch.save(out, args.dst)
    n_un = len(out['meta'].get('unmapped_original_keys', []))
    print(f"converted {len(out['state_dict'])} tensors ({args.version}) -> {args.dst}"
          + (f'; {n_un} unmapped keys listed in meta' if n_un else ''))


if __name__ == '__main__':
    main()
