"""tools/benchmarks: table formatting, metric extraction and file discovery on fake inputs (no model, no data)."""
import json
import math
import os
import os.path as osp
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tools', 'benchmarks'))

import _bench_common  # noqa: E402
import detector_speed  # noqa: E402
import synthetic_vs_fcos3d as svf  # noqa: E402

PFX = 'NuScenes metric/pred_instances_3d_NuScenes/'


def fake_metrics(nds, map_, aoe):
    m = {PFX + k: v for k, v in dict(NDS=nds, mAP=map_, mATE=0.5, mASE=0.25, mAOE=aoe, mAVE=1.0, mAAE=0.75).items()}
    m.update({PFX + 'car_AP_dist_1.0': 0.3, 'NuScenes metric/pred_instances_NuScenes/NDS': 0.99, 'time': 1.0})
    return m


def table_rows(text):
    return [[c.strip() for c in line.strip('|').split('|')] for line in text.splitlines() if line.startswith('| ')]


def test_format_table_alignment_and_values():
    out = _bench_common.format_table(['a', 'bb'], [[1.23456, None], ['x', 2]], title='T')
    lines = out.splitlines()
    assert lines[0] == 'T'
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns
    assert table_rows(out) == [['a', 'bb'], ['1.2346', 'n/a'], ['x', '2']]


def test_extract_prefers_3d_metrics():
    m = svf.extract_nus_metrics(fake_metrics(0.41, 0.3, 0.2))
    assert m == dict(NDS=0.41, mAP=0.3, mATE=0.5, mASE=0.25, mAOE=0.2, mAVE=1.0, mAAE=0.75)
    assert svf.extract_nus_metrics({'x/NDS': 0.1})['mAP'] is None


def test_read_metrics_json_and_newest(tmp_path):
    for ts, nds in (('20260101_000000', 0.1), ('20260102_000000', 0.2)):
        d = tmp_path / 'test' / ts
        d.mkdir(parents=True)
        (d / f'{ts}.json').write_text(json.dumps(fake_metrics(nds, 0.1, 0.3)))
    (tmp_path / 'test' / '20260102_000000' / 'other.json').write_text('{}')  # not a metrics file
    newest = svf.newest_test_json(str(tmp_path / 'test'))
    assert newest.endswith('20260102_000000/20260102_000000.json')
    assert svf.read_metrics_json(newest)['NDS'] == 0.2
    assert svf.newest_test_json(str(tmp_path / 'none')) is None
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'loss': 1.0}))
    with pytest.raises(ValueError, match='no nuScenes'):
        svf.read_metrics_json(str(bad))
    with pytest.raises(FileNotFoundError, match='missing.json'):
        svf.read_metrics_json(str(tmp_path / 'missing.json'))


def test_find_checkpoint(tmp_path):
    assert svf.find_checkpoint(str(tmp_path)) is None
    (tmp_path / 'iter_100.pth').write_bytes(b'0')
    (tmp_path / 'iter_200.pth').write_bytes(b'0')
    os.utime(tmp_path / 'iter_100.pth', (1, 1))
    assert svf.find_checkpoint(str(tmp_path)).endswith('iter_200.pth')
    # mmengine's last_checkpoint file wins, even when it names an absolute path from another machine
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/iter_100.pth')
    assert svf.find_checkpoint(str(tmp_path)).endswith('iter_100.pth')


def test_format_comparison_values_and_verdict():
    rows = [dict(model='epropnp', metrics=svf.extract_nus_metrics(fake_metrics(0.45, 0.35, 0.20)), source='a'),
            dict(model='fcos3d', metrics=svf.extract_nus_metrics(fake_metrics(0.40, 0.30, 0.50)), source='b'),
            dict(model='other', error='config does not exist (yet)')]
    out = svf.format_comparison(rows)
    rows_txt = table_rows(out)
    assert rows_txt[0] == ['model', 'NDS', 'mAP', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE']
    assert rows_txt[1] == ['epropnp', '0.4500', '0.3500', '0.5000', '0.2500', '0.2000', '1.0000', '0.7500']
    assert rows_txt[3] == ['other'] + ['n/a'] * 7
    assert 'ΔNDS = +0.0500, ΔmAOE = -0.3000 rad' in out and 'paper ordering holds' in out
    assert 'config does not exist (yet)' in out
    # reversed ordering: the first model is behind on mAOE
    rows[1]['metrics']['mAOE'] = 0.1
    assert 'does not hold' in svf.format_comparison(rows[:2])


def test_format_speed_table_and_timing():
    rows = [dict(model='fcos3d', batch_size=2, input_hw='360x640', padded_hw='384x640', params_m=12.4758,
                 train_step_s=1.23456, infer_per_img_s=0.3141, peak_rss_mib=1271.5, rss_growth_mib=702.4,
                 loadavg=2.0, repeats=5, threads=2, error=None),
            dict(model='epropnp', error='config does not exist')]
    out = detector_speed.format_speed_table(rows)
    r = table_rows(out)
    assert r[1] == ['fcos3d', '2', '360x640 (384x640)', '12.48', '1.235', '0.314', '1272', '702', '2.0']
    assert r[2][0] == 'epropnp' and 'skipped: config does not exist' in r[2][2]
    assert 'median of 5' in out and 'threads=2' in out
    calls = []
    fake_times = iter([0, 1, 10, 12, 20, 23, 30, 34, 40, 45, 50, 56, 60, 67])  # durations 1..7 s
    detector_speed.time.perf_counter, orig = (lambda: next(fake_times)), detector_speed.time.perf_counter
    try:
        med = detector_speed.timed_median(calls.append, repeats=5, warmup=2, setup=lambda: 'x')
    finally:
        detector_speed.time.perf_counter = orig
    assert calls == ['x'] * 7 and med == 5  # median of the timed durations 3, 4, 5, 6, 7
    with pytest.raises(SystemExit):
        detector_speed.parse_args(['--repeats', '3'])


def test_data_root_options_follow_wrappers():
    from mmengine.config import Config
    cfg = Config(dict(
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(data_root='old/'))),
        val_dataloader=dict(dataset=dict(data_root='old/')), test_dataloader=dict(dataset=dict(data_root='old/')),
        val_evaluator=dict(data_root='old/', ann_file='old/nuscenes_infos_val.pkl'),
        test_evaluator=[dict(type='A', ann_file='old/x.pkl')]))
    opts = _bench_common.data_root_options(cfg, '/new')
    assert opts == {'train_dataloader.dataset.dataset.data_root': '/new/', 'val_dataloader.dataset.data_root': '/new/',
                    'test_dataloader.dataset.data_root': '/new/', 'val_evaluator.data_root': '/new/',
                    'val_evaluator.ann_file': '/new/nuscenes_infos_val.pkl', 'test_evaluator.0.ann_file': '/new/x.pkl'}
    _bench_common.set_data_root(cfg, '/new')
    assert cfg.train_dataloader.dataset.dataset.data_root == '/new/' and cfg.test_evaluator[0].ann_file == '/new/x.pkl'
    assert math.isclose(cfg.train_dataloader.dataset.times, 2)


