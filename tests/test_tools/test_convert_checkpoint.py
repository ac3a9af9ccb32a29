"""Original → our checkpoint key mapping (docs/checkpoint_mapping.md, tools/convert_original_checkpoint.py).

Synthetic original head state dicts carry exactly the original key names and shapes (tests/test_tools/original_keys.py,
written from the original module definitions) for the sizes of our R101 configs (basic, coord_regr, no_reproj, v1b,
v2); after conversion every key must exist in our head with the same shape, and every key of our head must be
covered.

Values: :func:`test_converted_values_compute_what_the_original_computes` fills the original layout with random
values and runs the original's forward arithmetic on them, written in this file from the original code
(``DeformableAttentionSampler.forward``, ``DeformPnPHead.forward_points`` / ``forward_subheads``,
``GroupLinear.forward``, ``FCOSEmbHead.forward_single``, the v2 depth branch, mmcv's ``BaseTransformerLayer`` with
``MultiheadAttention`` and ``FFN``); our modules loaded with the converted dict must give the same outputs. A
transposed GroupLinear, a point-/head-major mix-up (sampling offsets, correspondences), a reordered class-specific
offset or dimension layout, or a swapped code/logit order of the depth modes would fail.
"""
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


# ------------------------------------------------------------------------------------------------ values
def _orig_linear(sd, key, x):
    return x @ sd[key + '.weight'].T + sd[key + '.bias']


def _orig_group_linear(sd, key, x, groups):
    """The original ``GroupLinear.forward``: ``weight @ x.reshape(*b, G, C_in / G, 1) + bias[..., None]``."""
    lead = x.shape[:-1]
    w, b = sd[key + '.weight'], sd[key + '.bias']
    out = w @ x.reshape(*lead, groups, x.shape[-1] // groups, 1) + b[..., None]
    return out.reshape(*lead, -1)


def _orig_transformer_layer(sd, pre, v, pos):
    """mmcv ``BaseTransformerLayer`` ('self_attn', 'norm', 'ffn', 'norm'), batch_first, one attention head, eval:
    query = key = v + pos, value = v; residuals around attention and FFN; post-norm."""
    d = v.shape[-1]
    w_in, b_in = sd[pre + '.attentions.0.attn.in_proj_weight'], sd[pre + '.attentions.0.attn.in_proj_bias']
    q = (v + pos) @ w_in[:d].T + b_in[:d]
    k = (v + pos) @ w_in[d:2 * d].T + b_in[d:2 * d]
    val = v @ w_in[2 * d:].T + b_in[2 * d:]
    att = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1) @ val
    v = v + _orig_linear(sd, pre + '.attentions.0.attn.out_proj', att)
    v = torch.nn.functional.layer_norm(v, (d,), sd[pre + '.norms.0.weight'], sd[pre + '.norms.0.bias'])
    ffn = _orig_linear(sd, pre + '.ffns.0.layers.1', torch.relu(_orig_linear(sd, pre + '.ffns.0.layers.0.0', v)))
    v = v + ffn
    return torch.nn.functional.layer_norm(v, (d,), sd[pre + '.norms.1.weight'], sd[pre + '.norms.1.bias'])


def _orig_points(sd, version, values, x2d, query, mask, flip):
    """``DeformPnPHead.forward_points`` of the original (v1: layer 0 of ``pts_trans`` / ``corr_regs[1]``; v2:
    ``pts_trans`` / ``corr_reg``) on sampler outputs values (N, Hh, d, P), x2d (N, Hh, 2, P), query (N, Hh, 1, d),
    mask (N, Hh, 1, P); returns noc (N, n, 3), w2d (N, n, 2)."""
    N, Hh, d, P = values.shape
    n = Hh * P
    v = values.transpose(-1, -2).reshape(N, n, d)
    x = x2d.transpose(-1, -2).reshape(N, n, 2).clone()
    x[flip, :, 0] = -x[flip, :, 0]
    std, mean = torch.std_mean(x, dim=1, keepdim=True)
    pos = _orig_linear(sd, 'x2d_pos_enc', (x - mean) / std.clamp(min=1.0))
    q = query.expand(-1, -1, P, -1).reshape(N, n, d)
    pre, scale, reg = ('pts_trans.0', 'obj_query_scale.0.scale', 'corr_regs.1') if version == 'v1' else \
        ('pts_trans', 'obj_query_scale.scale', 'corr_reg')
    v = _orig_transformer_layer(sd, pre, v + sd[scale] * q, pos)
    v_ = v.reshape(N, Hh, P, d).transpose(1, 2).reshape(N, P, Hh * d)
    regr = _orig_group_linear(sd, reg, v_, Hh).reshape(N, P, Hh, 5).transpose(2, 1)
    noc, w2d = regr.split([3, 2], dim=-1)
    noc = noc.clone()
    noc[flip, :, :, 2] = -noc[flip, :, :, 2]
    w2d = w2d.reshape(N, n, 2).softmax(dim=1).reshape(N, Hh, P, 2) * mask.transpose(-1, -2)
    return noc.reshape(N, n, 3), w2d.reshape(N, n, 2)


