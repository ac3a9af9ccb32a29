"""Worked example: a 2D-keypoint network with a fixed 3D model, trained end to end through the EPro-PnP layer.

    python tools/examples/keypoints_fixed_model.py                 # 100 steps, ~1-2 min on a 2-core CPU
    python tools/examples/keypoints_fixed_model.py --steps 20      # the reduced budget of the test

The common "other model" case: the 3D points are known (the 8 corners of a rigid object, object frame, metres) and
a network predicts where each one appears in the image, plus a weight per keypoint and image axis. Here:

* data: 48×48 synthetic images of one object under random 6-DoF poses (1.5–2.5 m ahead, any rotation); channel
  ``k`` shows keypoint ``k`` as a Gaussian blob at its projection, and with probability 0.3 also a dimmer
  distractor blob elsewhere (which pulls a soft-argmax off: an outlier the network must learn to suppress); the
  images stand in for a real backbone's input;
* network: a small CNN with one heatmap per keypoint; ``x2d`` = soft-argmax of each heatmap in pixels
  (continuous coordinates: pixel ``(i, j)`` covers ``[j, j+1) × [i, i+1)``), ``w2d`` = a learned global scale
  divided by the heatmap's spread per axis (its standard deviation + 1 px), so an uncertain keypoint weighs less;
* layer: ``x3d`` is the fixed model (no gradient), ``EProPnP6DoF.monte_carlo_forward`` with the target as
  ``pose_init``; loss = Monte-Carlo KL loss (:class:`MonteCarloPoseLoss`) + 0.1 × derivative regularisation on the
  training solution (``with_pose_plus=True``);
* test: Gauss-Newton solve (``fast_mode=True``, 5 steps after RSLM) on 128 fixed test images; median translation
  error (m) and median rotation error (degrees).

Nothing but torch is needed (``pip install ./pnp_only``). All randomness from ``--seed``.
"""
import argparse
import json
import math
import time
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from epropnp_det.ops.pnp import CameraParams, EProPnP6DoF, MonteCarloPoseLoss, derivative_reg_losses, project
from epropnp_det.ops.pnp.rotation import random_quaternion

IMG = 48
K = torch.tensor([[50., 0., 24.], [0., 50., 24.], [0., 0., 1.]])
# the fixed 3D model: corners of a 0.5 × 0.35 × 0.25 m box (object frame, metres)
MODEL = torch.tensor([[sx * 0.25, sy * 0.175, sz * 0.125] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])


def make_batch(n: int, generator: torch.Generator, sigma: float = 1.2, distractor_prob: float = 0.3,
               distractor_gain: float = 0.5):
    """Images (n, 8, IMG, IMG), true poses (n, 7) ``[x, y, z, w, i, j, k]`` camera frame."""
    t = torch.stack([torch.rand(n, generator=generator) * 0.4 - 0.2, torch.rand(n, generator=generator) * 0.4 - 0.2,
                     torch.rand(n, generator=generator) + 1.5], dim=-1)
    pose = torch.cat([t, random_quaternion((n,), generator=generator)], dim=-1)
    cam = CameraParams.unbounded(K.expand(n, 3, 3))
    uv, _ = project(MODEL.expand(n, 8, 3), pose, cam)  # (n, 8, 2) continuous pixel coordinates
    far = torch.rand(n, 8, 2, generator=generator) * IMG
    use = torch.rand(n, 8, 1, generator=generator) < distractor_prob
    grid = torch.arange(IMG, dtype=torch.float32) + 0.5  # pixel centres
    gx, gy = grid.view(1, 1, 1, IMG), grid.view(1, 1, IMG, 1)

    def blob(c):
        return torch.exp(-((gx - c[..., 0, None, None]) ** 2 + (gy - c[..., 1, None, None]) ** 2) / (2 * sigma ** 2))
    img = blob(uv) + distractor_gain * use[..., None] * blob(far) + 0.05 * torch.randn(n, 8, IMG, IMG,
                                                                                       generator=generator)
    return img, pose


