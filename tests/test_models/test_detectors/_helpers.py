"""Steps the detector tests share: build a detector from a config file, one backward pass with the gradient checks
of every training-iteration test, and the one-batch overfitting loop. Not a test module (no ``test_`` prefix)."""
import os

import torch
from mmdet3d.registry import MODELS
from mmengine.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def build_detector(path, pretrained=True):
    """The detector of the config at ``path`` (relative to the repository root), built under the mmdet3d scope after
    ``torch.manual_seed(0)`` and initialised. ``pretrained=False`` drops the backbone's ``init_cfg`` (the ResNet-101
    configs would otherwise load an ImageNet checkpoint)."""
    from mmengine.registry import init_default_scope

    import epropnp_det.datasets  # noqa: F401  (data preprocessor)
    import epropnp_det.models  # noqa: F401
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(os.path.join(ROOT, path))
    if not pretrained:
        cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def backward_and_check_grads(model, losses):
    """Sum ``losses`` (the dict of ``model(..., mode='loss')``) with ``model.parse_losses``, assert the total is
    finite, backpropagate it and assert that every trainable parameter got a gradient and every gradient is finite.
    Gradients accumulate into ``.grad`` (call ``model.zero_grad()`` first on a model that was already trained).
    Returns the parsed log dict."""
    loss, log = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, bad
    return log


def overfit_one_batch(model, make_data, keys, steps):
    """Train ``model`` for ``steps`` AdamW steps (lr 3e-4, weight decay 1e-4, through ``EProPnPOptimWrapper``) on the
    single batch ``make_data(model, True)`` (made after ``torch.manual_seed(0)`` and ``model.train()``).

    Returns ``(first, last, history)``: ``history`` the per-step list of the log values named by ``keys``,
    ``first`` / ``last`` (shape (len(keys),)) their means over the first 3 and the last 5 steps."""
    from epropnp_det.engine import EProPnPOptimWrapper
    torch.manual_seed(0)
    model.train()
    data = make_data(model, True)
    opt = EProPnPOptimWrapper(torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4))
    history = []
    for _ in range(steps):
        loss, log = model.parse_losses(model(**data, mode='loss'))
        opt.update_params(loss)
        history.append(tuple(float(log[k]) for k in keys))
    return torch.tensor(history[:3]).mean(0), torch.tensor(history[-5:]).mean(0), history


def preprocess(model, samples, training, generator=None):
    """A batch of ``samples`` (one ``Det3DDataSample`` per image) with random images (3 x img_shape, integer values
    in [0, 255), drawn from ``generator`` or else the global RNG) through the model's data preprocessor."""
    imgs = [torch.randint(0, 255, (3, *ds.img_shape), generator=generator).float() for ds in samples]
    return model.data_preprocessor(dict(inputs=dict(img=imgs), data_samples=samples), training=training)
