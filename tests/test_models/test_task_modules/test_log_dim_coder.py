import math

import pytest
import torch

from epropnp_det.models.task_modules import EProPnPMultiClassLogDimCoder


def test_round_trip_and_known_values():
    coder = EProPnPMultiClassLogDimCoder()
    labels = torch.arange(10).repeat(3)
    dims = torch.rand(30, 3, dtype=torch.float64) * 5 + 0.2
    codes = coder.encode(dims, labels)
    torch.testing.assert_close(coder.decode(codes, labels), dims)
    # the class mean encodes to 0; mean * exp(std/mean) encodes to 1 (car length: 4.62, 0.46)
    torch.testing.assert_close(coder.encode(torch.tensor([[4.62, 1.73, 1.96]]), torch.tensor([0])),
                               torch.zeros(1, 3), atol=1e-6, rtol=0)
    code = coder.encode(torch.tensor([[4.62 * math.exp(0.46 / 4.62), 1.73, 1.96]]), torch.tensor([0]))
    assert abs(code[0, 0].item() - 1) < 1e-5


def test_bad_labels_and_params():
    coder = EProPnPMultiClassLogDimCoder()
    with pytest.raises(ValueError, match='labels'):
        coder.encode(torch.ones(1, 3), torch.tensor([10]))
    with pytest.raises(ValueError, match='target_means'):
        EProPnPMultiClassLogDimCoder(target_means=[[1., 1.]], target_stds=[[1., 1.]])