class KeypointNet(nn.Module):
    """CNN ``(B, 8, H, W) -> x2d (B, 8, 2)`` pixels (soft-argmax) and ``w2d (B, 8, 2)``."""

    def __init__(self, ch: int = 8):
        super().__init__()
        # each heatmap looks at its own channel, with weights shared over the keypoints (the channels are folded
        # into the batch: much faster on a CPU than grouped convolutions) plus a learned per-keypoint gain
        self.body = nn.Sequential(nn.Conv2d(1, ch, 5, padding=2), nn.ReLU(), nn.Conv2d(ch, 1, 5, padding=2))
        self.gain = nn.Parameter(torch.ones(8, 1))
        self.log_weight_scale = nn.Parameter(torch.zeros(2))

    def forward(self, img):
        B = img.shape[0]
        logits = self.body(img.reshape(B * 8, 1, IMG, IMG)).reshape(B, 8, IMG * IMG) * self.gain  # (B, 8, H·W)
        prob = logits.softmax(dim=-1)
        grid = torch.arange(IMG, dtype=img.dtype, device=img.device) + 0.5
        gy, gx = torch.meshgrid(grid, grid, indexing='ij')
        g = torch.stack([gx.flatten(), gy.flatten()], dim=-1)  # (H·W, 2) pixel centres
        x2d = prob @ g  # (B, 8, 2) soft-argmax
        # the heatmap's spread per axis is the keypoint's uncertainty: weight = scale / (std + 1 px); a distractor
        # makes the heatmap bimodal, hence wide, hence low-weighted
        std = (prob @ g.square() - x2d.square()).clamp(min=0).sqrt()
        w2d = self.log_weight_scale.exp() / (std + 1)
        return x2d, w2d


def errors(pose, pose_gt):
    t = (pose[:, :3] - pose_gt[:, :3]).norm(dim=-1)
    dot = (F.normalize(pose[:, 3:], dim=-1) * pose_gt[:, 3:]).sum(-1).abs().clamp(max=1)
    return t.median().item(), math.degrees((2 * torch.acos(dot)).median().item())


def train(steps: int = 100, batch_size: int = 16, mc_samples: int = 64, lr: float = 3e-3, reg_weight: float = 0.1,
          seed: int = 0, eval_every: int = 20, n_test: int = 128) -> Dict[str, List]:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    test_img, test_pose = make_batch(n_test, torch.Generator().manual_seed(seed + 100))
    net = KeypointNet()
    # 8 points per object: RSLM subsets of 6 points, 32 starts (the defaults, 16 points / 64 starts, suit n ≥ 32)
    layer = EProPnP6DoF(mc_samples=mc_samples, num_iter=4,
                        solver_cfg=dict(num_iter=10, init_num_points=6, init_num_proposals=32))
    mc_loss = MonteCarloPoseLoss()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sample_gen, test_gen = torch.Generator().manual_seed(seed + 1), torch.Generator()
    history = dict(test=[], train=[])

    def log_test(step):
        net.eval()
        with torch.no_grad():
            x2d, w2d = net(test_img)
            cam = CameraParams.from_image_shape(K.expand(n_test, 3, 3), (IMG, IMG), convention='v2')
            sol = layer.solve(MODEL.expand(n_test, 8, 3), x2d, w2d, cam, fast_mode=True, num_iter=5,
                              generator=test_gen.manual_seed(seed + 2))
        net.train()
        t_err, r_err = errors(sol.pose, test_pose)
        history['test'].append(dict(step=step, t_err_m=t_err, rot_err_deg=r_err))
        print(f'[test] step {step}: median translation error {t_err:.3f} m, median rotation error {r_err:.1f}°',
              flush=True)

    log_test(0)
    t0 = time.time()
    for step in range(1, steps + 1):
        img, pose_gt = make_batch(batch_size, gen)
        x2d, w2d = net(img)
        # clamp bounds of a 48×48 image with 200 px of allowed border, continuous pixel coordinates
        cam = CameraParams.from_image_shape(K.expand(batch_size, 3, 3), (IMG, IMG), convention='v2')
        x3d = MODEL.expand(batch_size, 8, 3)  # fixed model: no gradient
        mc = layer.monte_carlo_forward(x3d, x2d, w2d, cam, pose_init=pose_gt, with_pose_plus=True,
                                       generator=sample_gen)
        loss_mc = mc_loss(mc.cost_init, mc.logw, batch_norm_factor=net.log_weight_scale.detach().exp().mean()).loss
        loss_t, loss_r = derivative_reg_losses(mc.pose_plus, pose_gt)
        loss = loss_mc + reg_weight * (loss_t.mean() + loss_r.mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history['train'].append(dict(step=step, loss=loss.item(), loss_mc=loss_mc.item()))
        if step % eval_every == 0 or step == steps:
            print(f'step {step}: loss {loss.item():.3f} ({(time.time() - t0) / step:.2f} s/step)', flush=True)
            log_test(step)
    return history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--mc-samples', type=int, default=64)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--eval-every', type=int, default=20)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--json', default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hist = train(steps=args.steps, batch_size=args.batch_size, mc_samples=args.mc_samples, lr=args.lr,
                 seed=args.seed, eval_every=args.eval_every)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), **hist), f, indent=1)
    return hist


if __name__ == '__main__':
    main()
