"""State-dict keys and shapes of the ORIGINAL EPro-PnP-Det heads (v1/v1b ``EPro-PnP-Det`` and v2
``EPro-PnP-Det_v2``), written from their module definitions (``DeformPnPHead.__init__`` / ``_init_convs`` /
``_init_out_layers``, ``FCOSEmbHead._init_predictor`` / ``_init_branch`` and mmdet 2.x ``AnchorFreeHead``
stacked convs, ``DeformableAttentionSampler.__init__``, ``GroupLinear``, mmcv 1.x ``ConvModule`` (``conv``, ``gn``),
``ModulatedDeformConv2dPack`` (``conv_offset``), ``Scale``, ``FFN`` (``layers.0.0``, ``layers.1``),
``BaseTransformerLayer`` (``attentions.0.attn``, ``ffns.0``, ``norms.i``), ``MonteCarloPoseLoss`` (buffer
``norm_factor``) and ``MVDGaussianMixtureNLLLoss`` (buffer ``mean_inv_std``; v2 learnable ``log_sigma`` (1,))).

Sizes come from one of our head configs (the same model in both code bases). Backbone and neck are mmdet's ResNet /
FPN in both code bases; their keys are taken from our model.
"""
from collections import OrderedDict


def _conv_module(prefix, cin, cout, k, norm=True, dcn=False, bias=False):
    out = OrderedDict()
    out[f'{prefix}.conv.weight'] = (cout, cin, k, k)
    if bias:
        out[f'{prefix}.conv.bias'] = (cout,)
    if dcn:
        out[f'{prefix}.conv.conv_offset.weight'] = (3 * k * k, cin, k, k)
        out[f'{prefix}.conv.conv_offset.bias'] = (3 * k * k,)
    if norm:
        out[f'{prefix}.gn.weight'] = (cout,)
        out[f'{prefix}.gn.bias'] = (cout,)
    return out


def _linear(prefix, cin, cout):
    return OrderedDict([(f'{prefix}.weight', (cout, cin)), (f'{prefix}.bias', (cout,))])


