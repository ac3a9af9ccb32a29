import numpy as np
import torch

from tests.test_models.test_detectors.test_epropnp_det import H, W, _sample, model  # noqa: F401  (fixture)


def _views(model):  # noqa: F811
    torch.manual_seed(3)
    img = torch.randint(0, 255, (3, H, W)).float()
    orig = [_sample(np.zeros((0, 7)), [])]
    flip = [_sample(np.zeros((0, 7)), [], flip=True)]
    return dict(inputs=[dict(img=[img]), dict(img=[img.flip(-1)])], data_samples=[orig, flip])


def spy_sampler(head):
    """Record the sampler outputs of every call (``head.sampler.calls``); undo with ``del head.sampler.forward``."""
    calls = []
    orig = type(head.sampler).forward.__get__(head.sampler)

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        calls.append(out)
        return out
    head.sampler.forward = forward
    return calls


def assert_flip_corrected(head, calls, merged_x2d, width, atol=1e-3):
    """The merged correspondences of flip TTA hold, for each branch, the original-image K-projections of the
    sampling locations: ``u = loc_x − c`` (un-flipped branch) and ``u = W − loc_x − c`` (flipped branch: the flip
    ``u ↦ W − u`` undone), ``v = loc_y − c`` in both, with ``c`` the convention's offset (0.5 for v1, 0 for v2), on
    every point fully inside the image (mask 1). Computed here from the flip formula, independently of the
    sampler's homography: a missing flip correction moves the flipped half by ``W − 2·loc_x`` (up to a whole image
    width)."""
    from epropnp_det.ops.pixels import PIXEL_CONVENTIONS
    c = PIXEL_CONVENTIONS[head.pixel_convention]
    (a, b) = calls[-2:]
    N, Hh, P, _ = a.loc.shape
    n = Hh * P
    for half, samp, flipped in ((merged_x2d[:, :n], a, False), (merged_x2d[:, n:], b, True)):
        loc = samp.loc.reshape(N, n, 2).double()
        inside = samp.mask.reshape(N, n) > 1 - 1e-6
        assert inside.float().mean() > 0.5  # most points are checked
        u = (width - loc[..., 0] if flipped else loc[..., 0]) - c
        v = loc[..., 1] - c
        want = torch.stack((u, v), -1)
        torch.testing.assert_close(half.double()[inside], want[inside], rtol=0, atol=atol)


def test_flip_tta_merges_correspondences(model):  # noqa: F811
    from epropnp_det.models.detectors import EProPnPFlipTTAModel
    model.eval()
    head = model.bbox_head
    head.test_cfg['score_thr'] = 0.0
    tta = EProPnPFlipTTAModel(module=model)
    captured = {}
    orig_fn = head.decode_objects

    def spy(out, cand, meta, num_imgs):
        captured.update(out=out, cand=cand)
        return orig_fn(out, cand, meta, num_imgs)

    head.decode_objects = spy
    calls = spy_sampler(head)
    try:
        views = _views(model)
        data = {k: [v[i] for i in range(2)] for k, v in views.items()}
        with torch.no_grad():
            res = tta.test_step(data)
    finally:
        del head.decode_objects, head.sampler.forward
        head.test_cfg['score_thr'] = 0.04
    n = head.sampler.num_heads * head.sampler.num_points
    out = captured['out']
    assert out['noc'].shape[1] == 2 * n and out['x2d'].shape[1] == 2 * n and out['w2d'].shape[1] == 2 * n
    torch.testing.assert_close(out['scale'], torch.ones_like(out['scale']))
    # the flipped branch's x2d are original-image coordinates (the flip undone), to 1e-3 px
    assert_flip_corrected(head, calls, out['x2d'], W)
    assert len(res) == 1 and not res[0].metainfo['flip']
    p = res[0].pred_instances_3d
    assert p.bboxes_3d.tensor.shape[1] == 9 and torch.isfinite(p.bboxes_3d.tensor).all()
    assert len(p.scores_3d) > 0
