"""Shared test configuration: tests marked ``@pytest.mark.gpu`` are skipped without CUDA (they run in
``tools/gpu_check.sh``)."""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason='needs CUDA')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip_gpu)
