"""Full default dataset (10 scenes x 10 keyframes, 6 cameras at 1600x900): must take <= 3 minutes on 2 cores."""
import os
import time

import pytest

from epropnp_det.synthetic import CLASSES, GeneratorConfig, generate_dataset


@pytest.mark.slow
def test_full_default_dataset_within_three_minutes(tmp_path):
    t0 = time.time()
    summary = generate_dataset(GeneratorConfig(out_dir=str(tmp_path)), progress=False)
    elapsed = time.time() - t0
    assert elapsed <= 180.0, elapsed
    assert summary['num_samples'] == 100
    assert len(os.listdir(tmp_path / 'samples' / 'CAM_FRONT')) == 100
    assert 10 <= summary['objects_per_sample_mean'] <= 35
    assert all(summary['class_histogram'][c] >= 20 for c in CLASSES), summary['class_histogram']
    assert summary['frac_with_lidar_pts'] == 1.0
    nuscenes = pytest.importorskip('nuscenes')
    nusc = nuscenes.NuScenes('v1.0-mini', str(tmp_path), verbose=False)
    assert len(nusc.sample) == 100 and len(nusc.sample_data) == 700
