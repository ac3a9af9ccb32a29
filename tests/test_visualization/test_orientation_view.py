"""docs/method.md §10.17 visualisation: orientation histograms of the Monte-Carlo pose samples in the BEV view,
sub-pixel BEV drawing and the dense depth view; plus the head's test-time pose samples they are drawn from
(``test_cfg.mc_samples``, ``mc_seed``)."""
import math

import numpy as np
import pytest
import torch

from epropnp_det.ops.pnp import CameraParams, EProPnP4DoF
from epropnp_det.ops.pnp.testing import make_problems
from epropnp_det.visualization import BEVCanvas, depth_to_image, draw_bev, rose_area, rose_polygon, yaw_histogram


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _peak_deg(yaw, w, true_yaw, bins=72):
    """Angle (degrees) between the centre of the heaviest absolute-yaw bin and ``true_yaw``."""
    hist = yaw_histogram(yaw[None], w[None], None, bins)[0]
    centre = np.argmax(hist) * 2 * np.pi / bins
    return abs(math.degrees(_wrap(centre - true_yaw)))


# ------------------------------------------------------------------------------------------- histograms
def test_yaw_histogram_matches_brute_force():
    rng = np.random.default_rng(0)
    yaw = rng.uniform(-10, 10, (3, 200))              # unwrapped, as the solver returns them
    w = rng.uniform(0, 1, (3, 200))
    ref = rng.uniform(-4, 4, 3)
    B = 24
    hist = yaw_histogram(yaw, w, ref, B)
    expect = np.zeros((3, B))
    for m in range(3):
        for k in range(200):  # nearest bin centre ref + j·2π/B on the circle
            d = np.abs(_wrap(yaw[m, k] - ref[m] - np.arange(B) * 2 * np.pi / B))
            expect[m, np.argmin(d)] += w[m, k]
    expect /= expect.sum(1, keepdims=True)
    np.testing.assert_allclose(hist, expect, atol=1e-12)
    np.testing.assert_allclose(hist.sum(1), 1.0)
    # torch inputs, uniform weights, zero total weight
    torch.testing.assert_close(torch.from_numpy(yaw_histogram(torch.from_numpy(yaw), None, torch.from_numpy(ref))),
                               torch.from_numpy(yaw_histogram(yaw, np.ones_like(yaw), ref)))
    assert (yaw_histogram(yaw, np.zeros_like(w), ref) == 0).all()


def test_mc_samples_of_a_well_constrained_problem_peak_at_the_true_yaw():
    """AMIS samples of the ops (512, torch.Generator) on 64 exact-model points with 1 px noise and unit weights."""
    gen = torch.Generator().manual_seed(0)
    N = 6
    prob = make_problems(N=N, n=64, noise_px=1.0, generator=gen, dtype=torch.float64)
    camera = CameraParams.from_image_shape(prob['cam_mats'], prob['img_hw'])
    w2d = torch.ones(N, 64, 2, dtype=torch.float64)   # 1/σ for σ = 1 px: the posterior is the true likelihood
    pnp = EProPnP4DoF(mc_samples=512, num_iter=4)
    mc = pnp.monte_carlo_forward(prob['x3d'], prob['x2d'], w2d, camera, generator=gen)
    assert mc.pose_samples.shape == (512, N, 4) and mc.weights.shape == (512, N)
    torch.testing.assert_close(mc.weights.sum(0), torch.ones(N, dtype=torch.float64))
    gt = prob['pose_gt'].numpy()
    smp, w = mc.pose_samples.numpy(), mc.weights.numpy()
    for i in range(N):
        assert _peak_deg(smp[:, i, 3], w[:, i], gt[i, 3]) <= 5.0  # 5° bins: the true yaw's bin or its neighbour
        # relative 24-bin histogram (the drawn one): peaked in bin 0 around the solution
        rel = yaw_histogram(smp[None, :, i, 3], w[None, :, i], mc.pose_opt[i:i + 1, 3].numpy())[0]
        assert np.argmax(rel) == 0 and rel[0] > 0.9
        # same frame as the target: weighted mean position within 0.3 m (z up to 60 m)
        mean = (w[:, i, None] * smp[:, i, :3]).sum(0)
        assert np.linalg.norm(mean - gt[i, :3]) < 0.02 * gt[i, 2] + 0.1


