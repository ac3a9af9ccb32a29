"""EProPnPNuScenesMetric fails before inference (docs/bad_input.md F31-F35): the devkit tables, version and eval
split are checked when mmengine's test loop is built, i.e. when it hands the metric the dataset's metainfo."""
import os.path as osp
import shutil
from types import SimpleNamespace

import mmengine
import pytest

from tests.test_datasets.tiny_nuscenes import build_dataset, tiny_nuscenes_root

CLASSES = ['car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
           'traffic_cone', 'barrier']


@pytest.fixture(scope='module')
def root():
    return tiny_nuscenes_root()


def build_metric(data_root, ann_file, **kw):
    from mmdet3d.registry import METRICS

    import epropnp_det.evaluation  # noqa: F401
    return METRICS.build(dict(type='EProPnPNuScenesMetric', data_root=data_root, ann_file=ann_file, **kw))


def tables_copy(root, tmp_path, drop=()):
    """A data root holding a copy of the v1.0-mini tables without ``drop``."""
    dst = tmp_path / 'root'
    shutil.copytree(osp.join(root, 'v1.0-mini'), dst / 'v1.0-mini')
    for t in drop:
        (dst / 'v1.0-mini' / f'{t}.json').unlink()
    return str(dst)


def test_good_setup_passes(root):
    metric = build_metric(root, osp.join(root, 'nuscenes_infos_val.pkl'))
    metric.dataset_meta = dict(classes=CLASSES, version='v1.0-mini')   # no error


def test_f31_missing_tables_fail_when_the_test_loop_is_built(root, tmp_path):
    """F31: no devkit tables under data_root: EvaluationSetupError listing them, raised by mmengine's TestLoop
    constructor (before ``run``, i.e. before any inference); one missing table is named alone."""
    from mmengine.evaluator import Evaluator
    from mmengine.runner import TestLoop
    from torch.utils.data import DataLoader

    from epropnp_det.evaluation.metrics.nus_multicam_metric import EvaluationSetupError
    empty_root = tmp_path / 'no_tables'
    empty_root.mkdir()
    metric = build_metric(str(empty_root), osp.join(root, 'nuscenes_infos_val.pkl'))
    ds = build_dataset(root, [], test_mode=True, ann_file='nuscenes_infos_val.pkl')
    runner = SimpleNamespace(visualizer=SimpleNamespace(dataset_meta=None))
    with pytest.raises(EvaluationSetupError) as e:
        TestLoop(runner, DataLoader(ds, batch_size=1, collate_fn=lambda x: x), Evaluator([metric]))
    msg = str(e.value)
    assert f'the nuScenes devkit tables are missing from {empty_root}/v1.0-mini' in msg
    assert msg.count('.json') == 13 and 'format_only=True' in msg

    data_root = tables_copy(root, tmp_path, drop=('sample_annotation',))
    metric = build_metric(data_root, osp.join(root, 'nuscenes_infos_val.pkl'))
    with pytest.raises(EvaluationSetupError, match=r'v1.0-mini: sample_annotation.json; scoring needs'):
        metric.dataset_meta = dict(classes=CLASSES, version='v1.0-mini')


def test_f32_test_split_needs_format_only_and_then_no_tables(root, tmp_path):
    """F32: v1.0-test without format_only: error before inference; with format_only it needs no tables and still
    writes the submission (one entry per sample)."""
    import torch
    from mmengine.structures import InstanceData

    from epropnp_det.evaluation.metrics.nus_multicam_metric import EvaluationSetupError
    data = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))
    data['metainfo']['version'] = 'v1.0-test'
    ann = str(tmp_path / 'nuscenes_infos_test.pkl')
    mmengine.dump(data, ann)
    meta = dict(classes=CLASSES, version='v1.0-test')
    with pytest.raises(EvaluationSetupError, match='v1.0-test has no public annotations.*format_only=True'):
        build_metric(str(tmp_path / 'nothing'), ann).dataset_meta = meta
    metric = build_metric(str(tmp_path / 'nothing'), ann, format_only=True, jsonfile_prefix=str(tmp_path / 'sub'))
    metric.dataset_meta = meta
    preds = []
    for idx in range(6 * len(data['data_list'])):
        p = InstanceData()
        p.bboxes_3d = torch.zeros(0, 9)
        p.scores_3d = torch.zeros(0)
        p.labels_3d = torch.zeros(0, dtype=torch.long)
        preds.append(dict(pred_instances_3d=p, sample_idx=idx))
    metric.process({}, preds)
    assert metric.evaluate(len(preds)) == {}
    sub = mmengine.load(str(tmp_path / 'sub' / 'results_nusc.json'))
    assert sorted(sub['results']) == sorted(i['token'] for i in data['data_list'])


def test_f33_info_file_not_the_eval_split(root, tmp_path):
    """F33: a val info file missing one sample of the devkit split: error naming both counts (the devkit would
    reject the submission only after inference)."""
    from epropnp_det.evaluation.metrics.nus_multicam_metric import EvaluationSetupError
    data = mmengine.load(osp.join(root, 'nuscenes_infos_val.pkl'))
    dropped = data['data_list'].pop(1)['token']
    ann = str(tmp_path / 'nuscenes_infos_val.pkl')
    mmengine.dump(data, ann)
    with pytest.raises(EvaluationSetupError, match=r"has 1 samples but the devkit's 'mini_val' split .* has 2 "
                                                   rf"\(1 missing from the info file, e.g. \['{dropped}'\]"):
        build_metric(root, ann).dataset_meta = dict(classes=CLASSES, version='v1.0-mini')


def test_f34_version_mismatch(root):
    """F34: a v1.0-mini info file with a dataset declaring v1.0-trainval: error before inference."""
    from epropnp_det.evaluation.metrics.nus_multicam_metric import EvaluationSetupError
    with pytest.raises(EvaluationSetupError, match="is a v1.0-mini info file but the dataset says version "
                                                   "'v1.0-trainval'"):
        build_metric(root, osp.join(root, 'nuscenes_infos_val.pkl')).dataset_meta = dict(
            classes=CLASSES, version='v1.0-trainval')


def test_f35_missing_ann_file(root, tmp_path):
    """F35: the metric's ann_file does not exist: error before inference naming it."""
    from epropnp_det.evaluation.metrics.nus_multicam_metric import EvaluationSetupError
    ann = str(tmp_path / 'nope.pkl')
    with pytest.raises(EvaluationSetupError, match=f'ann_file not found: {ann}'):
        build_metric(root, ann).dataset_meta = dict(classes=CLASSES, version='v1.0-mini')
