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
   compared across seeds: Welch z = |mean₁ − mean₂| / √(s₁²/n + s₂²/n) per (key, iteration); equivalence is
   accepted when all z ≤ 3.5 (with ≈ 40 comparisons, a false alarm at 3.5 has probability ≈ 2 %).
"""
import argparse
import json
import math
import os
import os.path as osp
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, data_root_options, format_table  # noqa: E402

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
    p.add_argument('--json', default=None, help='also write all recorded values and verdicts here')
    return p.parse_args(argv)


def common_options(cfg_path: str, data_root, iters: int, seed: int, batch: int, record: str) -> List[str]:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, cfg_path) if not osp.isabs(cfg_path) else cfg_path)
    opts = [f'train_cfg.max_iters={iters}', f'default_hooks.checkpoint.interval={10 * iters + 10}',
            'default_hooks.logger.interval=1', 'val_cfg=None', 'val_dataloader=None', 'val_evaluator=None',
            f'train_dataloader.batch_size={batch}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', f'randomness.seed={seed}',
            'model.backbone.norm_cfg.type=mmdet3d.naiveSyncBN2d',
            f"custom_hooks=[dict(type='EProPnPLossRecorderHook',out_file='{record}')]"]
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
        opts = common_options(args.config, args.data_root, args.iters, seed, b * (2 if nproc == 1 else 1), rec)
        if nproc == 1:
            cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), args.config, '--work-dir', wd]
        else:
            cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), args.config, '2', '--work-dir', wd]
        os.makedirs(wd, exist_ok=True)
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
    # 2. statistical: Welch z per (key, iteration) over seeds
    stat_rows, zmax = [], 0.0
    n = len(seeds)
    for k in keys:
        zs = []
        for it in range(iters):
            a = [records[s]['single'][it][k] for s in seeds]
            b = [records[s]['dist'][it][k] for s in seeds]
            ma, mb = sum(a) / n, sum(b) / n
            va = sum((x - ma) ** 2 for x in a) / max(n - 1, 1)
            vb = sum((x - mb) ** 2 for x in b) / max(n - 1, 1)
            se = math.sqrt((va + vb) / n)
            z = abs(ma - mb) / se if se > 1e-12 * max(abs(ma), abs(mb), 1e-12) else (
                0.0 if rel_diff(ma, mb) <= 1e-4 else math.inf)
            zs.append(z)
        it_worst = max(range(iters), key=lambda i: zs[i])
        a_mean = sum(records[s]['single'][it_worst][k] for s in seeds) / n
        b_mean = sum(records[s]['dist'][it_worst][k] for s in seeds) / n
        zmax = max(zmax, max(zs))
        stat_rows.append([k, it_worst + 1, f'{a_mean:.5f}', f'{b_mean:.5f}', f'{max(zs):.2f}'])
    return dict(exact_rows=exact_rows, exact_ok=exact_ok, stat_rows=stat_rows, zmax=zmax, stat_ok=zmax <= 3.5)


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
    print(format_table(['key', 'worst iteration', 'mean 1 process', 'mean 2 processes', 'max Welch z'],
                       res['stat_rows'],
                       title=f'Statistical part: {len(args.seeds)} seeds x {args.iters} iterations'))
    print()
    print(f"exact part: {'PASS' if res['exact_ok'] else 'FAIL'} (relative ≤ 1e-4); statistical part: "
          f"{'PASS' if res['stat_ok'] else 'FAIL'} (max z = {res['zmax']:.2f} ≤ 3.5)")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(records={str(k): v for k, v in records.items()}, **res), f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 0 if res['exact_ok'] and res['stat_ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