# ------------------------------------------------------------------------------------------- head outputs
def _head_and_object(**test_cfg):
    from epropnp_det.models.dense_heads.fcos_emb_head import FCOSCandidates
    from tests.test_models.test_dense_heads.test_deform_pnp_head import K, sample, tiny_head
    head = tiny_head(test_cfg=dict(**test_cfg)).eval()
    box = torch.tensor([[4., 1.6, 1.9, 1.0, 0.6, 12., 0.4]], dtype=torch.float64)
    g = torch.linspace(-0.5, 0.5, 4, dtype=torch.float64)
    noc = torch.stack(torch.meshgrid(g, g, g, indexing='ij'), -1).reshape(1, -1, 3)
    x3d = noc * box[:, None, :3]
    c, s = torch.cos(box[0, 6]), torch.sin(box[0, 6])
    R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    uvw = (x3d[0] @ R.T + box[0, 3:6]) @ torch.from_numpy(K).T
    x2d = (uvw[:, :2] / uvw[:, 2:])[None]
    out = dict(noc=noc.float(), x2d=x2d.float(), w2d=torch.full((1, 64, 2), 1 / 64.), scale=torch.ones(1, 2) * 50,
               dims=box[:, :3].float(), score_logit=torch.zeros(1), velo=None, attr_logits=None)
    cand = FCOSCandidates(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0.8]),
                          torch.zeros(1, 32), torch.zeros(1, 2), torch.tensor([8.]))
    meta = head.cameras([sample(np.zeros((0, 7)), []).metainfo], torch.zeros(1))
    return head, out, cand, meta, box[0]


def test_head_pose_samples_shapes_frame_and_seed():
    head, out, cand, meta, box = _head_and_object()
    res = head.decode_objects(out, cand, meta, 1)[0]
    assert 'pose_samples' not in res and 'pose_sample_weights' not in res  # default inference: no sampling
    head, out, cand, meta, box = _head_and_object(mc_samples=64, mc_seed=0)
    with torch.no_grad():
        res = head.decode_objects(out, cand, meta, 1)[0]
        res_same = head.decode_objects(out, cand, meta, 1)[0]
        head.test_cfg['mc_seed'] = 1
        res_other = head.decode_objects(out, cand, meta, 1)[0]
    assert res.pose_samples.shape == (1, 64, 4) and res.pose_sample_weights.shape == (1, 64)
    assert res.pose_cov.shape == (1, 4, 4)
    torch.testing.assert_close(res.pose_sample_weights.sum(-1), torch.ones(1))
    torch.testing.assert_close(res.pose_samples, res_same.pose_samples, rtol=0, atol=0)  # seeded: reproducible
    assert not torch.equal(res.pose_samples, res_other.pose_samples)
    # samples are poses of the box centre in the camera frame (not the bottom centre of bboxes_3d)
    w = res.pose_sample_weights[0].double()
    mean = (w[:, None] * res.pose_samples[0, :, :3].double()).sum(0)
    torch.testing.assert_close(mean, box[3:6], atol=0.05, rtol=0)
    assert (res.bboxes_3d.tensor[0, 1].double() - mean[1]).abs() > 0.7  # bottom centre is h/2 = 0.8 m lower
    smp, wn = res.pose_samples[0].numpy(), res.pose_sample_weights[0].numpy()
    assert _peak_deg(smp[:, 3], wn, float(box[6])) <= 5.0


# ------------------------------------------------------------------------------------------- drawing
def _diff_mask(a, b):
    return (a != b).any(-1)


