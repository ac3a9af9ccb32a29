"""The pose stage of EPro-PnP-Det: correspondences → pose, its uncertainty, and the pose-related losses.

Between the head (which predicts :class:`~epropnp_det.structures.Correspondences` and object outputs) and the
torch-only PnP library (:mod:`epropnp_det.ops.pnp`). It owns

* the EPro-PnP layer (:class:`~epropnp_det.ops.pnp.epropnp.EProPnP4DoF`, poses ``[x, y, z, yaw]`` in the camera
  frame of the ORIGINAL image, metres / radians);
* the Huber threshold ``δ = rel · mean(w2d) · spread(x2d)`` (:func:`~epropnp_det.ops.pnp.cost.adaptive_huber_delta`)
  with a fixed or learnable relative factor ``rel`` (``learnable_rel_delta``: log-parameter ``log_rel_delta``,
  docs/method.md §10.15);
* the Monte-Carlo pose loss (KL of the pose posterior to the ground truth) divided by the running norm factor of
  the predicted weight scales (docs/method.md §2.11);
* the derivative regularisation (docs/method.md §2.12) and its solve;
* the 3D-score target and loss (docs/method.md §5.5);
* inference: the pose, its Laplace covariance and, on request, weighted Monte-Carlo pose samples.

Training policies, as explicit options:

* ``detach_pose_x2d`` (v1 True, v2 False): the pose loss sees ``x2d`` (and hence δ) detached;
* ``detach_reg_inputs`` (v1 True, v2 False): the regularisation sees ``dims``, the weight scale and δ detached;
* ``share_reg_solve`` (default True): the regularisation's independent solve (started from the RSLM initialisation
  alone, not from the ground truth) is taken from the pose loss's solve call, which then runs the LM iterations of
  the two starts as one batch of 2N problems with the same RSLM draws. It then uses the pose layer's training solver
  settings (``pnp.solver_cfg``, RSLM + 10 LM iterations in every config). ``False`` runs a separate
  RSLM + 10-iteration solve for the regularisation (its own random draws).

Non-finite inputs: the layer is built with ``nonfinite='exclude'``, so an object with NaN/Inf correspondences is left
out of the pose loss and counted (``num_nonfinite_pose``) without a host synchronisation.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from mmdet.utils import reduce_mean
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from epropnp_det.ops.pnp.cost import adaptive_huber_delta
from epropnp_det.ops.pnp.epropnp import EProPnP4DoF, PoseSamples
from epropnp_det.ops.pnp.losses import MonteCarloPoseLoss
from epropnp_det.ops.pnp.regularization import derivative_regularization
from epropnp_det.ops.pnp.types import CameraParams
from epropnp_det.structures.correspondences import Correspondences

from ..utils.mc_scoring import blend_scores, mc_te_score, te_score

__all__ = ['EProPnPPoseStage', 'PoseEstimate']


@dataclass
class PoseEstimate:
    """Inference output of :meth:`EProPnPPoseStage.decode` for N objects.

    Attributes:
        pose: (N, 4) ``[x, y, z, yaw]`` of the box centre, camera frame of the original image (metres, radians).
        pose_cov: (N, 4, 4) Laplace covariance of ``pose`` (m², m·rad, rad²), before any calibration.
        score_mc: (N,) Monte-Carlo "te" score in [0, 1] (only with ``mc_scoring_ratio > 0``), else None.
        delta: (N,) the Huber thresholds used (pixels), reused by :meth:`EProPnPPoseStage.sample`.
        generator: the seeded ``torch.Generator`` of the call (``mc_seed``), or None (global RNG).
    """
    pose: Tensor
    pose_cov: Tensor
    score_mc: Optional[Tensor]
    delta: Tensor
    generator: Optional[torch.Generator]


@MODELS.register_module()
class EProPnPPoseStage(BaseModule):
    """Pose estimation and pose losses from 2D–3D correspondences (module docstring).

    Args:
        pnp: kwargs of :class:`~epropnp_det.ops.pnp.epropnp.EProPnP4DoF` (``mc_samples``, ``num_iter``,
            ``solver_cfg``, ``relative_delta``...; ``nonfinite`` defaults to 'exclude').
        loss_pose: ``dict(loss_weight, momentum)`` of :class:`~epropnp_det.ops.pnp.losses.MonteCarloPoseLoss`.
        loss_score: mmdet loss config of the 3D score (BCE against :meth:`score_target`).
        loss_reg_pos, loss_reg_orient: ``dict(loss_weight, beta)`` of the derivative regularisation's position /
            orientation terms (None disables a term).
        learnable_rel_delta: learn ``log_rel_delta`` (initialised at ``log(pnp.relative_delta)``).
        detach_pose_x2d, detach_reg_inputs, share_reg_solve: the training policies (module docstring).
    """

    def __init__(self, pnp: dict = dict(mc_samples=512, num_iter=4, solver_cfg=dict(num_iter=10)),
                 loss_pose: dict = dict(loss_weight=0.15, momentum=0.01),
                 loss_score: dict = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
                 loss_reg_pos: Optional[dict] = dict(loss_weight=0.05, beta=1.0),
                 loss_reg_orient: Optional[dict] = dict(loss_weight=0.05),
                 learnable_rel_delta: bool = False, detach_pose_x2d: bool = True, detach_reg_inputs: bool = True,
                 share_reg_solve: bool = True, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        # 'exclude': a NaN/Inf object is left out of the pose loss and counted instead of raising (which would end
        # the run), and the layer makes no host synchronisation for the check
        self.pnp = EProPnP4DoF(**dict(dict(nonfinite='exclude'), **pnp))
        self.log_rel_delta = nn.Parameter(torch.tensor(math.log(self.pnp.relative_delta))) \
            if learnable_rel_delta else None
        self.loss_pose = MonteCarloPoseLoss(**dict(dict(loss_weight=0.15, momentum=0.01), **loss_pose),
                                            reduce_fn=reduce_mean)  # norm-factor EMA all-reduced across ranks
        self.loss_score = MODELS.build(loss_score)
        self.loss_reg_pos_cfg, self.loss_reg_orient_cfg = loss_reg_pos, loss_reg_orient
        self.detach_pose_x2d, self.detach_reg_inputs = bool(detach_pose_x2d), bool(detach_reg_inputs)
        self.share_reg_solve = bool(share_reg_solve)

    # ------------------------------------------------------------------------------------------------ shared
    def relative_delta(self):
        """Relative Huber δ: ``exp(log_rel_delta)`` (0-dim tensor, learnable) or the fixed ``pnp.relative_delta``."""
        return self.pnp.relative_delta if self.log_rel_delta is None else self.log_rel_delta.exp()

    def huber_delta(self, x2d: Tensor, w2d: Tensor) -> Tensor:
        """(N,) Huber threshold of the correspondences (pixels); differentiable in whatever is not detached."""
        return adaptive_huber_delta(x2d, w2d, self.relative_delta())

    @staticmethod
    def score_target(pose: Tensor, pose_gt: Tensor) -> Tensor:
        """(N,) 3D-score target of poses (N, 4) against the ground truth: :func:`~..utils.mc_scoring.te_score` of
        the BEV translation error ``‖(x, z) − (x_gt, z_gt)‖`` (metres)."""
        return te_score((pose[:, [0, 2]] - pose_gt[:, [0, 2]]).norm(dim=-1))

    # ---------------------------------------------------------------------------------------------- training
    def loss(self, corr: Correspondences, camera: CameraParams, pose_gt: Tensor, score_logit: Tensor,
             weights: Tensor, uniform_weights: Tensor) -> dict:
        """Pose losses of N sampled objects.

        Args:
            corr: the objects' correspondences (non-finite objects already replaced by harmless values).
            camera: their PnP camera (:meth:`~epropnp_det.structures.CameraBatch.pnp_camera`).
            pose_gt: (N, 4) ground-truth ``[x, y, z, yaw]``, camera frame.
            score_logit: (N,) predicted 3D-score logits.
            weights, uniform_weights: (N,) importance / uniform sample weights (0 for excluded objects).

        Returns:
            ``loss_pose``, ``loss_score``, ``loss_reg_pos`` / ``loss_reg_orient`` (if enabled), and the logged
            ``ate`` (weighted mean BEV translation error of the regularisation's solve, metres),
            ``num_nonfinite_pose`` and ``norm_factor``. With N = 0 every loss is a zero that keeps the graph of
            every input (DDP) and the norm factor still takes this rank's batch statistic (0).
        """
        N = corr.num_objects
        w, w_u = weights, uniform_weights
        avg = max(float(N), 1.0)
        scale, w2d_s = corr.scale, corr.w2d
        # running norm factor of the weight scales (docs/method.md §2.11); with no sample this rank still enters
        # its batch statistic (0) into the all-reduced EMA, as the original does
        batch_norm = ((scale * w[:, None]).sum() / max(2 * N, 1)).detach()
        losses = {}
        if N == 0:
            zero = (corr.noc.sum() * 0 + corr.x2d.sum() * 0 + corr.w2d_unit.sum() * 0 + scale.sum() * 0 +
                    corr.dims.sum() * 0 + score_logit.sum() * 0)
            if self.log_rel_delta is not None:  # keep the learnable δ in the graph (DDP without unused params)
                zero = zero + self.log_rel_delta * 0
            self.loss_pose(pose_gt.new_zeros(0), pose_gt.new_zeros(1, 0), batch_norm_factor=batch_norm)
            losses.update(loss_pose=zero, loss_score=zero, ate=zero.detach(), num_nonfinite_pose=zero.detach())
            if self.loss_reg_pos_cfg is not None:
                losses['loss_reg_pos'] = zero
            if self.loss_reg_orient_cfg is not None:
                losses['loss_reg_orient'] = zero
        else:
            x3d = corr.x3d
            x2d_pose = corr.x2d.detach() if self.detach_pose_x2d else corr.x2d
            mc = self.pnp.monte_carlo_forward(x3d, x2d_pose, w2d_s, camera, pose_init=pose_gt,
                                              delta=self.huber_delta(x2d_pose, w2d_s), force_init_solve=True,
                                              with_free_solution=self.share_reg_solve)
            pose_loss = self.loss_pose(mc.cost_init, mc.logw, batch_norm_factor=batch_norm, weight=w, avg_factor=avg)
            losses['loss_pose'] = pose_loss.loss
            losses['num_nonfinite_pose'] = pose_loss.num_nonfinite.to(pose_gt)  # objects excluded (NaN/Inf)
            if self.detach_reg_inputs:  # v1: dims, weight scale and δ detached
                reg_corr = corr.detach(dims=True, scale=True)
                x3d_reg, w2d_reg = reg_corr.x3d, reg_corr.w2d
                delta = self.huber_delta(corr.x2d.detach(), w2d_s).detach()
            else:  # v2: gradients of the regularisation also reach dims, scale and δ
                x3d_reg, w2d_reg, delta = x3d, w2d_s, self.huber_delta(corr.x2d, w2d_s)
            # pose_free is None unless the solve is shared: the regularisation then solves on its own
            reg = derivative_regularization(x3d_reg, corr.x2d, w2d_reg, camera, delta, pose_gt,
                                            beta=(self.loss_reg_pos_cfg or {}).get('beta', 1.0),
                                            pose_opt=mc.pose_free, backend=self.pnp.cost_backend)
            te = (reg['pose_opt'][:, [0, 2]] - pose_gt[:, [0, 2]]).norm(dim=-1)
            losses['loss_score'] = self.loss_score(score_logit, te_score(te).detach(), weight=w_u, avg_factor=avg)
            if self.loss_reg_pos_cfg is not None:
                losses['loss_reg_pos'] = (reg['loss_pos'] * w).sum() / avg * self.loss_reg_pos_cfg['loss_weight']
            if self.loss_reg_orient_cfg is not None:
                losses['loss_reg_orient'] = ((reg['loss_orient'] * w).sum() / avg *
                                             self.loss_reg_orient_cfg['loss_weight'])
            losses['ate'] = ((te * w).sum() / avg).detach()
        losses['norm_factor'] = self.loss_pose.norm_factor.detach().clone()
        return losses

    # --------------------------------------------------------------------------------------------- inference
    def decode(self, corr: Correspondences, camera: CameraParams, num_iter: int, fast_mode: bool = True,
               mc_scoring_ratio: float = 0.0, mc_scoring_samples: Optional[int] = None,
               mc_seed: Optional[int] = None) -> PoseEstimate:
        """Poses and Laplace covariances of N candidates.

        With ``mc_scoring_ratio > 0`` the Monte-Carlo forward replaces the plain solve (its ``y*`` and covariance
        are the output) and gives the posterior "te" score (docs/method.md §6.2); otherwise one Gauss–Newton
        (``fast_mode``) or LM solve. ``mc_seed`` seeds a ``torch.Generator`` for the RSLM initialisation and every
        Monte-Carlo draw of the call (and of :meth:`sample` with the returned estimate).
        """
        x3d, x2d, w2d = corr.x3d, corr.x2d, corr.w2d
        # the inference δ (x2d detached); equal to the ops' default unless the relative δ is learnable
        delta = self.huber_delta(x2d.detach(), w2d)
        gen = None
        if mc_seed is not None:
            gen = torch.Generator(device=w2d.device).manual_seed(int(mc_seed))
        score_mc = None
        if mc_scoring_ratio > 0 and corr.num_objects:
            mc = self.pnp.monte_carlo_forward(x3d, x2d, w2d, camera, delta=delta, generator=gen,
                                              mc_samples=mc_scoring_samples, fast_mode=fast_mode, num_iter=num_iter)
            pose, pose_cov = mc.pose_opt, mc.pose_cov
            score_mc = mc_te_score(mc.pose_samples, mc.logw, pose)
        else:
            sol = self.pnp.solve(x3d, x2d, w2d, camera, delta=delta, fast_mode=fast_mode, num_iter=num_iter,
                                 with_cov=True, generator=gen)
            pose, pose_cov = sol.pose, sol.cov
        return PoseEstimate(pose, pose_cov, score_mc, delta, gen)

    @staticmethod
    def blend_score(score3d: Tensor, est: PoseEstimate, ratio: float) -> Tensor:
        """``score3d^(1 − r) · score_mc^r`` (unchanged without a Monte-Carlo score)."""
        return score3d if est.score_mc is None else blend_scores(score3d, est.score_mc, ratio)

    def sample(self, corr: Correspondences, camera: CameraParams, est: PoseEstimate, sel: Tensor, mc_samples: int,
               num_iter: int, fast_mode: bool = True) -> PoseSamples:
        """AMIS pose samples of the objects ``sel`` (long indices into ``corr``), with the estimate's δ and
        generator: ``pose_samples`` (K, M, 4) camera frame, ``weights`` (K, M) self-normalised."""
        return self.pnp.monte_carlo_forward(corr.x3d[sel], corr.x2d[sel], corr.w2d[sel], camera.index(sel),
                                            delta=est.delta[sel], generator=est.generator, mc_samples=mc_samples,
                                            fast_mode=fast_mode, num_iter=num_iter)
