"""Rotation helpers: conventions (docs/method.md §0.1), quaternion tangent update (docs/method.md §2.2)."""
import math

import torch

from epropnp_det.ops.pnp.rotation import (
    quaternion_retract,
    quaternion_tangent_matrix,
    quaternion_to_rot_mat,
    random_quaternion,
    rot_mat_to_yaw,
    skew,
    wrap_angle,
    yaw_to_rot_mat,
)

D64 = torch.float64


def test_yaw_convention_and_round_trip():
    yaw = torch.linspace(-3, 3, 13, dtype=D64)
    R = yaw_to_rot_mat(yaw)
    eye = torch.eye(3, dtype=D64)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones_like(yaw))
    # heading (local +x) in the camera frame is (cos, 0, -sin); yaw = -pi/2 faces +z
    heading = R @ torch.tensor([1., 0, 0], dtype=D64)
    assert torch.allclose(heading, torch.stack([yaw.cos(), 0 * yaw, -yaw.sin()], -1), atol=1e-12)
    assert torch.allclose(yaw_to_rot_mat(torch.tensor(-math.pi / 2, dtype=D64)) @ torch.tensor([1., 0, 0], dtype=D64),
                          torch.tensor([0., 0, 1], dtype=D64), atol=1e-12)
    assert torch.allclose(rot_mat_to_yaw(R), yaw, atol=1e-12)
    # equals the quaternion rotation about +y
    q = torch.stack([(yaw / 2).cos(), 0 * yaw, (yaw / 2).sin(), 0 * yaw], -1)
    assert torch.allclose(quaternion_to_rot_mat(q), R, atol=1e-12)


def test_quaternion_matrix_and_skew():
    g = torch.Generator().manual_seed(0)
    q = random_quaternion((50,), dtype=D64, generator=g)
    R = quaternion_to_rot_mat(q)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=D64).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(50, dtype=D64))
    assert torch.allclose(quaternion_to_rot_mat(-q), R)  # double cover
    a, b = torch.randn(50, 3, dtype=D64, generator=g), torch.randn(50, 3, dtype=D64, generator=g)
    assert torch.allclose((skew(a) @ b[..., None])[..., 0], torch.linalg.cross(a, b), atol=1e-12)


def test_tangent_update_is_left_rotation():
    """q <- normalize(q + T(q) δ) rotates by -2|δ| about δ in the camera frame: R' ≈ (I - 2[δ]x) R."""
    g = torch.Generator().manual_seed(1)
    q = random_quaternion((20,), dtype=D64, generator=g)
    d = torch.randn(20, 3, dtype=D64, generator=g)
    h = 1e-6
    R = quaternion_to_rot_mat(q)
    dR = (quaternion_to_rot_mat(quaternion_retract(q, h * d)) - quaternion_to_rot_mat(quaternion_retract(q, -h * d)))
    assert torch.allclose(dR / (2 * h), -2 * skew(d) @ R, atol=1e-8)
    T = quaternion_tangent_matrix(q)
    assert torch.allclose((q.unsqueeze(-2) @ T).squeeze(-2), torch.zeros(20, 3, dtype=D64), atol=1e-12)  # ⊥ q
    assert torch.allclose(quaternion_retract(q, d).norm(dim=-1), torch.ones(20, dtype=D64))


def test_wrap_angle():
    a = torch.tensor([-7., -math.pi, 0., math.pi, 4., 100.], dtype=D64)
    w = wrap_angle(a)
    assert ((w >= -math.pi) & (w < math.pi)).all()
    assert torch.allclose(torch.cos(w), torch.cos(a)) and torch.allclose(torch.sin(w), torch.sin(a), atol=1e-12)
