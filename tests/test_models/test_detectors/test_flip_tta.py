import numpy as np
import torch

from tests.test_models.test_detectors.test_epropnp_det import H, W, _sample, model  # noqa: F401  (fixture)


def _views(model):  # noqa: F811
    torch.manual_seed(3)
    img = torch.randint(0, 255, (3, H, W)).float()
    orig = [_sample(np.zeros((0, 7)), [])]
    flip = [_sample(np.zeros((0, 7)), [], flip=True)]
    return dict(inputs=[dict(img=[img]), dict(img=[img.flip(-1)])], data_samples=[orig, flip])


def test_flip_tta_merges_correspondences(model):  # noqa: F811
    from epropnp_det.models.detectors import EProPnPFlipTTAModel
    model.eval()
    head = model.bbox_head
    head.test_cfg['score_thr'] = 0.0
    tta = EProPnPFlipTTAModel(module=model)
    captured = {}
    orig_fn = head.predict_by_feat

    def spy(out, cand, meta, num_imgs):
        captured.update(out=out, cand=cand)
        return orig_fn(out, cand, meta, num_imgs)

    head.predict_by_feat = spy
    try:
        views = _views(model)
        data = {k: [v[i] for i in range(2)] for k, v in views.items()}
        with torch.no_grad():
            res = tta.test_step(data)
    finally:
        head.predict_by_feat = orig_fn
        head.test_cfg['score_thr'] = 0.04
    n = head.sampler.num_heads * head.sampler.num_points
    out = captured['out']
    assert out['noc'].shape[1] == 2 * n and out['x2d'].shape[1] == 2 * n and out['w2d'].shape[1] == 2 * n
    torch.testing.assert_close(out['scale'], torch.ones_like(out['scale']))
    # the flipped branch's x2d are original-image coordinates: both halves cover the same image region
    assert (out['x2d'][:, n:, 0] > -W).all() and (out['x2d'][:, n:, 0] < 2 * W).all()
    assert len(res) == 1 and not res[0].metainfo['flip']
    p = res[0].pred_instances_3d
    assert p.bboxes_3d.tensor.shape[1] == 9 and torch.isfinite(p.bboxes_3d.tensor).all()
    assert len(p.scores_3d) > 0
