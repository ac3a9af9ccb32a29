"""Original → our checkpoint key mapping (docs/checkpoint_mapping.md, tools/convert_original_checkpoint.py).

Synthetic original head state dicts carry exactly the original key names and shapes (tests/test_tools/original_keys.py,
written from the original module definitions) for the sizes of our R101 configs (basic, coord_regr, no_reproj, v1b,
v2); after conversion every key must exist in our head with the same shape, and every key of our head must be
covered."""
import os
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from epropnp_det.utils.original_checkpoint import convert_checkpoint, convert_key, convert_state_dict
from tests.test_tools.original_keys import original_head_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _doc_rows():
    text = open(os.path.join(ROOT, 'docs', 'checkpoint_mapping.md')).read()
    section, rows = None, []
    for line in text.splitlines():
        if line.startswith('Both versions'):
            section = ('v1', 'v2')
        elif line.startswith('v1 / v1b'):
            section = ('v1',)
        elif line.startswith('v2 ('):
            section = ('v2',)
        m = re.match(r'^\| `([^`]+)` \| `([^`]+)` \|$', line)
        if m and section:
            rows.extend((v, m.group(1), m.group(2)) for v in section)
    return rows


def test_doc_table_agrees_with_the_rules():
    rows = _doc_rows()
    assert len(rows) > 60
    for version, orig, ours in rows:
        assert convert_key('bbox_head.' + orig, version) == 'bbox_head.' + ours, (version, orig)
    key = 'backbone.layer3.0.conv2.conv_offset.weight'
    assert convert_key(key, 'v1') == key
    assert convert_key('neck.fpn_convs.4.conv.bias', 'v2') == 'neck.fpn_convs.4.conv.bias'
    assert convert_key('bbox_head.something_else', 'v2') is None
    with pytest.raises(ValueError):
        convert_key('bbox_head.cls_emb', 'v3')


def _our_head(cfg_name):
    """Our head (backbone and neck are the same mmdet modules in both code bases: identity mapping, checked in
    test_doc_table_agrees_with_the_rules) wrapped so that its keys carry the ``bbox_head.`` prefix."""
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import epropnp_det.datasets  # noqa: F401
    import epropnp_det.models  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', cfg_name))
    model = torch.nn.Module()
    model.bbox_head = MODELS.build(cfg.model.bbox_head)
    return cfg, model


@pytest.mark.parametrize('cfg_name,version', [('epropnp_det_r101.py', 'v1'), ('epropnp_det_r101_coord_regr.py', 'v1'),
                                              ('epropnp_det_r101_v1b.py', 'v1'), ('epropnp_det_r101_v2.py', 'v2'),
                                              ('epropnp_det_r101_no_reproj.py', 'v1')])
def test_synthetic_original_state_dict_converts_exactly(cfg_name, version):
    if not os.path.exists(os.path.join(ROOT, 'configs', cfg_name)):
        pytest.skip(f'{cfg_name} not present')
    cfg, model = _our_head(cfg_name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    head = cfg.model.bbox_head
    shapes = original_head_shapes(head, version, with_proj=head.get('loss_proj') is not None,
                                  with_regr=head.get('loss_regr') is not None,
                                  with_depth=head.get('depth_branch') is not None)
    # the original v1 head always has the RoI GroupLinear (corr_regs.0); ours only with loss_proj / loss_regr, so
    # a no_reproj checkpoint has exactly these two extra keys (docs/checkpoint_mapping.md, notes)
    extra = {'bbox_head.roi_aux.corr_reg_aux.weight', 'bbox_head.roi_aux.corr_reg_aux.bias'}
    if 'no_reproj' in cfg_name:
        assert 'bbox_head.corr_regs.0.weight' in shapes and not any('roi_aux' in k for k in ours)
    else:
        extra = set()
    gen = torch.Generator().manual_seed(0)
    original = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    converted, unmapped = convert_state_dict(original, version)
    assert not unmapped
    assert set(converted) == set(ours) | extra, (sorted(set(converted) - set(ours)), sorted(set(ours) - set(converted)))
    for k in extra:
        del converted[k]
    for k, v in converted.items():
        assert tuple(v.shape) == ours[k], (k, tuple(v.shape), ours[k])
    # values are carried over untouched (log σ reshaped from (1,) to a scalar)
    inv = {convert_key(k, version): k for k in original}
    assert len(inv) == len(original)
    for k, v in converted.items():
        torch.testing.assert_close(v.reshape(-1), original[inv[k]].reshape(-1))
    res = model.load_state_dict(converted, strict=True)
    assert not res.missing_keys and not res.unexpected_keys


def test_strictness_and_checkpoint_wrapper(tmp_path):
    sd = {'module.bbox_head.cls_emb': torch.zeros(10, 4), 'bbox_head.unknown.weight': torch.zeros(1)}
    with pytest.raises(KeyError, match='unknown'):
        convert_state_dict(sd, 'v2')
    out = convert_checkpoint(dict(state_dict=sd, meta=dict(epoch=12), optimizer={}), 'v2', strict=False)
    assert list(out['state_dict']) == ['bbox_head.cls_emb'] and 'optimizer' not in out
    assert out['meta']['epoch'] == 12 and out['meta']['unmapped_original_keys'] == ['bbox_head.unknown.weight']
    with pytest.raises(ValueError, match='map to'):
        convert_state_dict({'bbox_head.corr_reg.weight': torch.zeros(1), 'bbox_head.pts_trans.x': torch.zeros(1),
                            'module.bbox_head.corr_reg.weight': torch.zeros(1)}, 'v2')


def test_tool_round_trip(tmp_path):
    src, dst = tmp_path / 'orig.pth', tmp_path / 'ours.pth'
    torch.save(dict(state_dict={'bbox_head.loss_depth.log_sigma': torch.tensor([-1.2]),
                                'bbox_head.w2d_scale_branch.weight': torch.ones(2, 3)}, meta={}), src)
    res = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'convert_original_checkpoint.py'), str(src),
                          str(dst), '--version', 'v2'], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    out = torch.load(dst, weights_only=False)
    assert out['state_dict']['bbox_head.depth_branch.loss_depth.log_sigma'].shape == ()
    assert float(out['state_dict']['bbox_head.depth_branch.loss_depth.log_sigma']) == pytest.approx(-1.2)
    assert out['meta']['converted_from'] == 'EPro-PnP-Det v2'
