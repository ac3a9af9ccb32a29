"""The tiny generated root's val split with every ground-truth box kept (no visibility, truncation or size filter),
as the uncertainty tests turn it into predictions with known errors."""
from tests.test_datasets.tiny_nuscenes import build_dataset

GT_PIPELINE = [dict(type='EProPnPLoadImage'), dict(type='EProPnPLoadAnnotations'), dict(type='EProPnPPack3DDetInputs')]


def val_gt_dataset(root: str):
    return build_dataset(root, GT_PIPELINE, test_mode=False, ann_file='nuscenes_infos_val.pkl', filter_empty_gt=False,
                         min_visibility=0, trunc_ignore_thres=1.0, min_box_size=0.0)
