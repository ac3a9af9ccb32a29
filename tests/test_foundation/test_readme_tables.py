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


@pytest.mark.parametrize('doc', ['README.md', 'docs/gpu.md', 'docs/results/README.md'])
def test_tables_are_up_to_date(doc):
    tool = _tool()
    text = open(os.path.join(REPO, doc), encoding='utf-8').read()
    new, changed = tool.render_text(text, doc)
    assert not changed, f'{doc}: tables {changed} differ from docs/results; run python tools/make_readme_tables.py'
    assert new == text


def test_readme_results_table_is_placed_and_carries_the_json():
    tool = _tool()
    placed = tool.placed_tables()
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