def _orig_subheads(sd, version, feat, labels, flip, num_classes):
    """Object-level outputs of the original ``forward_subheads`` from the sampler's object feature (N, C)."""
    scale = _orig_linear(sd, 'scale_branch' if version == 'v1' else 'w2d_scale_branch', feat).exp()
    score = _orig_linear(sd, 'score_branch', feat).squeeze(-1)
    h = feat
    i = 0
    while f'pred_fc.{i}.weight' in sd:
        h = torch.relu(_orig_linear(sd, f'pred_fc.{i}', h))
        i += 2
    dim_enc = _orig_linear(sd, 'dim_branch', h).reshape(len(feat), num_classes, 3)[torch.arange(len(feat)), labels]
    velo = _orig_linear(sd, 'velo_branch', h).clone()
    velo[flip, 0] = -velo[flip, 0]
    return scale, score, dim_enc, velo, _orig_linear(sd, 'attr_branch', h)


def _orig_sampler(sd, emb, pos, ref, strides, img_inds, key, value, Hh, P, stride):
    """The original ``DeformableAttentionSampler.forward`` (query from ``query_proj(query_scale·emb + pos)`` as in
    ``forward_subheads``) with every sample valid: object feature (N, C), value samples (N, Hh, d, P), attention
    (N, Hh, 1, P)."""
    N, E = emb.shape
    d = E // Hh
    B, _, h, w = key.shape
    query = _orig_linear(sd, 'query_proj', sd['query_scale.scale'] * emb + pos).reshape(N, Hh, 1, d)
    offsets = _orig_linear(sd, 'attention_sampler.sampling_offsets', emb).reshape(N, Hh, P, 2)
    loc = ref[:, None, None] + offsets * strides[:, None, None, None]
    hw_img = key.new_tensor([h, w]) * stride
    grid = (loc * (2 / hw_img[[1, 0]]) - 1).transpose(1, 0).reshape(Hh, N, P, 1, 2)
    z = ((img_inds.to(key.dtype) + 0.5) * (2 / B) - 1.0)[None, :, None, None, None].expand(Hh, -1, P, 1, 1)
    grid = torch.cat((grid, z), dim=-1)

    def sample(m):
        return torch.nn.functional.grid_sample(m.reshape(B, Hh, d, h, w).permute(1, 2, 0, 3, 4), grid,
                                               mode='bilinear', padding_mode='border',
                                               align_corners=False).squeeze(-1).permute(2, 0, 1, 3)

    k, v = sample(key), sample(value)
    a = (query @ k / d ** 0.5).softmax(dim=-1)
    out = (v @ a.reshape(N, Hh, P, 1)).reshape(N, E)
    out = _orig_linear(sd, 'attention_sampler.out_proj', out) + emb
    ln = torch.nn.functional.layer_norm
    out = ln(out, (E,), sd['attention_sampler.layer_norms.0.weight'], sd['attention_sampler.layer_norms.0.bias'])
    ffn = _orig_linear(sd, 'attention_sampler.ffn.layers.1',
                       torch.relu(_orig_linear(sd, 'attention_sampler.ffn.layers.0.0', out)))
    out = ln(out + ffn, (E,), sd['attention_sampler.layer_norms.1.weight'], sd['attention_sampler.layer_norms.1.bias'])
    return out, v, a, loc


