"""Overfitting one batch lowers the pose loss and the BEV translation error ~30 s: slow."""
import pytest

from tests.test_models.test_detectors._helpers import overfit_one_batch
from tests.test_models.test_detectors.test_epropnp_det import _data, model  # noqa: F401  (fixture)


@pytest.mark.slow
def test_overfit_one_batch_lowers_pose_loss_and_ate(model):  # noqa: F811
    first, last, history = overfit_one_batch(model, _data, ('loss_pose', 'ate'), steps=50)
    assert last[0] < 0.5 * first[0], history
    assert last[1] < 0.2 * first[1] and last[1] < 2.0, history  # metres
