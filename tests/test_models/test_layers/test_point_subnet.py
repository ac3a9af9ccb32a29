import torch

from epropnp_det.models.layers import EProPnPPointSubnet, GroupLinear, fibonacci_sphere


def test_group_linear_equals_per_group_matmul():
    torch.manual_seed(0)
    gl = GroupLinear(12, 6, groups=3)
    with torch.no_grad():
        gl.bias.normal_()
    x = torch.randn(4, 5, 12)
    out = gl(x)
    assert out.shape == (4, 5, 6)
    for g in range(3):
        ref = x[..., g * 4:(g + 1) * 4] @ gl.weight[g].T + gl.bias[g]
        torch.testing.assert_close(out[..., g * 2:(g + 1) * 2], ref)


def test_group_linear_init_scale():
    gl = GroupLinear(32 * 8, 5 * 8, groups=8, weight_scale=0.01)
    bound = (3 / 32) ** 0.5 * 0.01
    assert gl.weight.abs().max() <= bound and gl.weight.abs().max() > 0.8 * bound


def test_fibonacci_sphere():
    p = fibonacci_sphere(8)
    torch.testing.assert_close(p.norm(dim=-1), torch.ones(8))
    # k = 0.5: phi = arccos(1 - 1/8), z = 7/8
    assert abs(p[0, 2].item() - 7 / 8) < 1e-6
    assert (torch.cdist(p, p) + torch.eye(8) * 10).min() > 0.5  # spread out


def _inputs(N=2, Hh=4, d=16, P=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(N, Hh, d, P, generator=gen)
    x2d = torch.rand(N, Hh, 2, P, generator=gen) * 200 + 300
    query = torch.randn(N, Hh, 1, d, generator=gen)
    mask = torch.ones(N, Hh, 1, P)
    return values, x2d, query, mask


def test_output_shapes_softmax_and_init():
    torch.manual_seed(0)
    net = EProPnPPointSubnet(num_heads=4, head_dims=16, feedforward_channels=32).eval()
    values, x2d, query, mask = _inputs()
    mask[0, 1, 0, :3] = 0
    out = net(values, x2d, query, mask, torch.tensor([False, True]))
    assert out.noc.shape == (2, 24, 3) and out.w2d.shape == (2, 24, 2) and out.x2d.shape == (2, 24, 2)
    # softmax over all points per channel sums to one (before masking)
    torch.testing.assert_close(out.w2d_logits.softmax(1).sum(1), torch.ones(2, 2))
    assert (out.w2d[0, 6:9] == 0).all()  # head 1, points 0..2 masked (head-major flattening)
    # x2d flattened head-major: index = head * P + point
    torch.testing.assert_close(out.x2d[1, 2 * 6 + 4], x2d[1, 2, :, 4])
    # at init the NOC of each head are close to its Fibonacci point of radius 0.5 (weights x0.01)
    fib = fibonacci_sphere(4) * 0.5
    noc0 = out.noc[0].reshape(4, 6, 3)
    torch.testing.assert_close(noc0, fib[:, None].expand(4, 6, 3), atol=0.05, rtol=0)


def test_flip_correction_maps_mirrored_object_back():
    """A flipped image of an object looks like an unflipped image of the mirrored object.

    Mirrored scene (camera with principal point at the image centre, continuous convention W - u):
    object points (x, y, z) become (x, y, -z), yaw theta becomes pi - theta, translation (tx, ty, tz) becomes
    (-tx, ty, tz). The network sees identical features at mirrored locations. Its x2d are original-image
    coordinates, W - u_aug; after flip correction its NOC must describe the ORIGINAL object: projecting
    NOC * dims with the original pose reproduces the original-image x2d.
    """
    torch.manual_seed(0)
    net = EProPnPPointSubnet(num_heads=4, head_dims=16, feedforward_channels=32).eval()
    values, x2d_aug, query, mask = _inputs(N=1)
    W = 1600.
    # the same augmented-image observation, once as an unflipped image, once as a flipped one
    out_plain = net(values, x2d_aug, query, mask, torch.tensor([False]))
    x2d_orig = torch.stack((W - x2d_aug[:, :, 0], x2d_aug[:, :, 1]), 2)  # flipped image: u_orig = W - u_aug
    out_flip = net(values, x2d_orig, query, mask, torch.tensor([True]))
    # identical raw outputs: weights equal, NOC equal up to the z sign, x2d mirrored
    torch.testing.assert_close(out_flip.w2d, out_plain.w2d, atol=1e-5, rtol=0)
    torch.testing.assert_close(out_flip.noc[..., :2], out_plain.noc[..., :2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_flip.noc[..., 2], -out_plain.noc[..., 2], atol=1e-5, rtol=0)
    torch.testing.assert_close(out_flip.x2d[..., 0], W - out_plain.x2d[..., 0])

    # geometry: if the raw prediction is consistent with the mirrored object (pose P'), the corrected one is
    # consistent with the original object (pose P) in original-image coordinates
    def project(pts, t, yaw, K):
        c, s = torch.cos(yaw), torch.sin(yaw)
        R = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        cam = pts @ R.T + t
        uv = cam @ K.T
        return uv[..., :2] / uv[..., 2:]

    K = torch.tensor([[1000., 0, W / 2], [0, 1000., 450.], [0, 0, 1]])
    dims = torch.tensor([4., 1.5, 2.])
    t, yaw = torch.tensor([3., 1., 20.]), torch.tensor(0.4)
    t_m, yaw_m = torch.tensor([-3., 1., 20.]), torch.pi - yaw
    pts_mirror = out_plain.noc[0] * dims  # what the network predicts for the mirrored object
    u_aug = project(pts_mirror, t_m, yaw_m, K)  # where those points appear in the (flipped) input image
    u_orig = torch.stack((W - u_aug[:, 0], u_aug[:, 1]), -1)  # original-image coordinates
    torch.testing.assert_close(project(out_flip.noc[0] * dims, t, yaw, K), u_orig, atol=1e-3, rtol=0)


def test_zero_objects_keep_graph():
    net = EProPnPPointSubnet(num_heads=2, head_dims=8, feedforward_channels=16).train()
    out = net(torch.zeros(0, 2, 8, 3), torch.zeros(0, 2, 2, 3), torch.zeros(0, 2, 1, 8), torch.zeros(0, 2, 1, 3),
              torch.zeros(0, dtype=torch.bool))
    assert out.noc.shape == (0, 6, 3)
    (out.noc.sum() + out.w2d.sum()).backward()
    assert all(p.grad is not None for p in net.layer.parameters())
