"""Render the result and timing tables of the Markdown docs from the JSON records under ``docs/results/``.

A table lives between two marker comments in a Markdown file::

    <!-- table:NAME -->
    | ... generated ... |
    <!-- /table:NAME -->

and ``NAME`` is a key of :data:`TABLES` (which JSON file, which renderer). Only the text between the markers is
rewritten. Usage::

    python tools/make_readme_tables.py            # rewrite the tables of the files in DOCS
    python tools/make_readme_tables.py --check    # exit 1 and name every table that is out of date

``tests/test_foundation/test_readme_tables.py`` runs ``--check``'s logic in the default test suite. The JSON files
are written by the benchmark scripts (``tools/benchmarks/*.py --json docs/results/NAME.json``) or, for figures
measured before the scripts wrote JSON, carry those figures unchanged with their date, machine and command
(``provenance`` field). Numbers are printed with Python's ``g`` format unless a renderer says otherwise.
"""
import argparse
import json
import os.path as osp
import re
import sys
from typing import Callable, Dict, List, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'docs', 'results')
#: Markdown files whose tables are generated (relative to the repository root)
DOCS = ('README.md', osp.join('docs', 'gpu.md'), osp.join('docs', 'results', 'README.md'),
        osp.join('docs', 'pnp_layer.md'))
#: table name -> the docs/results file it shows; a new measurement (``--json docs/results/NAME_DATE.json``) is shown
#: by pointing its table here at the new file
SOURCES: Dict[str, str] = {
    'synthetic-results': 'synthetic_training_cpu_2026-11.json',
    'synthetic-all-runs': 'synthetic_training_cpu_2026-11.json',
    'pnp-vs-original-cuda': 'pnp_layer_vs_original_cuda_h200_2026-12-04.json',
    'pnp-vs-original-cpu': 'pnp_layer_vs_original_cpu_native_2026-12-06.json',
    'pnp-graphs-vs-eager-cuda': 'pnp_layer_graphs_vs_eager_cuda_h200_2026-12-04.json',
    'pnp-vs-original-cpu-compiled': 'pnp_layer_vs_original_cpu_auto_2026-11-24.json',
    'pnp-accuracy-cpu': 'pnp_layer_accuracy_cpu_native_2026-12-06.json',
    'pnp-first-call-cpu': 'pnp_first_call_cpu_native_cold_2026-12-06.json',
    'step-overhead-cuda': 'step_overhead_cuda_h200_2026-12-04.json',
    'step-overhead-cpu': 'step_overhead_cpu_2026-12-06.json',
    'step-overhead-device-path': 'step_overhead_device_path_cpu_2026-12-06.json',
    'data-loading': 'data_loading_cpu_2026-12-05.json',
    'demo-speed': 'demo_speed_cpu_2026-12-04.json',
    'pitch-roll': 'pitch_roll_accuracy_cpu_2026-12-04.json',
}
#: table name -> a second file the table shows beside its source (same script, another setting)
COMPANIONS: Dict[str, str] = {
    'pnp-first-call-cpu': 'pnp_first_call_cpu_native_warm_2026-12-06.json',  # the same rows with the build cached
}
MARKER = re.compile(r'<!-- table:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->', re.S)


def load(name: str) -> dict:
    with open(osp.join(RESULTS, name), encoding='utf-8') as f:
        return json.load(f)


def _g(v) -> str:
    return '' if v is None else f'{v:g}'


def md_table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in r) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------------------------------------ training runs
TRAINING = SOURCES['synthetic-results']
METRICS = ('NDS', 'mAP', 'mATE', 'mASE', 'mAOE')


def _run_cells(r: dict, best: Dict[str, float]) -> List[str]:
    cfg = osp.splitext(r['config'][len('configs/'):])[0]
    sched = str(r['schedule_iters'])
    if r['lr_decays']:
        sched += ' (lr ÷10 at ' + ', '.join(str(i) for i in r['lr_decays']) + ')'
    cells = [f'`{cfg}`' + (f', {r["change"]}' if r['change'] else ''), r['train_set'], sched,
             str(r['iteration']) + (', flip TTA' if r['flip_tta'] else '')]
    for k in METRICS:
        v = f'{r["metrics"][k]:.4f}' if k in ('NDS', 'mAP') else f'{r["metrics"][k]:.3f}'
        cells.append(f'**{v}**' if k in best and r['metrics'][k] == best[k] else v)
    return cells