def test_train_step_breakdown_table_nests_head_stages_and_sums():
    import train_step_breakdown as tsb
    times = {'data preprocessor': 0.01, 'backbone + neck forward': 0.6, 'head loss forward': 0.3, 'backward': 0.9,
             'optimizer step': 0.05, 'MC pose loss (solve + AMIS)': 0.12, 'FCOS forward': 0.08}
    times['train step'] = sum(times[k] for k in tsb.TOP)
    rows = table_rows(tsb.format_breakdown(times, 'T'))
    labels = [r[0] for r in rows[1:]]
    assert labels[:3] == ['data preprocessor', 'backbone + neck forward', 'head loss forward']
    # sub-stages follow their parent in call order; absent ones are left out
    assert labels[3:5] == ['FCOS forward', 'MC pose loss (solve + AMIS)']
    assert labels[-1] == 'train step' and rows[-1][1:] == ['1860.0', '100.0']
    assert rows[labels.index('backward') + 1][2] == f'{100 * 0.9 / 1.86:.1f}'


def test_write_json_records_meta_and_rows(tmp_path):
    path = tmp_path / 'sub' / 'r.json'
    _bench_common.write_json(str(path), [dict(a=1)], ['--x', '2'], settings=dict(k=3))
    data = json.loads(path.read_text())
    assert data['rows'] == [dict(a=1)] and data['settings'] == dict(k=3)
    meta = data['meta']
    assert meta['command'].endswith('--x 2') and meta['cpus'] >= 1 and len(meta['date']) == 10
    assert set(meta) >= {'date', 'time_utc', 'host', 'torch', 'commit', 'cuda_device'}
    _bench_common.write_json(None, [dict(a=1)])  # no path: nothing written, no error


def test_every_benchmark_has_the_json_option():
    """Every script under tools/benchmarks offers ``--json PATH`` (results for docs/results/)."""
    import subprocess
    scripts = sorted(f for f in os.listdir(osp.join(REPO, 'tools', 'benchmarks'))
                     if f.endswith('.py') and not f.startswith('_'))
    assert len(scripts) >= 9
    for f in scripts:
        out = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'benchmarks', f), '--help'],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 0, (f, out.stderr[-1000:])
        assert '--json' in out.stdout, f


def test_data_loading_times_each_transform_and_sizes_workers():
    """tools/benchmarks/data_loading.py on a fake dataset whose two transforms sleep 20 ms and 5 ms: each is timed
    on its own, in order, and the table prints the workers a step needs."""
    import time
    import types

    import data_loading

    def slow(results):
        time.sleep(0.02)
        return results

    def fast(results):
        time.sleep(0.005)
        return dict(results, done=True)
    ds = types.SimpleNamespace(pipeline=types.SimpleNamespace(transforms=[slow, fast]))
    from collections import defaultdict
    times = defaultdict(list)
    data_loading._timed_pipeline(ds, times)
    out = {}
    for t in ds.pipeline.transforms:
        out = t(out)
    assert out == dict(done=True) and list(times) == ['0:function', '1:function']
    assert 0.02 <= times['0:function'][0] < 0.05 and 0.005 <= times['1:function'][0] < 0.02
    row = dict(config='c.py', samples=4, batch=3, num_workers=1, sample_ms_mean=50.0, sample_ms_median=50.0,
               samples_per_s_per_worker=20.0, workers_needed={'0.2': math.ceil(3 * 0.05 / 0.2),
                                                             '0.1': math.ceil(3 * 0.05 / 0.1)},
               transforms_ms={'0:function': 40.0, '1:function': 10.0})
    text = data_loading.format_rows([row], [0.2, 0.1])
    assert table_rows(text)[1] == ['c.py', '3', '50.0', '20.0', '1', '2', '1']
