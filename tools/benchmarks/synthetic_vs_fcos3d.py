"""EPro-PnP-Det vs mmdet3d's FCOS3D on the synthetic val split: one table of nuScenes metrics.

Usage (from the repository root, after training both models with ``tools/train.py``)::

    python tools/benchmarks/synthetic_vs_fcos3d.py                         # run both tests, print the table
    python tools/benchmarks/synthetic_vs_fcos3d.py --reuse                 # only read the last test metrics
    python tools/benchmarks/synthetic_vs_fcos3d.py --data-root /tmp/synth  # another dataset root
    python tools/benchmarks/synthetic_vs_fcos3d.py --configs A.py B.py --checkpoints a.pth b.pth \\
        --work-dirs work_dirs/a work_dirs/b
    python tools/benchmarks/synthetic_vs_fcos3d.py --metrics-json a/…/2026….json b/…/2026….json

Defaults: ``--configs configs/epropnp_det_r18_synthetic.py configs/baselines/fcos3d_r18_synthetic.py``, work
dirs ``work_dirs/<config name>`` (what ``tools/train.py`` uses), checkpoint = the one named in the work dir's
``last_checkpoint`` file (else the newest ``iter_*.pth`` / ``epoch_*.pth``).

For each model this runs ``python tools/test.py CONFIG CKPT --work-dir <work dir>/test`` (test split =
the config's ``test_dataloader``, the synthetic mini_val; evaluator = the config's ``test_evaluator``). mmengine writes
the metrics of every test run to ``<work dir>/test/<timestamp>/<timestamp>.json``; the table is read from those
files (``--reuse`` skips the test and takes the newest such file; ``--metrics-json`` names the files). The first
model is compared with each further one: ΔNDS (higher is better) and ΔmAOE (lower is better) — the paper's claim
is that EPro-PnP-Det is ahead of FCOS3D on both.

Metrics: NDS, mAP, mATE (m), mASE (1−IoU), mAOE (rad), mAVE (m/s), mAAE (1−acc), nuScenes devkit definitions.

Note: torch ≥ 2.6 loads checkpoints with ``weights_only=True`` by default, which mmengine 0.10.7's own checkpoints
(they pickle a ``HistoryBuffer``) fail; the test subprocess therefore runs with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
(only ever use it with checkpoints you trust, e.g. your own).
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, add_json_option, data_root_options, format_table, model_name, write_json  # noqa: E402

DEFAULT_CONFIGS = ['configs/epropnp_det_r18_synthetic.py', 'configs/baselines/fcos3d_r18_synthetic.py']
METRICS = ('NDS', 'mAP', 'mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE')
HIGHER_IS_BETTER = {'NDS': True, 'mAP': True}  # the error metrics: lower is better


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--configs', nargs='+', default=DEFAULT_CONFIGS, help='configs (default: %(default)s)')
    p.add_argument('--checkpoints', nargs='+', default=None, help='one per config (default: from the work dirs)')
    p.add_argument('--work-dirs', nargs='+', default=None, help='one per config (default: work_dirs/<config name>)')
    p.add_argument('--data-root', default=None, help='dataset root overriding the configs\' data_root')
    p.add_argument('--reuse', action='store_true', help='do not test; read the newest <work dir>/test metrics json')
    p.add_argument('--metrics-json', nargs='+', default=None, help='metrics json per config (skips the tests)')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='extra options passed to every tools/test.py run')
    add_json_option(p)
    args = p.parse_args(argv)
    for name in ('checkpoints', 'work_dirs', 'metrics_json'):
        val = getattr(args, name)
        if val is not None and len(val) != len(args.configs):
            p.error(f'--{name.replace("_", "-")} needs one entry per config ({len(args.configs)}), got {len(val)}')
    return args


def extract_nus_metrics(metrics: Dict[str, float]) -> Dict[str, Optional[float]]:
    """Picks NDS, mAP and the five TP errors out of an mmengine metrics dict, whose keys look like
    ``'NuScenes metric/pred_instances_3d_NuScenes/NDS'`` (any prefix; ``pred_instances_3d`` preferred over
    e.g. ``pred_instances`` 2D results when both exist). Missing metrics map to ``None``."""
    out = {}
    for name in METRICS:
        cands = [k for k in metrics if k == name or k.endswith('/' + name)]
        cands.sort(key=lambda k: ('pred_instances_3d' not in k, len(k)))
        out[name] = float(metrics[cands[0]]) if cands else None
    return out


def read_metrics_json(path: str) -> Dict[str, Optional[float]]:
    """Reads one ``<timestamp>.json`` written by an mmengine test run (one JSON object, or JSON lines: the last
    line holding metrics wins)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'metrics json not found: {path}')
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise ValueError(f'empty metrics json: {path}')
    try:
        records = [json.loads(text)]
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    for rec in reversed(records):
        m = extract_nus_metrics(rec)
        if m['NDS'] is not None or m['mAP'] is not None:
            return m
    raise ValueError(f'{path} holds no nuScenes NDS/mAP metrics (keys: {sorted(records[-1])[:5]}...)')


def newest_test_json(test_dir: str) -> Optional[str]:
    """Newest ``<test_dir>/<timestamp>/<timestamp>.json`` (mmengine's per-run metrics file), or None."""
    files = [f for f in glob.glob(osp.join(test_dir, '*', '*.json'))
             if osp.basename(f) == osp.basename(osp.dirname(f)) + '.json']
    return max(files, key=lambda f: (osp.basename(f), osp.getmtime(f))) if files else None