def render_training(rows: List[dict]) -> str:
    best = {k: max(r['metrics'][k] for r in rows) for k in ('NDS', 'mAP')}
    return md_table(['config', 'train set', 'schedule (iterations of batch 2)', 'evaluated at'] + list(METRICS),
                    [_run_cells(r, best) for r in rows])


def table_synthetic_summary() -> str:
    return render_training([r for r in load(TRAINING)['rows'] if r['readme']])


def table_synthetic_all_runs() -> str:
    return render_training(load(TRAINING)['rows'])


# ------------------------------------------------------------------------------------------------ PnP layer
_PNP_ROW_NAMES = {'mc_train': 'MC loss train step', 'gn_infer': 'GN inference',
                  'deriv_reg': 'derivative regularisation'}


def _pnp_row_label(r: dict) -> str:
    """'MC loss train step (144, 256, 512)' from a ``pnp_layer.py`` row (``name``, ``N``, ``n``, ``K``)."""
    dims = (r['N'], r['n']) + ((r['K'],) if r['K'] else ())
    return _PNP_ROW_NAMES[r['name'].rsplit('_', 1)[0]] + ' (' + ', '.join(str(d) for d in dims) + ')'


def pnp_vs_original_rows(data: dict) -> List[dict]:
    """Rows ``{row, ours_s, original_s, speedup_*, *_first_call_s}`` from either layout: as carried by hand, or as
    ``pnp_layer.py --original PATH --interleave --json`` writes it (``interleaved``: ``name, N, n, K, ours, orig,
    ratio, ratio_min, ratio_max, first_ours, first_orig``; times rounded to ms, first calls to 10 ms)."""
    if 'rows' in data:
        return data['rows']
    out = []
    for r in data['interleaved']:
        out.append(dict(row=_pnp_row_label(r), ours_s=round(r['ours'], 3), original_s=round(r['orig'], 3),
                        speedup_median=r['ratio'], speedup_min=r['ratio_min'], speedup_max=r['ratio_max'],
                        ours_first_call_s=round(r['first_ours'], 2), original_first_call_s=round(r['first_orig'], 2)))
    return out


def _vs_original(name: str) -> str:
    rows = [[r['row'], _g(r['ours_s']), _g(r['original_s']),
             f'{r["speedup_median"]:.2f}× ({r["speedup_min"]:.2f}–{r["speedup_max"]:.2f})',
             _g(r['ours_first_call_s']), _g(r['original_first_call_s'])] for r in pnp_vs_original_rows(load(name))]
    return md_table(['row (N, n, K)', 'ours s', 'original s', 'speed-up (min–max)', 'ours 1st call s',
                     'original 1st call s'], rows)


def table_pnp_vs_original_cuda() -> str:
    return _vs_original(SOURCES['pnp-vs-original-cuda'])


def table_pnp_vs_original_cpu() -> str:
    return _vs_original(SOURCES['pnp-vs-original-cpu'])


def table_pnp_graphs_vs_eager_cuda() -> str:
    rows = [[r['name'], _g(r['graphs_s']), _g(r['eager_s']), f'{r["graphs_over_eager"]:g}×', str(r['ops_graphs']),
             str(r['ops_eager']), f'{r["t_err_graphs_m"]:.3f} / {r["t_err_eager_m"]:.3f}']
            for r in load(SOURCES['pnp-graphs-vs-eager-cuda'])['rows']]
    return md_table(['row', 'graphs s', 'eager s', 'graphs / eager', 'aten ops graphs', 'aten ops eager',
                     'accuracy (t err m, graphs / eager)'], rows)


