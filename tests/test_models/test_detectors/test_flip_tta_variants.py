"""Flip TTA (docs/method.md §6.4) for every variant's inference settings: class-specific reference points and class
embeddings (v1b), the v1 dense-map sampler mode, the v2 pixel convention, and Monte Carlo scoring inside TTA. Each run
merges ``2n`` correspondences per candidate and returns finite boxes; each branch's x2d are the original-image
K-projections of its sampling locations (the flipped branch's with the flip undone), checked against the flip
formula (:func:`.test_flip_tta.assert_flip_corrected`; the dense-map mode interpolates the pooled coordinate map, exact
for the affine flip on points fully inside the image up to float32 rounding)."""
import os

import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import epropnp_det.datasets  # noqa: F401  (data preprocessor)
import epropnp_det.models  # noqa: F401
from epropnp_det.models.detectors import EProPnPFlipTTAModel

from .test_epropnp_det import ROOT, H, W, _sample
from .test_flip_tta import assert_flip_corrected, spy_sampler

CASES = {
    'v1b': ('configs/epropnp_det_r18_synthetic_v1b.py', {}, {}),
    'v1b_dense_map': ('configs/epropnp_det_r18_synthetic_v1b.py', dict(x2d_mode='dense_map'), {}),
    'v2_mc_scoring': ('configs/epropnp_det_r18_synthetic_v2.py', {}, dict(mc_scoring_ratio=0.5,
                                                                          mc_scoring_samples=32)),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_flip_tta_variant(case):
    path, sampler, test_cfg = CASES[case]
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, path))
    cfg.model.bbox_head.sampler.update(sampler)
    if sampler.get('x2d_mode') == 'dense_map':
        cfg.model.data_preprocessor.update(with_dense_x2d=True)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    head = model.bbox_head
    head.test_cfg.update(score_thr=0.0, max_per_img=8, **test_cfg)
    captured = {}
    orig_fn = head.decode_objects

    def spy(out, cand, meta, num_imgs):
        captured.update(out=out)
        return orig_fn(out, cand, meta, num_imgs)

    head.decode_objects = spy
    calls = spy_sampler(head)
    torch.manual_seed(3)
    img = torch.randint(0, 255, (3, H, W)).float()
    views = dict(inputs=[dict(img=[img]), dict(img=[img.flip(-1)])],
                 data_samples=[[_sample(np.zeros((0, 7)), [])], [_sample(np.zeros((0, 7)), [], flip=True)]])
    with torch.no_grad():
        res = EProPnPFlipTTAModel(module=model).test_step({k: [v[i] for i in range(2)] for k, v in views.items()})
    n = head.sampler.num_heads * head.sampler.num_points
    out = captured['out']
    assert out['x2d'].shape[1] == 2 * n and out['noc'].shape[1] == 2 * n
    assert_flip_corrected(head, calls, out['x2d'], W, atol=1e-3 if sampler.get('x2d_mode') != 'dense_map' else 1e-2)
    p = res[0].pred_instances_3d
    assert len(p.scores_3d) > 0 and torch.isfinite(p.bboxes_3d.tensor).all()
    assert ((p.score3d >= 0) & (p.score3d <= 1)).all()