def test_rose_changes_pixels_only_around_the_boxes_with_the_right_area():
    canvas = BEVCanvas(size=(500, 500), scale=20.0)
    boxes = np.array([[1.0, 1.5, 0.5, -5.0, 1.0, 12.0, 0.3], [1.0, 1.5, 0.5, 6.0, 1.0, 18.0, -2.0]])
    rng = np.random.default_rng(0)
    yaws = rng.uniform(-np.pi, np.pi, (2, 4000))                # ~uniform density: the rose is a circle
    base = draw_bev(pred_boxes=boxes, canvas=canvas)
    radius = 2.0
    img = draw_bev(pred_boxes=boxes, canvas=canvas, pred_pose_samples=yaws, rose_radius=radius)
    diff = _diff_mask(base, img)
    ys, xs = np.nonzero(diff)
    centres = canvas.to_px(boxes[:, [3, 5]])
    dist = np.sqrt((xs[:, None] - centres[None, :, 0]) ** 2 + (ys[:, None] - centres[None, :, 1]) ** 2).min(1)
    hist = yaw_histogram(yaws, None, boxes[:, 6])
    r_max = np.sqrt(hist.max() * 24) * radius * canvas.scale
    assert dist.max() <= r_max + 2.0                            # nothing changes away from the roses
    area = rose_area(hist[0], radius) * canvas.scale ** 2       # = π r² per rose (area ∝ total probability)
    np.testing.assert_allclose(area, np.pi * (radius * canvas.scale) ** 2)
    perimeter = 2 * np.pi * radius * canvas.scale
    count = diff.sum()
    assert 2 * (area - perimeter) <= count <= 2 * (area + 2 * perimeter), (count, area)


def test_peaked_rose_is_a_single_sector_in_the_sampled_direction():
    canvas = BEVCanvas(size=(400, 400), scale=20.0)
    yaw_pred = 0.5
    boxes = np.array([[0.6, 1.5, 0.3, 0.0, 1.0, 10.0, yaw_pred]])
    offset = 2 * (2 * np.pi / 24)                                # all samples two bins (30°) counter-clockwise
    samples = np.zeros((1, 50, 4))
    samples[0, :, 3] = yaw_pred + offset + np.linspace(-0.05, 0.05, 50) + 4 * np.pi  # unwrapped on purpose
    w = np.full((1, 50), 1 / 50)
    radius = 0.5
    base = draw_bev(pred_boxes=boxes, canvas=canvas)
    img = draw_bev(pred_boxes=boxes, canvas=canvas, pred_pose_samples=samples, pred_pose_weights=w,
                   rose_radius=radius)
    ys, xs = np.nonzero(_diff_mask(base, img))
    c = canvas.to_px(boxes[0, [3, 5]])
    dx, dz = xs - c[0], -(ys - c[1])                              # canvas up = +z
    r = np.hypot(dx, dz)
    far = r > 4
    # heading (x, z) = (cos θ, −sin θ) → θ = atan2(−z, x)
    theta = np.arctan2(-dz[far], dx[far])
    dev = np.degrees(np.abs(_wrap(theta - (yaw_pred + offset))))
    # within the sector (±7.5° around the sampled yaw) up to the anti-aliased outline: ≤ 2 px outside its edges
    outside_px = r[far] * np.sin(np.radians(np.clip(dev - 7.5, 0, 90)))
    assert outside_px.max() <= 2.0
    assert abs(np.degrees(np.mean(_wrap(theta - (yaw_pred + offset))))) < 1.0  # symmetric about the bin centre
    r_peak = math.sqrt(24) * radius * canvas.scale                 # all mass in one bin
    assert abs(r.max() - r_peak) <= 2.0
    assert far.sum() > 0.5 * (r_peak ** 2 * (2 * np.pi / 24) / 2)  # the sector is filled (area ½ r² Δθ)