def table_pnp_vs_original_cpu_compiled() -> str:
    rows = [[r['row'], f'{r["ours_s"]:.3f}', f'{r["original_s"]:.3f}', f'{r["speedup_median"]:.1f}×',
             f'{r["speedup_min"]:.1f}–{r["speedup_max"]:.1f}×']
            for r in load(SOURCES['pnp-vs-original-cpu-compiled'])['rows']]
    return md_table(['row (N, n, K)', 'ours s', 'original s', 'speed-up (median of pairs)', 'range over pairs'], rows)


def pnp_accuracy_rows(data: dict) -> List[dict]:
    """Rows ``{row, t_err_m, yaw_err_deg, pct_far, pct_agree, peak_mb}`` (each ``{ours, original}``) from either
    layout: as carried by hand, or as ``pnp_layer.py --original PATH --json`` writes it (``ours`` and ``original``
    lists of ``name, N, n, K, t_err, yaw_err, pct_far, pct_agree, peak_mb``; peak memory rounded to MB)."""
    if 'rows' in data:
        return data['rows']
    orig = {r['name']: r for r in data['original']}
    out = []
    for r in data['ours']:
        o = orig[r['name']]
        both = {k: dict(ours=r[src], original=o[src]) for k, src in (
            ('t_err_m', 't_err'), ('yaw_err_deg', 'yaw_err'), ('pct_far', 'pct_far'), ('pct_agree', 'pct_agree'))}
        both['peak_mb'] = dict(ours=round(r['peak_mb']), original=round(o['peak_mb']))
        out.append(dict(row=_pnp_row_label(r), **both))
    return out


def table_pnp_accuracy_cpu() -> str:
    def pair(d, fmt):
        return f'{d["ours"]:{fmt}} / {d["original"]:{fmt}}'
    rows = [[r['row'], pair(r['t_err_m'], '.3f'), pair(r['yaw_err_deg'], '.2f'), pair(r['pct_far'], '.1f'),
             pair(r['pct_agree'], '.3g'), pair(r['peak_mb'], 'g')]
            for r in pnp_accuracy_rows(load(SOURCES['pnp-accuracy-cpu']))]
    return md_table(['row (N, n, K)', 't err m (ours / orig)', 'yaw °', '> 1 m %', 'agree % (ours / orig)',
                     'peak MB (ours / orig)'], rows)


def table_pnp_first_call_cpu() -> str:
    """Cold: an empty native-kernel cache per row (the first call includes the C++ build); warm: a cached build."""
    cold = load(SOURCES['pnp-first-call-cpu'])['rows']
    warm = {r['name']: r for r in load(COMPANIONS['pnp-first-call-cpu'])['rows']}
    rows = [[r['name'], f'{r["first_call_s"]:.2f}', f'{warm[r["name"]]["first_call_s"]:.2f}',
             f'{warm[r["name"]]["second_call_s"]:.2f}'] for r in cold]
    return md_table(['function (problem)', '1st call s, fresh machine (C++ build included)',
                     '1st call s, build cached', '2nd call s'], rows)


# ------------------------------------------------------------------------------------------------ train steps
def step_rows(data: dict) -> List[dict]:
    """Rows ``{config, batch, precision, aten_ops, host_syncs, step_ms, ref_*}`` from either layout: as carried by
    hand, or as ``step_overhead.py --json`` writes it (``ops_fwd_bwd``, ``syncs``, ``step_s``, ``amp`` and a
    parallel ``ref`` list from ``--ref-tree``)."""
    rows = data['rows']
    if not rows or 'step_ms' in rows[0]:
        return rows
    ref = data.get('ref') or [None] * len(rows)
    return [dict(config=f'`{r["config"]}`', batch=r['batch'], precision=r['amp'], aten_ops=r['ops_fwd_bwd'],
                 host_syncs=r['syncs'], step_ms=r['step_s'] * 1e3,
                 ref_aten_ops=q and q['ops_fwd_bwd'], ref_syncs=q and q['syncs'],
                 ref_step_ms=q and q['step_s'] * 1e3) for r, q in zip(rows, ref)]


