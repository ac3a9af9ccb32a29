"""Overfitting one batch lowers the pose loss and the BEV translation error (issue 5 test list). ~30 s: slow."""
import pytest
import torch

from tests.test_models.test_detectors.test_epropnp_det import _data, model  # noqa: F401  (fixture)


@pytest.mark.slow
def test_overfit_one_batch_lowers_pose_loss_and_ate(model):  # noqa: F811
    from epropnp_det.engine import EProPnPOptimWrapper
    torch.manual_seed(0)
    model.train()
    data = _data(model, True)
    opt = EProPnPOptimWrapper(torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4))
    history = []
    for _ in range(50):
        loss, log = model.parse_losses(model(**data, mode='loss'))
        opt.update_params(loss)
        history.append((float(log['loss_pose']), float(log['ate'])))
    first = torch.tensor(history[:3]).mean(0)
    last = torch.tensor(history[-5:]).mean(0)
    assert last[0] < 0.5 * first[0], history
    assert last[1] < 0.2 * first[1] and last[1] < 2.0, history  # metres
