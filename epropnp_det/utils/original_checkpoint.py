"""Renaming of original EPro-PnP-Det checkpoints (v1 / v1b: ``tjiiv-cprg/EPro-PnP`` ``EPro-PnP-Det``; v2:
``tjiiv-cprg/EPro-PnP-v2`` ``EPro-PnP-Det_v2``) to this package's parameter names
(docs/method.md §10.6, Appendix F).

The original head is one ``DeformPnPHead`` module holding everything; ours splits it into ``fcos_head``,
``dense_branch``, ``sampler``, ``point_subnet``, ``object_branches``, ``roi_aux`` (auxiliary RoI branch with its
losses), ``depth_branch`` (with its loss) and ``loss_pose``. Backbone (mmdet ``ResNet`` + DCNv2) and neck (mmdet
``FPN``) keys are identical in mmdet 2.x and 3.x and pass unchanged. Tensors are never modified except for
reshapes of equal size listed in :data:`RESHAPES`.

``RULES[version]`` is an ordered list of ``(original regex, our replacement)`` applied to the key with the
``bbox_head.`` prefix removed; the first match wins. ``docs/checkpoint_mapping.md`` shows the same table (a test
checks both agree).
"""
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ['RULES', 'AUX_BRANCH', 'convert_key', 'convert_state_dict', 'convert_checkpoint']

#: our auxiliary RoI branch module (holds the original ``corr_regs.0`` / ``corr_reg_aux`` and ``loss_proj/regr``)
AUX_BRANCH = 'roi_aux'

_COMMON: List[Tuple[str, str]] = [
    # FCOS query emitter (original ``detector`` = FCOSEmbHead)
    (r'^detector\.(cls_convs|reg_convs)\.', r'fcos_head.\1.'),
    (r'^detector\.conv_cls_prev\.', 'fcos_head.cls_branch.'),
    (r'^detector\.conv_centerness_prev\.', 'fcos_head.centerness_branch.'),
    (r'^detector\.conv_emb_prev\.', 'fcos_head.emb_branch.'),
    (r'^detector\.conv_offset_prev\.', 'fcos_head.offset_branch.'),
    (r'^detector\.conv_bbox_prev\.', 'fcos_head.bbox_branch.'),
    (r'^detector\.conv_offset\.', 'fcos_head.conv_ref_offset.'),
    (r'^detector\.(conv_cls|conv_centerness|conv_emb|conv_bbox)\.', r'fcos_head.\1.'),
    # dense key / value branch
    (r'^convs\.', 'dense_branch.lvl_convs.'),
    (r'^conv_upsampled\.', 'dense_branch.fuse.'),
    (r'^(k_proj|v_proj)\.', r'dense_branch.\1.'),
    # query and deformable attention sampler
    (r'^query_scale\.scale$', 'sampler.emb_scale.scale'),
    (r'^query_proj\.', 'sampler.query_proj.'),
    (r'^attention_sampler\.(sampling_offsets|out_proj|ffn)\.', r'sampler.\1.'),
    (r'^attention_sampler\.layer_norms\.0\.', 'sampler.norm_out.'),
    (r'^attention_sampler\.layer_norms\.1\.', 'sampler.norm_ffn.'),
    # point subnet
    (r'^x2d_pos_enc\.', 'point_subnet.pos_proj.'),
    # object-level branches
    (r'^(pred_fc|dim_branch|score_branch|velo_branch|attr_branch)\.', r'object_branches.\1.'),
    (r'^cls_emb$', 'cls_emb'),
]