def table_step_overhead_cuda() -> str:
    rows = [[r['config'], str(r['batch']), r['precision'], str(r['aten_ops']), str(r['host_syncs']),
             f'{r["step_ms"]:.1f}', _g(r['ref_aten_ops']), _g(r['ref_syncs']),
             '' if r['ref_step_ms'] is None else f'{r["ref_step_ms"]:.1f}']
            for r in step_rows(load(SOURCES['step-overhead-cuda']))]
    return md_table(['config', 'batch', 'precision', 'aten ops', 'host syncs', 'step ms (median)', 'ref aten ops',
                     'ref syncs', 'ref step ms'], rows)


def table_step_overhead_cpu() -> str:
    data = load(SOURCES['step-overhead-cpu'])
    if data['rows'] and 'variant' in data['rows'][0]:  # the hand-carried layout of 2026-12-04
        rows = [[r['variant'], str(r['aten_ops']), str(r['syncs']), _g(r['step_ms'])] for r in data['rows']]
        return md_table(['', 'aten ops fwd+bwd', 'syncs fwd+bwd', 'step ms'], rows)
    ref = data.get('ref') or [None] * len(data['rows'])
    rows = [[f'`{r["config"]}`', r['amp'], str(r['ops_fwd_bwd']), str(r['syncs']), f'{r["step_s"] * 1e3:.0f}',
             '' if q is None else str(q['ops_fwd_bwd']), '' if q is None else str(q['syncs']),
             'failed' if q is None else f'{q["step_s"] * 1e3:.0f}',
             '' if q is None else f'{q["step_s"] / r["step_s"]:.2f}×'] for r, q in zip(data['rows'], ref)]
    return md_table(['config', 'precision', 'aten ops fwd+bwd', 'syncs fwd+bwd', 'step ms (median)', 'ref aten ops',
                     'ref syncs', 'ref step ms', 'ref / now step time'], rows)


def table_step_overhead_device_path() -> str:
    data = load(SOURCES['step-overhead-device-path'])
    ref = data.get('ref') or [None] * len(data['rows'])
    rows = []
    for r, q in zip(data['rows'], ref):
        q_ops = None if q is None else (q.get('est_gpu_ops_fwd_bwd') or q['ops_fwd_bwd'])
        rows.append([f'`{r["config"]}`', str(r['batch']), str(r['ops_fwd_bwd']), str(r['est_gpu_ops_fwd_bwd']),
                     str(r['syncs']), '' if q is None else str(q_ops), '' if q is None else str(q['syncs']),
                     '' if q is None else f'{q_ops / r["est_gpu_ops_fwd_bwd"]:.2f}×'])
    return md_table(['config', 'batch', 'aten ops on the CPU', 'est. GPU launches', 'host syncs', 'ref launches',
                     'ref host syncs', 'ref / now launches'], rows)


def table_data_loading() -> str:
    data = load(SOURCES['data-loading'])
    steps = sorted({s for r in data['rows'] for s in r['workers_needed']}, key=float)
    rows = [[f'`{r["config"]}`', str(r['batch']), f'{r["sample_ms_mean"]:.1f}', f'{r["samples_per_s_per_worker"]:.0f}']
            + [str(r['workers_needed'][s]) for s in steps] + [str(r['num_workers']),
               _g(round(r['loader_batches_per_s'], 1)) if 'loader_batches_per_s' in r else '']
            for r in data['rows']]
    return md_table(['config', 'batch', 'ms per sample', 'samples/s per worker'] +
                    [f'workers for a {s} s step' for s in steps] + ['config num_workers', 'loader batches/s'], rows)


# ------------------------------------------------------------------------------------------------ demo
def table_demo_speed() -> str:
    rows = [[r['device'].upper() if r['device'] == 'cpu' else r['device'], str(r['batch']),
             f'{r["model_img_s"]:.2f}', f'{r["demo_img_s"]:.2f}', f'{r["demo_ms_per_img"]:.0f}']
            for r in load(SOURCES['demo-speed'])['rows']]
    return md_table(['device', 'batch', 'model img/s', 'demo img/s', 'demo ms/img'], rows)


