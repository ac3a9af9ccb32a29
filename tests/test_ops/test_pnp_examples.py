"""The worked examples of ``tools/examples/`` run on a reduced budget and their test pose errors fall.

Budgets (2-core CPU): identity fitting 8 steps of 16 poses with 32 samples (the demo: 2560 steps of 256 with 512);
keypoint network 12 steps of 16 images with 64 samples (its default: 100 steps). The errors are measured on held-out
poses / images by the examples themselves, before training and after the last step.
"""
import importlib.util
import os

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'tools', 'examples', f'{name}.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_identity_fitting_example_error_falls():
    ex = _load('fit_identity_6dof')
    torch.set_num_threads(min(2, torch.get_num_threads()))
    hist = ex.train(n_data=128, batch_size=16, epochs=1, mc_samples=32, lr=1e-3, n_test=32, seed=0, log_every=100)
    first, last = hist['test'][0], hist['test'][-1]
    assert len(hist['train']) == 8 and all(torch.isfinite(torch.tensor(r['loss'])) for r in hist['train'])
    assert last['t_err'] < 0.6 * first['t_err'], hist['test']


def test_keypoint_example_error_falls():
    ex = _load('keypoints_fixed_model')
    hist = ex.train(steps=12, batch_size=16, mc_samples=64, lr=3e-3, eval_every=12, n_test=64, seed=0)
    first, last = hist['test'][0], hist['test'][-1]
    assert last['t_err_m'] < 0.1 * first['t_err_m'], hist['test']
    assert last['rot_err_deg'] < 0.5 * first['rot_err_deg'], hist['test']
