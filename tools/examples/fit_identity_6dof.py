"""Worked example: learn the identity on 6-DoF poses through the EPro-PnP layer (torch only).

    python tools/examples/fit_identity_6dof.py                          # the original demo's full budget
    python tools/examples/fit_identity_6dof.py --n-data 4096 --epochs 2 # a few minutes on a CPU

The model is ``pose_out = EProPnP6DoF(MLP(pose_in))``: an MLP maps each input pose ``[x, y, z, w, i, j, k]`` to 64
weighted 2D-3D correspondences (``x3d (64, 3)``, ``x2d (64, 2)``, ``w2d (64, 2)``), the layer turns them into a pose
distribution, and training makes that distribution concentrate on the (noisy) input pose. This is the workflow of
the original EPro-PnP's ``demo/fit_identity.ipynb`` (same data, model, solver settings, losses and optimiser;
written for this library), with this library's calls:

* the camera is the identity (normalised image coordinates), built with ``CameraParams.unbounded(K)`` — nothing is
  clamped to an image;
* the layer is ``EProPnP6DoF(mc_samples=512, num_iter=4, normalize=False, solver_cfg=...)`` with the demo's LM and
  RSLM settings (10 LM iterations; RSLM with 8 points, 128 proposals, 5 iterations) and ``normalize=False`` as in
  the original (this library's default is ``True``, see the migration table in ``docs/pnp_layer.md``);
* the loss is the Monte-Carlo KL loss with the demo's running normaliser (momentum 0.1; the library's default is
  the detector's 0.01) plus the derivative regularisation on the **training** solution
  (``monte_carlo_forward(..., with_pose_plus=True)`` and :func:`derivative_reg_losses`: SmoothL1 of the
  translation distance with β = 1, quaternion distance ``2 (1 − ⟨q⁺, q⟩²)``, each weighted 0.1);
* test: GN-free LM solve from RSLM (``EProPnP6DoF.solve``) on 1024 fresh poses; mean translation error (same units
  as the poses) and mean rotation angle error (radians), as the demo prints them.

Prints one line per ``--log-every`` steps and the test errors before training and after each epoch; ``--json``
writes them. All randomness comes from ``--seed`` (data, initialisation, the layer's sampling).
"""
import argparse
import json
import math
import time
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from epropnp_det.ops.pnp import CameraParams, EProPnP6DoF, MonteCarloPoseLoss, derivative_reg_losses


class IdentityModel(nn.Module):
    """MLP ``(B, 7) -> x3d (B, P, 3), x2d (B, P, 2), w2d (B, P, 2)`` with one hidden layer (1024 units)."""

    def __init__(self, num_points: int = 64, hidden: int = 1024):
        super().__init__()
        self.num_points = num_points
        self.mlp = nn.Sequential(nn.Linear(7, hidden), nn.LeakyReLU(), nn.Linear(hidden, num_points * 7))
        # one global weight scale per image axis: the data noise is the same for every pose
        self.log_weight_scale = nn.Parameter(torch.zeros(2))

    def forward(self, pose_in):
        x3d, x2d, w2d = self.mlp(pose_in).reshape(-1, self.num_points, 7).split([3, 2, 2], dim=-1)
        # softmax over the points times the global scale (in log space)
        w2d = (w2d.log_softmax(dim=-2) + self.log_weight_scale).exp()
        return x3d, x2d, w2d


def make_poses(n: int, noise: float, generator: torch.Generator):
    """``n`` input poses (position ~ N(0, I) + (0, 0, 5), uniform unit quaternion) and noisy targets."""
    pose_in = torch.randn(n, 7, generator=generator)
    pose_in[:, 2] += 5  # in front of the camera
    pose_in[:, 3:] = F.normalize(pose_in[:, 3:], dim=-1)
    pose_out = pose_in + torch.randn(n, 7, generator=generator) * noise
    pose_out[:, 3:] = F.normalize(pose_out[:, 3:], dim=-1)
    return pose_in, pose_out


def pose_errors(pose: torch.Tensor, pose_gt: torch.Tensor):
    """Mean translation error and mean rotation angle ``2 acos |⟨q, q_gt⟩|`` (radians) over the batch."""
    dist_t = (pose[:, :3] - pose_gt[:, :3]).norm(dim=-1)
    dot = (F.normalize(pose[:, 3:], dim=-1) * pose_gt[:, 3:]).sum(-1).abs().clamp(max=1)
    return dist_t.mean().item(), (2 * torch.acos(dot)).mean().item()


def build_layer(mc_samples: int) -> EProPnP6DoF:
    """The demo's solver settings (LM 10 iterations after RSLM: 8 points, 128 proposals, 5 iterations)."""
    return EProPnP6DoF(mc_samples=mc_samples, num_iter=4, normalize=False,
                       solver_cfg=dict(num_iter=10, init_num_points=8, init_num_proposals=128, init_num_iter=5))


@torch.no_grad()
def evaluate(model, layer, pose_test, generator) -> Dict[str, float]:
    x3d, x2d, w2d = model(pose_test)
    camera = CameraParams.unbounded(torch.eye(3).expand(len(pose_test), 3, 3))
    sol = layer.solve(x3d, x2d, w2d, camera, generator=generator)
    t_err, r_err = pose_errors(sol.pose, pose_test)
    return dict(t_err=t_err, rot_err_rad=r_err)


