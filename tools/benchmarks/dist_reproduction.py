"""Does 2-process CPU training (gloo, DDP) reproduce single-process training at the same total batch?

Usage (from the repository root, with the synthetic data built)::

    python tools/benchmarks/dist_reproduction.py                       # 5 seeds x 4 iterations, r18 synthetic
    python tools/benchmarks/dist_reproduction.py --seeds 0 1 --iters 3 --data-root /tmp/tiny_nus

For every seed it trains ``--iters`` iterations twice from the same initialisation: ``tools/train.py`` with batch
``2·b`` in one process, and ``tools/dist_train.sh CONFIG 2`` with batch ``b`` per process. Settings that make the
two runs see the same data in the same order and the same normalisation:

* ``randomness.seed`` fixed: same weights (DDP also broadcasts rank 0's) and the same ``InfiniteSampler``
  permutation; rank r takes every other index of it, so iteration i holds the same images in both runs;
* random flip disabled (mmengine seeds data workers per rank, so flips would differ) and ``num_workers=0``;
* BatchNorm → mmdet3d's ``naiveSyncBN2d`` (all-reduced batch statistics; plain BN in one process), because
  DDP's per-process BN statistics over ``b`` images differ from one process's over ``2·b`` images, and torch's
  ``SyncBatchNorm`` has no CPU implementation.

Log variables are recorded per iteration as the mean over ranks (``EProPnPLossRecorderHook``), which equals the
single-process value for losses normalised by all-reduced counts.

Two verdicts are printed:

1. **Exact** (relative difference ≤ 1e-4): iteration 1's losses that do not depend on random draws — the FCOS
   classification / centerness / reference-point losses (same images, same gt, same weights) must agree.
2. **Statistical**: the object sampler, the RSLM initialiser and the AMIS sampler draw from each process's torch
   RNG, so one process's draws for 2·b images cannot be re-created by two processes drawing for b images each;
   every stochastic loss (and, from iteration 2 on, every loss, since the gradients carried the draws) is
   compared across seeds with Welch's t-test per (key, iteration); equivalence is rejected when the smallest
   p-value, Bonferroni-corrected for the number of tests, is below 0.01. Per-rank counters (``num_*``) are
   not compared (their rank mean is not the single-process count).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, data_root_options, format_table, run_meta  # noqa: E402

DETERMINISTIC_KEYS = ('loss_cls', 'loss_centerness', 'loss_rp')
SKIP_KEYS = ('time', 'data_time', 'lr')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='configs/epropnp_det_r18_synthetic.py')
    p.add_argument('--data-root', default=None, help='dataset root overriding the config\'s data_root')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--iters', type=int, default=4)
    p.add_argument('--batch-per-process', type=int, default=1)
    p.add_argument('--work-dir', default=None, help='default: a temporary directory (deleted)')
    p.add_argument('--reuse', action='store_true', help='reuse the records already in --work-dir')
    p.add_argument('--json', default=None, help='also write all recorded values and verdicts here')
    return p.parse_args(argv)


def recording_config(cfg_path: str, record: str, out_path: str) -> str:
    """Writes a config inheriting ``cfg_path`` with the loss recorder hook added (``--cfg-options`` cannot
    express a dict inside a list)."""
    base = osp.abspath(osp.join(REPO, cfg_path) if not osp.isabs(cfg_path) else cfg_path)
    with open(out_path, 'w') as f:
        f.write(f"_base_ = [{base!r}]\n"
                f"custom_hooks = [dict(type='EProPnPLossRecorderHook', out_file={record!r})]\n")
    return out_path


def common_options(cfg_path: str, data_root, iters: int, seed: int, batch: int) -> List[str]:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, cfg_path) if not osp.isabs(cfg_path) else cfg_path)
    opts = [f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={10 * iters + 10}',
            'default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
            f'train_dataloader.batch_size={batch}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', f'randomness.seed={seed}',
            'model.backbone.norm_cfg.type=naiveSyncBN2d']
    pipeline = cfg.train_dataloader.dataset.pipeline
    for i, t in enumerate(pipeline):
        if 'Flip' in t['type']:
            opts.append(f'train_dataloader.dataset.pipeline.{i}.prob=0.0')
    if data_root:
        opts += [f'{k}={v}' for k, v in data_root_options(cfg, data_root).items() if k.startswith('train')]
    return opts


def run(cmd: List[str], log: str) -> None:
    env = dict(os.environ, PYTHONPATH=REPO, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD='1')
    env.pop('PORT', None)
    with open(log, 'w') as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if res.returncode != 0:
        tail = open(log).read()[-3000:]
        raise RuntimeError(f'command failed ({res.returncode}): {" ".join(cmd)}\n--- {log} (tail) ---\n{tail}')


def read_record(path: str) -> List[Dict[str, float]]:
    if not osp.isfile(path):
        raise FileNotFoundError(f'no loss record written: {path}')
    return [json.loads(line) for line in open(path) if line.strip()]


def run_pair(args, seed: int, work: str) -> Dict[str, List[Dict[str, float]]]:
    out = {}
    b = args.batch_per_process
    for mode, nproc in (('single', 1), ('dist', 2)):
        wd = osp.join(work, f'seed{seed}_{mode}')
        rec = osp.join(wd, 'record.jsonl')
        if args.reuse and osp.isfile(rec):
            out[mode] = read_record(rec)
            continue
        opts = common_options(args.config, args.data_root, args.iters, seed, b * (2 if nproc == 1 else 1))
        os.makedirs(wd, exist_ok=True)
        cfg = recording_config(args.config, rec, osp.join(wd, 'record_cfg.py'))
        if nproc == 1:
            cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg, '--work-dir', wd]
        else:
            cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg, '2', '--work-dir', wd]
        t0 = time.time()
        run(cmd + ['--cfg-options'] + opts, osp.join(wd, 'run.log'))
        out[mode] = read_record(rec)
        print(f'[dist_reproduction] seed {seed} {mode:6s} ({nproc} process{"es" if nproc > 1 else ""}): '
              f'{len(out[mode])} iterations in {time.time() - t0:.0f} s', flush=True)
    return out


def rel_diff(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compare(records: Dict[int, Dict[str, List[Dict[str, float]]]], iters: int) -> dict:
    seeds = sorted(records)
    first = records[seeds[0]]['single'][0]
    keys = [k for k in first if k != 'iter' and k not in SKIP_KEYS]
    # 1. exact: iteration 1, deterministic keys, every seed
    exact_rows, exact_ok = [], True
    for k in DETERMINISTIC_KEYS:
        if k not in first:
            continue
        diffs = [rel_diff(records[s]['single'][0][k], records[s]['dist'][0][k]) for s in seeds]
        ok = max(diffs) <= 1e-4
        exact_ok &= ok
        exact_rows.append([k, f"{records[seeds[0]]['single'][0][k]:.6f}", f"{records[seeds[0]]['dist'][0][k]:.6f}",
                           f'{max(diffs):.1e}', 'yes' if ok else 'NO'])
    # 2. statistical: Welch t-test per (key, iteration) over seeds, Bonferroni-corrected
    from scipy.stats import ttest_ind
    stat_rows, pmin = [], 1.0
    n = len(seeds)
    stat_keys = [k for k in keys if not k.startswith('num_')]  # per-rank counts: not comparable as means
    m = len(stat_keys) * iters
    for k in stat_keys:
        ps = []
        for it in range(iters):
            a = [records[s]['single'][it][k] for s in seeds]
            b = [records[s]['dist'][it][k] for s in seeds]
            if max(rel_diff(x, y) for x, y in zip(a, b)) <= 1e-4:
                ps.append(1.0)  # identical up to rounding (e.g. deterministic losses at iteration 1)
            else:
                p = float(ttest_ind(a, b, equal_var=False).pvalue)
                ps.append(1.0 if p != p else p)  # NaN: zero variance in both and equal means
        it_worst = min(range(iters), key=lambda i: ps[i])
        a_mean = sum(records[s]['single'][it_worst][k] for s in seeds) / n
        b_mean = sum(records[s]['dist'][it_worst][k] for s in seeds) / n
        pmin = min(pmin, min(ps))
        stat_rows.append([k, it_worst + 1, f'{a_mean:.5f}', f'{b_mean:.5f}', f'{min(ps):.3f}',
                          f'{min(1.0, min(ps) * m):.3f}'])
    return dict(exact_rows=exact_rows, exact_ok=exact_ok, stat_rows=stat_rows, pmin=pmin, num_tests=m,
                stat_ok=pmin * m >= 0.01)


def main(argv=None) -> int:
    args = parse_args(argv)
    if len(args.seeds) < 2:
        raise SystemExit('--seeds: need at least 2 seeds for the statistical comparison')
    tmp = None
    work = args.work_dir
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix='dist_repro_')
        work = tmp.name
    records = {s: run_pair(args, s, work) for s in args.seeds}
    for s, r in records.items():
        for mode in ('single', 'dist'):
            if len(r[mode]) != args.iters:
                raise RuntimeError(f'seed {s} {mode}: recorded {len(r[mode])} iterations, expected {args.iters}')
    res = compare(records, args.iters)
    b = args.batch_per_process
    print()
    print(format_table(['key (iteration 1)', f'1 process, batch {2 * b}', f'2 processes, batch {b} each',
                        'max rel. diff over seeds', '≤ 1e-4'], res['exact_rows'],
                       title=f'Exact part ({len(args.seeds)} seeds): deterministic losses at iteration 1'))
    print()
    print(format_table(['key', 'worst iteration', 'mean 1 process', 'mean 2 processes', 'min p (Welch t)',
                        'Bonferroni p'],
                       res['stat_rows'],
                       title=f'Statistical part: {len(args.seeds)} seeds x {args.iters} iterations'))
    print()
    print(f"exact part: {'PASS' if res['exact_ok'] else 'FAIL'} (relative ≤ 1e-4); statistical part: "
          f"{'PASS' if res['stat_ok'] else 'FAIL'} (smallest p = {res['pmin']:.4f} over {res['num_tests']} "
          f"Welch t-tests; equivalence rejected if the Bonferroni-corrected p < 0.01)")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(meta=run_meta(argv), records={str(k): v for k, v in records.items()}, **res), f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 0 if res['exact_ok'] and res['stat_ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