def pitch_roll_rows(data: dict) -> List[dict]:
    """Rows per tilted camera ``{pitch_deg, roll_deg, rectified|replicate|raw: {recall_ratio, centre_ratio}}``,
    from either layout: as carried by hand, or as ``pitch_roll_accuracy.py --json`` writes it (one row per camera
    and path)."""
    rows = data['rows']
    if not rows or 'path' not in rows[0]:
        return rows
    names = {'rectified': 'rectified', 'rectified, replicated border': 'replicate', 'raw': 'raw'}
    out: Dict[tuple, dict] = {}
    for r in rows:
        if r['path'] in names:
            key = (r['pitch'], r['roll'])
            out.setdefault(key, dict(pitch_deg=r['pitch'], roll_deg=r['roll']))[names[r['path']]] = dict(
                recall_ratio=r['recall_ratio'], centre_ratio=r['centre_ratio'])
    return list(out.values())


def table_pitch_roll() -> str:
    def sign(v):
        return ('+' if v > 0 else '−' if v < 0 else '') + f'{abs(v):g}°'

    rows = [[f'{sign(r["pitch_deg"])}, {sign(r["roll_deg"])}'] +
            [f'{r[k]["recall_ratio"]:.2f} / {r[k]["centre_ratio"]:.2f}' for k in ('rectified', 'replicate', 'raw')]
            for r in pitch_roll_rows(load(SOURCES['pitch-roll']))]
    return md_table(['camera (pitch, roll)', 'rectified recall / centre', 'replicate recall / centre',
                     'raw recall / centre'], rows)


#: table name -> renderer (each reads its docs/results/*.json)
TABLES: Dict[str, Callable[[], str]] = {
    'synthetic-results': table_synthetic_summary,
    'synthetic-all-runs': table_synthetic_all_runs,
    'pnp-vs-original-cuda': table_pnp_vs_original_cuda,
    'pnp-vs-original-cpu': table_pnp_vs_original_cpu,
    'pnp-graphs-vs-eager-cuda': table_pnp_graphs_vs_eager_cuda,
    'pnp-vs-original-cpu-compiled': table_pnp_vs_original_cpu_compiled,
    'pnp-accuracy-cpu': table_pnp_accuracy_cpu,
    'pnp-first-call-cpu': table_pnp_first_call_cpu,
    'step-overhead-cuda': table_step_overhead_cuda,
    'step-overhead-cpu': table_step_overhead_cpu,
    'step-overhead-device-path': table_step_overhead_device_path,
    'data-loading': table_data_loading,
    'demo-speed': table_demo_speed,
    'pitch-roll': table_pitch_roll,
}


def render_text(text: str, where: str = '<text>') -> Tuple[str, List[str]]:
    """Markdown text with every marked table re-rendered, and the names of the tables that changed."""
    changed = []

    def sub(m):
        name = m.group('name')
        if name not in TABLES:
            raise KeyError(f'{where}: unknown table {name!r} (known: {sorted(TABLES)})')
        body = TABLES[name]()
        if body != m.group('body'):
            changed.append(name)
        return f'<!-- table:{name} -->\n{body}<!-- /table:{name} -->'

    return MARKER.sub(sub, text), changed


def placed_tables(root: str = REPO) -> Dict[str, str]:
    """Table name -> the doc that holds it."""
    out = {}
    for doc in DOCS:
        path = osp.join(root, doc)
        if osp.isfile(path):
            for m in MARKER.finditer(open(path, encoding='utf-8').read()):
                out[m.group('name')] = doc
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--check', action='store_true', help='do not write; exit 1 if a table is out of date')
    args = p.parse_args(argv)
    stale = []
    for doc in DOCS:
        path = osp.join(REPO, doc)
        if not osp.isfile(path):
            continue
        text = open(path, encoding='utf-8').read()
        new, changed = render_text(text, doc)
        stale += [f'{doc}: {name}' for name in changed]
        if changed and not args.check:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(new)
    unplaced = sorted(set(TABLES) - set(placed_tables()))
    if unplaced:
        print('tables without markers in ' + ', '.join(DOCS) + ': ' + ', '.join(unplaced))
    if stale:
        print(('out of date: ' if args.check else 'rewritten: ') + '; '.join(stale))
        return 1 if args.check else 0
    print('all tables up to date')
    return 0


if __name__ == '__main__':
    sys.exit(main())
