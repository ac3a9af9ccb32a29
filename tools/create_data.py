"""Create mmdet3d 1.4 nuScenes info files with the EPro-PnP fields (see ``epropnp_det/datasets/nuscenes_infos.py``).

Example::

    python tools/create_data.py nuscenes --root-path data/nuscenes --out-dir data/nuscenes --version v1.0-trainval
    python tools/create_data.py nuscenes --root-path data/nuscenes --out-dir data/nuscenes --version v1.0-test
    python tools/create_data.py nuscenes --root-path data/synthetic_nuscenes --out-dir data/synthetic_nuscenes \\
        --version v1.0-mini

Writes ``<out-dir>/<extra-tag>_infos_{train,val}.pkl`` (``_test.pkl`` for v1.0-test): mmdet3d's own converter
output, plus one documented step adding visibility, truncation, tokens, LiDAR point counts and the near-plane
clipped 2D box to every ``cam_instances`` record. No GT database is built (LiDAR-detector material).
A split without any of its scenes in the root (e.g. a generated root of one scene has no mini_val scene) is
skipped with a warning naming the expected and present scenes; exit status 1 with ``error: ...`` if all are.
"""
import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('dataset', choices=['nuscenes'], help='dataset name (only nuscenes)')
    p.add_argument('--root-path', required=True, help='nuScenes root (holds <version>/, samples/, sweeps/)')
    p.add_argument('--out-dir', default=None, help='where the info files go (default: --root-path)')
    p.add_argument('--version', default='v1.0-trainval', choices=['v1.0-trainval', 'v1.0-test', 'v1.0-mini'])
    p.add_argument('--extra-tag', default='nuscenes', help='info file prefix')
    p.add_argument('--max-sweeps', type=int, default=10, help='LiDAR sweeps listed per sample (mmdet3d default)')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from epropnp_det.datasets.nuscenes_infos import EmptySplitWarning, create_nuscenes_infos
    t0 = time.time()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', EmptySplitWarning)
            paths = create_nuscenes_infos(args.root_path, args.out_dir, version=args.version,
                                          info_prefix=args.extra_tag, max_sweeps=args.max_sweeps)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    for w in caught:
        if issubclass(w.category, EmptySplitWarning):
            print(f'warning: {w.message}', file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f'Wrote {", ".join(paths)} in {time.time() - t0:.1f} s')


if __name__ == '__main__':
    main()
