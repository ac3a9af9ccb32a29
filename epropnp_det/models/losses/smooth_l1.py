"""mmdet's ``SmoothL1Loss`` without its host synchronisation.

Why a subclass: mmdet's ``forward`` first checks ``torch.any(weight > 0)`` on the host (a synchronisation per call
on a GPU, three per EPro-PnP-Det train step) to return ``(pred * weight).sum()`` when every weight is zero. The
regular path gives the same value there (0, with a zero gradient) as long as ``pred`` is finite, which the head
guarantees for the objects it keeps (non-finite objects are replaced and weighted zero).
"""
from mmdet.models.losses import SmoothL1Loss
from mmdet.models.losses.smooth_l1_loss import smooth_l1_loss
from mmdet3d.registry import MODELS

__all__ = ['EProPnPSmoothL1Loss']


@MODELS.register_module()
class EProPnPSmoothL1Loss(SmoothL1Loss):
    """Same arguments and values as ``mmdet.SmoothL1Loss`` (beta, reduction, loss_weight); no host read."""

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        assert reduction_override in (None, 'none', 'mean', 'sum')
        reduction = reduction_override if reduction_override else self.reduction
        return self.loss_weight * smooth_l1_loss(pred, target, weight, beta=self.beta, reduction=reduction,
                                                 avg_factor=avg_factor, **kwargs)