def find_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint named in ``<work_dir>/last_checkpoint``, else the newest ``iter_*.pth``/``epoch_*.pth``."""
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            ckpt = f.read().strip()
        if ckpt and not osp.isfile(ckpt):  # a work dir moved or copied from elsewhere
            ckpt = osp.join(work_dir, osp.basename(ckpt))
        if ckpt and osp.isfile(ckpt):
            return ckpt
    ckpts = glob.glob(osp.join(work_dir, 'iter_*.pth')) + glob.glob(osp.join(work_dir, 'epoch_*.pth'))
    return max(ckpts, key=osp.getmtime) if ckpts else None


def run_test(config: str, checkpoint: str, test_dir: str, data_root: Optional[str],
             cfg_options: Optional[List[str]]) -> str:
    """Runs ``tools/test.py`` in a subprocess and returns the metrics json it wrote."""
    cmd = [sys.executable, osp.join(REPO, 'tools', 'test.py'), config, checkpoint, '--work-dir', test_dir]
    opts = []
    if data_root:
        from mmengine.config import Config
        opts += [f'{k}={v}' for k, v in data_root_options(Config.fromfile(config), data_root).items()]
    opts += list(cfg_options or [])
    if opts:
        cmd += ['--cfg-options', *opts]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    before = newest_test_json(test_dir)
    print(f'[synthetic_vs_fcos3d] $ {" ".join(cmd)}', file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f'tools/test.py failed for {config} (exit {proc.returncode})')
    after = newest_test_json(test_dir)
    if after is None or after == before:
        raise RuntimeError(f'tools/test.py wrote no metrics json under {test_dir}')
    return after


def format_comparison(rows: List[Dict]) -> str:
    """Table model × (NDS, mAP, mATE, mASE, mAOE, mAVE, mAAE) followed by, for each further row, the first row's
    NDS and mAOE difference and whether the first model is ahead on both. A row is ``dict(model=..., metrics=
    {name: value|None}, source=...)``, or ``dict(model=..., error=...)`` for a model without results."""
    header = ['model'] + list(METRICS)
    body = []
    for r in rows:
        if r.get('error'):
            body.append([r['model']] + ['n/a'] * len(METRICS))
        else:
            body.append([r['model']] + [r['metrics'].get(m) for m in METRICS])
    lines = [format_table(header, body, title='Synthetic nuScenes val (mini_val): nuScenes detection metrics')]
    for r in rows:
        if r.get('error'):
            lines.append(f'  {r["model"]}: {r["error"]}')
    ok = [r for r in rows if not r.get('error')]
    if rows and not rows[0].get('error'):
        first = rows[0]
        for other in ok[1:]:
            a, b = first['metrics'], other['metrics']
            if any(v is None or (isinstance(v, float) and math.isnan(v))
                   for v in (a['NDS'], b['NDS'], a['mAOE'], b['mAOE'])):
                lines.append(f'{first["model"]} vs {other["model"]}: NDS/mAOE missing, no verdict')
                continue
            d_nds, d_aoe = a['NDS'] - b['NDS'], a['mAOE'] - b['mAOE']
            verdict = ('ahead on both NDS and mAOE (paper ordering holds)' if d_nds > 0 and d_aoe < 0
                       else 'NOT ahead on both NDS and mAOE (paper ordering does not hold)')
            lines.append(f'{first["model"]} vs {other["model"]}: ΔNDS = {d_nds:+.4f}, ΔmAOE = {d_aoe:+.4f} rad -> '
                         f'{verdict}')
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    rows = []
    for i, config in enumerate(args.configs):
        name = model_name(config)
        cfg_path = config if osp.isabs(config) else osp.join(REPO, config)
        work_dir = args.work_dirs[i] if args.work_dirs else osp.join(REPO, 'work_dirs', name)
        try:
            if args.metrics_json:
                path = args.metrics_json[i]
            elif args.reuse:
                path = newest_test_json(osp.join(work_dir, 'test'))
                if path is None:
                    raise FileNotFoundError(f'no test metrics under {osp.join(work_dir, "test")} (run without --reuse)')
            else:
                if not osp.isfile(cfg_path):
                    raise FileNotFoundError(f'config does not exist (yet): {config}')
                ckpt = args.checkpoints[i] if args.checkpoints else find_checkpoint(work_dir)
                if ckpt is None or not osp.isfile(ckpt):
                    raise FileNotFoundError(f'no checkpoint in {work_dir} (train first: python tools/train.py '
                                            f'{config}) or pass --checkpoints')
                path = run_test(cfg_path, ckpt, osp.join(work_dir, 'test'), args.data_root, args.cfg_options)
            rows.append(dict(model=name, metrics=read_metrics_json(path), source=path))
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            print(f'[synthetic_vs_fcos3d] {name}: {e}', file=sys.stderr)
            rows.append(dict(model=name, error=str(e)))
    print(format_comparison(rows))
    for r in rows:
        if not r.get('error'):
            print(f'  {r["model"]}: {r["source"]}')
    write_json(args.json, rows, argv)
    return rows


if __name__ == '__main__':
    main()