def test_rose_polygon_geometry():
    hist = np.zeros(24)
    hist[0] = 1.0
    poly = rose_polygon(hist, (1.0, 10.0), yaw_ref=0.0, radius=0.5, arc_points=5)
    assert poly.shape == (24 * 5, 2)
    r = np.linalg.norm(poly - [1.0, 10.0], axis=1)
    np.testing.assert_allclose(r[:5], math.sqrt(24) * 0.5)
    np.testing.assert_allclose(r[5:], 0.0, atol=1e-12)
    np.testing.assert_allclose(poly[2], [1.0 + math.sqrt(24) * 0.5, 10.0])  # yaw 0 → heading +x


def test_bev_lines_are_sub_pixel():
    """Moving a box by a quarter pixel moves its drawn edge by a quarter pixel (integer drawing would not)."""
    canvas = BEVCanvas(size=(200, 200), scale=10.0)

    def edge_centroid(dx_px):
        box = np.array([[4.0, 1.5, 2.0, dx_px / canvas.scale, 1.0, 15.0, 0.0]])
        img = draw_bev(pred_boxes=box, canvas=canvas, max_range=5.0)
        c = canvas.to_px(box[0, [3, 5]])
        left = c[0] - 2.0 * canvas.scale                          # left edge (x − l/2) column
        rows = slice(int(c[1]) + 3, int(c[1]) + 8)                 # below the heading line, inside the side edges
        cols = np.arange(int(left) - 4, int(left) + 5)
        dark = 255.0 - img[rows, cols].astype(np.float64).mean(-1)
        return (dark * cols[None]).sum() / dark.sum(), left

    base, left0 = edge_centroid(0.0)
    for shift in (0.25, 0.5, 0.75):
        got, left = edge_centroid(shift)
        assert abs((got - base) - shift) < 0.1, (shift, got - base)
    assert abs(base - left0) < 0.2                                 # the line is centred on the exact coordinate


def test_depth_view_values():
    depth = np.array([[1.0, 2.0, 4.0], [10.0, np.nan, 510.0]])
    img = depth_to_image(depth)
    assert img.shape == (2, 3, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], [[255, 255, 128], [51, 0, 1]])
    assert (img[..., 0] == img[..., 2]).all()
    big = depth_to_image(torch.tensor(depth), size=(6, 4))        # nearest upsampling ×2
    assert big.shape == (4, 6, 3)
    np.testing.assert_array_equal(big[::2, ::2], img)
    with pytest.raises(ValueError):
        depth_to_image(np.zeros(3))


def test_pose_density_shading_values():
    """'mc' position density: two samples (weights 0.25 / 0.75, score 0.5, gain 40) shade their 3×3 neighbourhoods
    by exactly (0.9, 0.5, 0.1)^(w·score·40); nothing else changes."""
    canvas = BEVCanvas(size=(300, 300), scale=10.0)
    boxes = np.array([[0.5, 1.5, 0.5, 0.0, 1.0, 20.0, 0.0]])
    samples = np.array([[[-6.0, 1.0, 15.0, 0.0], [6.0, 1.0, 25.0, 0.0]]])
    w = np.array([[0.25, 0.75]])
    base = draw_bev(pred_boxes=boxes, canvas=canvas, max_range=5.0)
    img = draw_bev(pred_boxes=boxes, canvas=canvas, max_range=5.0, pred_pose_samples=samples, pred_pose_weights=w,
                   rose_alpha=0.0, pose_density=True, pred_scores=[0.5])
    img_rose_only = draw_bev(pred_boxes=boxes, canvas=canvas, max_range=5.0, pred_pose_samples=samples,
                             pred_pose_weights=w, rose_alpha=0.0)
    changed = _diff_mask(img_rose_only, img)
    assert changed.sum() == 18                                   # two 3×3 blocks
    for (x, _, z, _), wk in zip(samples[0], w[0]):
        u, v = np.round(canvas.to_px(np.array([x, z]))).astype(int)
        block = img[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(float)
        expect = np.round(255 * np.array([0.9, 0.5, 0.1]) ** (wk * 0.5 * 40))
        np.testing.assert_array_equal(block, np.broadcast_to(expect, block.shape))
        assert (base[v - 1:v + 2, u - 1:u + 2] == 255).all()