RULES: Dict[str, List[Tuple[str, str]]] = {
    'v1': _COMMON + [
        (r'^obj_query_scale\.0\.scale$', 'point_subnet.query_scale.scale'),
        (r'^pts_trans\.0\.', 'point_subnet.layer.'),
        (r'^corr_regs\.1\.', 'point_subnet.corr_reg.'),
        (r'^corr_regs\.0\.', AUX_BRANCH + '.corr_reg_aux.'),
        (r'^scale_branch\.', 'object_branches.scale_branch.'),
        (r'^loss_pose\.0\.norm_factor$', 'pose_stage.loss_pose.norm_factor'),
        (r'^loss_proj\.mean_inv_std$', AUX_BRANCH + '.loss_proj.mean_inv_std'),
    ],
    'v2': _COMMON + [
        (r'^obj_query_scale\.scale$', 'point_subnet.query_scale.scale'),
        (r'^pts_trans\.', 'point_subnet.layer.'),
        (r'^corr_reg\.', 'point_subnet.corr_reg.'),
        (r'^corr_reg_aux\.', AUX_BRANCH + '.corr_reg_aux.'),
        (r'^w2d_scale_branch\.', 'object_branches.scale_branch.'),
        (r'^loss_pose\.norm_factor$', 'pose_stage.loss_pose.norm_factor'),
        (r'^(loss_proj|loss_regr)\.(mean_inv_std|log_sigma)$', AUX_BRANCH + r'.\1.\2'),
        (r'^depth_branch\.(\d+)\.', r'depth_branch.mlp.\1.'),
        (r'^loss_depth\.(mean_inv_std|log_sigma)$', r'depth_branch.loss_depth.\1'),
    ],
}

#: our key suffix → target shape for equal-size reshapes: the original learnable log σ is a (1,) tensor, ours a scalar
RESHAPES: Dict[str, Tuple[int, ...]] = {'.log_sigma': ()}

_PASS = ('backbone.', 'neck.')


def convert_key(key: str, version: str = 'v2') -> Optional[str]:
    """Our name of one original state-dict key, or None if no rule matches. Raises for an unknown version."""
    if version not in RULES:
        raise ValueError(f"version must be one of {sorted(RULES)}, got {version!r}")
    if key.startswith(_PASS):
        return key
    if not key.startswith('bbox_head.'):
        return None
    sub = key[len('bbox_head.'):]
    for pattern, repl in RULES[version]:
        new, n = re.subn(pattern, repl, sub, count=1)
        if n:
            return 'bbox_head.' + new
    return None


def convert_state_dict(state_dict: Mapping, version: str = 'v2',
                       strict: bool = True) -> Tuple['OrderedDict', List[str]]:
    """Rename every key; returns ``(new_state_dict, unmapped_original_keys)``.

    With ``strict`` an unmapped key raises ``KeyError`` (listing all of them). A leading ``module.`` (DDP) is
    dropped. Two original keys mapping to the same name raise ``ValueError``.
    """
    out, unmapped = OrderedDict(), []
    for key, value in state_dict.items():
        k = key[len('module.'):] if key.startswith('module.') else key
        new = convert_key(k, version)
        if new is None:
            unmapped.append(key)
            continue
        if new in out:
            raise ValueError(f'two original keys map to {new!r}')
        for suffix, shape in RESHAPES.items():
            if new.endswith(suffix) and hasattr(value, 'reshape'):
                value = value.reshape(shape)
        out[new] = value
    if strict and unmapped:
        raise KeyError(f'{len(unmapped)} original keys have no mapping ({version}): {unmapped[:20]}')
    return out, unmapped


def convert_checkpoint(ckpt: Mapping, version: str = 'v2', strict: bool = True) -> dict:
    """Checkpoint dict (``{'state_dict': ..., 'meta': ...}`` or a bare state dict) → converted checkpoint with
    ``meta['converted_from'] = 'EPro-PnP-Det <version>'`` (optimizer state dropped: parameter groups differ)."""
    sd = ckpt['state_dict'] if 'state_dict' in ckpt else ckpt
    new_sd, unmapped = convert_state_dict(sd, version, strict)
    meta = dict(ckpt.get('meta', {}) if 'state_dict' in ckpt else {})
    meta['converted_from'] = f'EPro-PnP-Det {version}'
    if unmapped:
        meta['unmapped_original_keys'] = unmapped
    return dict(state_dict=new_sd, meta=meta)
