"""The generated tables of README.md / docs/gpu.md / docs/results/README.md match docs/results/*.json
(``tools/make_readme_tables.py``): a hand edit of a table, or a JSON change without rerunning the script, fails."""
import importlib.util
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location('_make_readme_tables',
                                                  os.path.join(REPO, 'tools', 'make_readme_tables.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize('doc', ['README.md', 'docs/gpu.md', 'docs/results/README.md', 'docs/pnp_layer.md'])
def test_tables_are_up_to_date(doc):
    tool = _tool()
    text = open(os.path.join(REPO, doc), encoding='utf-8').read()
    new, changed = tool.render_text(text, doc)
    assert not changed, f'{doc}: tables {changed} differ from docs/results; run python tools/make_readme_tables.py'
    assert new == text


def test_readme_results_table_is_placed_and_carries_the_json():
    tool = _tool()
    assert set(tool.SOURCES) == set(tool.TABLES)
    assert all(os.path.isfile(os.path.join(REPO, 'docs', 'results', f)) for f in tool.SOURCES.values())
    assert set(tool.COMPANIONS) <= set(tool.SOURCES)
    assert all(os.path.isfile(os.path.join(REPO, 'docs', 'results', f)) for f in tool.COMPANIONS.values())
    placed = tool.placed_tables()
    assert set(placed) == set(tool.TABLES), sorted(set(tool.TABLES) - set(placed))
    assert placed.get('synthetic-results') == 'README.md'
    for name in ('pnp-vs-original-cuda', 'pnp-graphs-vs-eager-cuda', 'step-overhead-cuda', 'pnp-vs-original-cpu',
                 'step-overhead-cpu'):
        assert placed.get(name) == os.path.join('docs', 'gpu.md'), name
    # every summary row's NDS / mAP appears in the README table, every other row does not
    rows = json.load(open(os.path.join(REPO, 'docs', 'results', 'synthetic_training_cpu_2026-11.json')))['rows']
    table = tool.table_synthetic_summary()
    assert len(table.strip().splitlines()) == 2 + sum(r['readme'] for r in rows)
    for r in rows:
        cell = f"{r['metrics']['NDS']:.4f} | " if r['readme'] else None
        if cell:
            assert cell in table.replace('**', ''), r['label']


def test_a_changed_figure_is_detected(tmp_path, monkeypatch):
    """Render against a copy of the results with one figure changed: the check names the table."""
    import shutil
    tool = _tool()
    res = tmp_path / 'results'
    shutil.copytree(os.path.join(REPO, 'docs', 'results'), res)
    path = res / 'synthetic_training_cpu_2026-11.json'
    data = json.loads(path.read_text())
    next(r for r in data['rows'] if r['readme'])['metrics']['mAP'] += 0.001
    path.write_text(json.dumps(data))
    monkeypatch.setattr(tool, 'RESULTS', str(res))
    text = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
    _, changed = tool.render_text(text)
    assert changed == ['synthetic-results']


def test_every_results_file_is_described_and_valid_json():
    folder = os.path.join(REPO, 'docs', 'results')
    index = open(os.path.join(folder, 'README.md'), encoding='utf-8').read()
    for name in sorted(os.listdir(folder)):
        if name.endswith('.json'):
            data = json.load(open(os.path.join(folder, name)))
            assert f'`{name}`' in index, name
            # when it was measured: a field, or the file name (files written by the scripts carry meta.date)
            assert data.get('date') or data.get('dates') or data.get('meta', {}).get('date') or \
                re.search(r'_\d{4}-\d{2}(-\d{2})?\.json$', name), name


def test_pitch_roll_rows_from_the_benchmark_json():
    """``pitch_roll_accuracy.py --json`` writes one row per camera and path; the table takes the same figures."""
    tool = _tool()
    hand = json.load(open(os.path.join(REPO, 'docs', 'results', 'pitch_roll_accuracy_cpu_2026-12-04.json')))
    script_rows = [dict(camera='level', pitch=0.0, roll=0.0, path='level', recall_ratio=1.0, centre_ratio=1.0)]
    paths = {'rectified': 'rectified', 'replicate': 'rectified, replicated border', 'raw': 'raw'}
    for r in hand['rows']:
        for k, path in paths.items():
            script_rows.append(dict(camera='x', pitch=r['pitch_deg'], roll=r['roll_deg'], path=path, **r[k]))
        script_rows.append(dict(camera='x', pitch=r['pitch_deg'], roll=r['roll_deg'], path='raw, tilt ignored',
                                recall_ratio=0.0, centre_ratio=9.0))
    got = tool.pitch_roll_rows(dict(rows=script_rows))
    assert got == [{k: r[k] for k in ('pitch_deg', 'roll_deg', 'rectified', 'replicate', 'raw')} for r in hand['rows']]


def test_step_rows_from_the_benchmark_json():
    """``step_overhead.py --json`` layout (seconds, ``ops_fwd_bwd``, a parallel ``ref`` list) → the table's rows."""
    tool = _tool()
    data = dict(rows=[dict(config='a.py', device='cuda', batch=2, amp='fp32', ops_fwd_bwd=5102, syncs=42,
                           ops_optimizer=7, step_s=0.1713, sync_sites=[])],
                ref=[dict(config='a.py', device='cuda', batch=2, amp='fp32', ops_fwd_bwd=13628, syncs=44,
                          ops_optimizer=7, step_s=0.2258, sync_sites=[])])
    (r,) = tool.step_rows(data)
    assert (r['config'], r['precision'], r['aten_ops'], r['host_syncs'], r['ref_aten_ops'], r['ref_syncs']) == \
        ('`a.py`', 'fp32', 5102, 42, 13628, 44)
    assert abs(r['step_ms'] - 171.3) < 1e-9 and abs(r['ref_step_ms'] - 225.8) < 1e-9
    hand = json.load(open(os.path.join(REPO, 'docs', 'results', 'step_overhead_cuda_h200_2026-12-04.json')))
    assert tool.step_rows(hand) == hand['rows']