@pytest.mark.parametrize('cfg_name,version', [('epropnp_det_r101_v1b.py', 'v1'), ('epropnp_det_r101_v2.py', 'v2')])
def test_converted_values_compute_what_the_original_computes(cfg_name, version):
    cfg, model = _our_head(cfg_name)
    head_cfg = cfg.model.bbox_head
    shapes = original_head_shapes(head_cfg, version, with_proj=head_cfg.get('loss_proj') is not None,
                                  with_regr=head_cfg.get('loss_regr') is not None,
                                  with_depth=head_cfg.get('depth_branch') is not None)
    gen = torch.Generator().manual_seed(1)
    # original layout, random values (scales away from 0 so that every term matters)
    original = {k: torch.randn(s, generator=gen, dtype=torch.float64) * (0.3 if len(s) > 1 else 1.0)
                for k, s in shapes.items()}
    converted, _ = convert_state_dict(original, version)
    model = model.double().eval()
    model.load_state_dict(converted, strict=True)
    head = model.bbox_head
    sd = {k[len('bbox_head.'):]: v for k, v in original.items()}
    C, E, Hh = head_cfg.num_classes, head_cfg.embed_dims, head_cfg.num_heads
    d, P, N = E // Hh, 5, 4
    flip = torch.tensor([False, True, False, True])
    labels = torch.tensor([0, 3, C - 1, 7])
    with torch.no_grad():
        # deformable attention sampler: query, per-head sampling offsets (N, Hh, P, 2), attention, FFN
        sampler = head.sampler
        B, h, w, s = 2, 48, 64, float(sampler.stride)
        key = torch.randn(B, E, h, w, generator=gen, dtype=torch.float64)
        value = torch.randn(B, E, h, w, generator=gen, dtype=torch.float64)
        emb = torch.randn(N, E, generator=gen, dtype=torch.float64) * 0.05  # offsets stay a few pixels
        pos = torch.randn(N, E, generator=gen, dtype=torch.float64)
        ref = torch.tensor([[130.0, 95.0], [121.0, 90.0], [135.0, 99.0], [125.0, 93.0]], dtype=torch.float64)
        strides = torch.tensor([8.0, 8.0, 16.0, 8.0], dtype=torch.float64)
        inds = torch.tensor([0, 1, 1, 0])
        img_wh = torch.tensor([[w * s, h * s]] * B, dtype=torch.float64)
        kw = dict(img_transforms=torch.eye(3, dtype=torch.float64).expand(B, 3, 3)) \
            if sampler.x2d_mode == 'homography' else \
            dict(dense_x2d=torch.zeros(B, 2, h, w, dtype=torch.float64), dense_mask=torch.ones(B, 1, h, w,
                                                                                              dtype=torch.float64))
        so = sampler(emb, pos, ref, strides, inds, key, value, img_wh, **kw)
        out, v_ref, a_ref, loc_ref = _orig_sampler(sd, emb, pos, ref, strides, inds, key, value, Hh,
                                                   head_cfg.num_points, s)
        assert (so.mask == 1).all()  # all samples inside: the original's mask is 1 there too
        torch.testing.assert_close(so.loc, loc_ref, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(so.values, v_ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(so.attn, a_ref, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(so[0], out, rtol=1e-9, atol=1e-9)
        # point subnet: transformer layer, point-major regrouping, GroupLinear, flip corrections, softmax
        values = torch.randn(N, Hh, d, P, generator=gen, dtype=torch.float64)
        x2d = torch.rand(N, Hh, 2, P, generator=gen, dtype=torch.float64) * 400
        query = torch.randn(N, Hh, 1, d, generator=gen, dtype=torch.float64)
        mask = (torch.rand(N, Hh, 1, P, generator=gen) > 0.2).double()
        ours = head.point_subnet(values, x2d, query, mask, flip)
        noc, w2d = _orig_points(sd, version, values, x2d, query, mask, flip)
        torch.testing.assert_close(ours.noc, noc, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ours.w2d, w2d, rtol=1e-9, atol=1e-12)
        # object branches: class-specific dims [cls0 (l, h, w), cls1 ...], scale, score, velocity, attributes
        feat = torch.randn(N, E, generator=gen, dtype=torch.float64)
        ob = head.object_branches(feat, labels, flip)
        scale, score, dim_enc, velo, attr = _orig_subheads(sd, version, feat, labels, flip, C)
        for a, b in ((ob.scale, scale), (ob.score_logit, score), (ob.dim_enc, dim_enc), (ob.velo, velo),
                     (ob.attr_logits, attr)):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        # FCOS class-specific reference offsets: original channel c·2 + xy, i.e. reshape(B, C, 2, h, w)
        x = torch.randn(2, head_cfg.fcos_head.feat_channels, 3, 5, generator=gen, dtype=torch.float64)
        off = torch.nn.functional.conv2d(x, sd['detector.conv_offset.weight'], sd['detector.conv_offset.bias'])
        ours_off = head.fcos_head.conv_ref_offset(x)
        assert ours_off.shape[1] == 2 * C
        flat = ours_off.permute(0, 2, 3, 1).reshape(-1, 2 * C)
        lab = torch.arange(flat.shape[0]) % C
        ref = off.reshape(2, C, 2, 3, 5).permute(0, 3, 4, 1, 2).reshape(-1, C, 2)[torch.arange(flat.shape[0]), lab]
        torch.testing.assert_close(head.fcos_head.select_centers(flat, lab), ref, rtol=1e-9, atol=1e-12)
        if version == 'v2':
            # dense depth branch: original Sequential on a feature, output reshaped (M, 2) → (code, logit)
            M = head_cfg.depth_branch.get('num_modes', 4)
            vec = torch.randn(2, E, generator=gen, dtype=torch.float64)
            value_map = vec[:, :, None, None].expand(2, E, 4, 6).contiguous()  # constant per image
            loc = torch.tensor([[9.0, 7.0], [20.0, 11.0], [13.0, 5.0]], dtype=torch.float64)
            inds = torch.tensor([0, 1, 1])
            codes, logits = head.depth_branch(value_map, loc, inds, 4.0)
            h = vec[inds]
            i = 0
            while f'depth_branch.{i + 2}.weight' in sd:
                h = torch.relu(_orig_linear(sd, f'depth_branch.{i}', h))
                i += 2
            ref_code, ref_logit = _orig_linear(sd, f'depth_branch.{i}', h).reshape(-1, M, 2).unbind(dim=-1)
            torch.testing.assert_close(codes, ref_code, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(logits, ref_logit, rtol=1e-9, atol=1e-12)
            for owner, name in (('depth_branch', 'loss_depth'), ('roi_aux', 'loss_regr')):
                ours_ls = converted[f'bbox_head.{owner}.{name}.log_sigma']
                assert ours_ls.shape == () and float(ours_ls) == float(sd[f'{name}.log_sigma'][0])