def train(n_data: int = 65536, batch_size: int = 256, epochs: int = 10, noise: float = 0.01, mc_samples: int = 512,
          lr: float = 1e-4, lr_scale: float = 1e-2, reg_weight: float = 0.1, momentum: float = 0.1,
          n_test: int = 1024, seed: int = 0, log_every: int = 50, max_steps: Optional[int] = None,
          eval_every: Optional[int] = None) -> Dict[str, List]:
    """Run the example; returns ``dict(test=[{step, t_err, rot_err_rad, ...}], train=[{step, losses}])``."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the MLP's initialisation
    pose_in, pose_out = make_poses(n_data, noise, gen)
    pose_test, _ = make_poses(n_test, noise, gen)
    model = IdentityModel()
    layer = build_layer(mc_samples)
    mc_loss = MonteCarloPoseLoss(momentum=momentum)  # loss_weight 1; the demo's momentum 0.1
    opt = torch.optim.Adam([{'params': model.mlp.parameters()},
                            {'params': [model.log_weight_scale], 'lr': lr_scale}], lr=lr)
    sample_gen = torch.Generator().manual_seed(seed + 1)
    test_gen = torch.Generator()
    history = dict(test=[], train=[])

    def log_test(step, epoch):
        test_gen.manual_seed(seed + 2)
        model.eval()
        res = dict(step=step, epoch=epoch, **evaluate(model, layer, pose_test, test_gen))
        model.train()
        history['test'].append(res)
        print(f'[test] step {step} (epoch {epoch}): mean translation error {res["t_err"]:.4f}, '
              f'mean orientation error {res["rot_err_rad"]:.4f} rad', flush=True)

    log_test(0, 0)
    step, train_time = 0, 0.0
    steps_per_epoch = math.ceil(n_data / batch_size)
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n_data, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            t0 = time.time()
            p_in, p_out = pose_in[idx], pose_out[idx]
            x3d, x2d, w2d = model(p_in)
            camera = CameraParams.unbounded(torch.eye(3).expand(len(idx), 3, 3))
            # δ defaults to the adaptive Huber threshold from x2d (detached) and w2d, relative_delta 0.5
            mc = layer.monte_carlo_forward(x3d, x2d, w2d, camera, pose_init=p_out, force_init_solve=True,
                                           with_pose_plus=True, generator=sample_gen)
            norm_factor = model.log_weight_scale.detach().exp().mean()
            loss_mc = mc_loss(mc.cost_init, mc.logw, batch_norm_factor=norm_factor).loss
            loss_t, loss_r = derivative_reg_losses(mc.pose_plus, p_out, beta=1.0)
            loss = loss_mc + reg_weight * loss_t.mean() + reg_weight * loss_r.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            train_time += time.time() - t0
            rec = dict(step=step, loss=loss.item(), loss_mc=loss_mc.item(), loss_t=loss_t.mean().item(),
                       loss_r=loss_r.mean().item(), norm_factor=mc_loss.norm_factor.item())
            history['train'].append(rec)
            if step % log_every == 0:
                print(f'epoch {epoch} step {step}: loss_mc={rec["loss_mc"]:.4f} loss_t={rec["loss_t"]:.4f} '
                      f'loss_r={rec["loss_r"]:.4f} norm_factor={rec["norm_factor"]:.4f} '
                      f'({train_time / step:.2f} s/step)', flush=True)
            if eval_every and step % eval_every == 0:
                log_test(step, epoch)
            if max_steps is not None and step >= max_steps:
                break
        if not (eval_every and step % eval_every == 0):
            log_test(step, epoch)
        if max_steps is not None and step >= max_steps:
            break
    history['seconds_per_step'] = train_time / max(step, 1)  # training steps only, tests excluded
    return history


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n-data', type=int, default=65536)
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--epochs', type=int, default=10)
    p.add_argument('--max-steps', type=int, default=None, help='stop after this many steps')
    p.add_argument('--mc-samples', type=int, default=512)
    p.add_argument('--lr', type=float, default=1e-4, help='Adam learning rate of the MLP (demo: 1e-4)')
    p.add_argument('--lr-scale', type=float, default=1e-2, help='learning rate of the weight scale (demo: 1e-2)')
    p.add_argument('--n-test', type=int, default=1024)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None, help='torch threads')
    p.add_argument('--log-every', type=int, default=50)
    p.add_argument('--eval-every', type=int, default=None, help='also test every this many steps')
    p.add_argument('--json', default=None, help='write the history to this file')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hist = train(n_data=args.n_data, batch_size=args.batch_size, epochs=args.epochs, mc_samples=args.mc_samples,
                 lr=args.lr, lr_scale=args.lr_scale, n_test=args.n_test, seed=args.seed, log_every=args.log_every,
                 max_steps=args.max_steps, eval_every=args.eval_every)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), **hist), f, indent=1)
    return hist


if __name__ == '__main__':
    main()