def original_head_shapes(head: dict, version: str, with_proj: bool, with_regr: bool, with_depth: bool) -> OrderedDict:
    """Original ``bbox_head.*`` keys → shapes for the sizes of our head config ``head`` (a config dict)."""
    C = head['num_classes']
    I = head['in_channels']
    E = head['embed_dims']
    Hh, P = head['num_heads'], head['num_points']
    d = E // Hh
    fc = head['fcos_head']
    F_, S = fc['feat_channels'], fc['stacked_convs']
    db = head['dense_branch']
    lvl = tuple(db['lvl_feat_channels'])
    n_dense = head['dense_lvl_range'][1] - head['dense_lvl_range'][0]
    pe = 2 * db['positional_encoding']['num_feats']
    ffn_s = head['sampler']['ffn_cfg']['feedforward_channels']
    ffn_p = head['point_subnet']['feedforward_channels']
    ob = head['object_branches']
    s = OrderedDict()
    # ---- FCOSEmbHead ("detector")
    for name in ('cls_convs', 'reg_convs'):
        for i in range(S):
            s.update(_conv_module(f'detector.{name}.{i}', I if i == 0 else F_, F_, 3,
                                  dcn=fc.get('dcn_on_last_conv', True) and i == S - 1))
    branches = [('conv_cls_prev', fc['cls_branch']), ('conv_centerness_prev', fc['centerness_branch']),
                ('conv_emb_prev', fc['emb_branch']), ('conv_offset_prev', fc['offset_branch'])]
    if version == 'v2' and fc.get('bbox_branch') is not None:
        branches.append(('conv_bbox_prev', fc['bbox_branch']))
    for name, widths in branches:
        chn = F_
        for i, w in enumerate(widths):
            s.update(_conv_module(f'detector.{name}.{i}', chn, w, 3))
            chn = w
    s['detector.conv_cls.weight'], s['detector.conv_cls.bias'] = (C, fc['cls_branch'][-1], 1, 1), (C,)
    s['detector.conv_centerness.weight'] = (1, fc['centerness_branch'][-1], 1, 1)
    s['detector.conv_centerness.bias'] = (1,)
    n_off = 2 if fc.get('offset_cls_agnostic', True) else 2 * C
    s['detector.conv_offset.weight'], s['detector.conv_offset.bias'] = (n_off, fc['offset_branch'][-1], 1, 1), (n_off,)
    s.update(_conv_module('detector.conv_emb', fc['emb_branch'][-1], E, 1))
    if version == 'v2' and fc.get('bbox_branch') is not None:
        s['detector.conv_bbox.weight'], s['detector.conv_bbox.bias'] = (4, fc['bbox_branch'][-1], 1, 1), (4,)
    # ---- DeformPnPHead: sampler, point transformer, GroupLinear(s)
    s['attention_sampler.sampling_offsets.weight'] = (Hh * P * 2, E)
    s['attention_sampler.sampling_offsets.bias'] = (Hh * P * 2,)
    s.update(_linear('attention_sampler.out_proj', E, E))
    for i in range(2):
        s[f'attention_sampler.layer_norms.{i}.weight'] = (E,)
        s[f'attention_sampler.layer_norms.{i}.bias'] = (E,)
    s.update(_linear('attention_sampler.ffn.layers.0.0', E, ffn_s))
    s.update(_linear('attention_sampler.ffn.layers.1', ffn_s, E))
    pt = 'pts_trans.0' if version == 'v1' else 'pts_trans'
    s['obj_query_scale.0.scale' if version == 'v1' else 'obj_query_scale.scale'] = ()
    s[f'{pt}.attentions.0.attn.in_proj_weight'] = (3 * d, d)
    s[f'{pt}.attentions.0.attn.in_proj_bias'] = (3 * d,)
    s.update(_linear(f'{pt}.attentions.0.attn.out_proj', d, d))
    s.update(_linear(f'{pt}.ffns.0.layers.0.0', d, ffn_p))
    s.update(_linear(f'{pt}.ffns.0.layers.1', ffn_p, d))
    for i in range(2):
        s[f'{pt}.norms.{i}.weight'], s[f'{pt}.norms.{i}.bias'] = (d,), (d,)
    s.update(_linear('x2d_pos_enc', 2, d))
    glin = ['corr_regs.0', 'corr_regs.1'] if version == 'v1' else (
        ['corr_reg'] + (['corr_reg_aux'] if with_proj or with_regr else []))
    for g in glin:
        s[f'{g}.weight'], s[f'{g}.bias'] = (Hh, 5, d), (Hh, 5)
    # ---- losses with state
    s['loss_pose.0.norm_factor' if version == 'v1' else 'loss_pose.norm_factor'] = ()
    if with_proj:
        s['loss_proj.mean_inv_std'] = ()
    if with_regr and version == 'v2':
        s['loss_regr.log_sigma'] = (1,)
        s['loss_regr.mean_inv_std'] = ()
    if with_depth:
        s['loss_depth.log_sigma'] = (1,)
        s['loss_depth.mean_inv_std'] = ()
    # ---- _init_convs / _init_out_layers
    chn = I
    for i, c in enumerate(lvl):
        s.update(_conv_module(f'convs.{i}', chn, c, 3, norm=False))
        chn = c
    s.update(_conv_module('conv_upsampled', lvl[-1] * n_dense, E, 1))
    s.update(OrderedDict([('k_proj.weight', (E, E + pe, 1, 1)), ('k_proj.bias', (E,)),
                          ('v_proj.weight', (E, E, 1, 1)), ('v_proj.bias', (E,))]))
    s['query_scale.scale'] = ()
    s.update(_linear('query_proj', E, E))
    for i in range(ob.get('num_fcs', 2)):
        s.update(_linear(f'pred_fc.{2 * i}', E, E))
    s.update(_linear('dim_branch', E, 3 if ob.get('dim_cls_agnostic', False) else 3 * C))
    s.update(_linear('score_branch', E, 1))
    s.update(_linear('scale_branch' if version == 'v1' else 'w2d_scale_branch', E, 2))
    if head.get('use_cls_emb', False):
        s['cls_emb'] = (C, E)
    if ob.get('pred_velo', True):
        s.update(_linear('velo_branch', E, 2))
    if ob.get('pred_attr', True):
        s.update(_linear('attr_branch', E, ob.get('num_attrs', 9)))
    if with_depth:
        dep = head['depth_branch']
        for i in range(dep.get('num_layers', 2)):
            s.update(_linear(f'depth_branch.{2 * i}', E, E))
        s.update(_linear(f"depth_branch.{2 * dep.get('num_layers', 2)}", E, 2 * dep.get('num_modes', 4)))
    return OrderedDict(('bbox_head.' + k, v) for k, v in s.items())
