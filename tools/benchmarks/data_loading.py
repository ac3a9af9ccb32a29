"""Does data loading keep up with the train step? Time of the train pipeline per sample, by transform, and the
dataloader workers a GPU step needs.

    python tools/benchmarks/data_loading.py [CONFIG ...] [--data-root DIR] [--samples 24] [--threads 1]
                                            [--step-s 0.2 ...] [--loader] [--json PATH]

For each config (default: the paper config ``configs/epropnp_det_r101.py`` and the embedded default) the training
dataset is built from ``train_dataloader.dataset`` and ``--samples`` samples are loaded one after the other in this
process, each transform of the pipeline timed on its own (first sample untimed: file-system and import warm-up).
A dataloader worker is one such process, so one worker delivers ``1 / t`` samples per second where ``t`` is the mean
time per sample; a step of batch ``B`` (the config's ``train_dataloader.batch_size``) taking ``S`` seconds on the GPU
needs ``ceil(B·t / S)`` workers to be fed without waiting (``--step-s``, default 0.2 s: the step-time target of the
R101 config on one GPU; workers also need CPU cores: ``workers × GPUs`` should not exceed the cores).

``--loader`` also runs the config's own dataloader (its ``num_workers``) for ``--samples`` batches and prints the
batches per second it delivered (on a machine with fewer cores than workers this measures the cores, not the
workers).

The images of a generated root (``python tools/create_synthetic_nuscenes.py --out-dir DIR --image-size 1600 900``,
then ``python tools/create_data.py nuscenes --root-path DIR --out-dir DIR --version v1.0-mini``) are nuScenes-sized
JPEGs, so per-sample decode and augmentation times are those of nuScenes; the LiDAR-based loaders read fewer points
than a real sweep.
"""
import argparse
import math
import os.path as osp
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import add_json_option, format_table, load_config, write_json  # noqa: E402

DEFAULT_CONFIGS = ['configs/epropnp_det_r101.py', 'configs/epropnp_det_r18_synthetic.py']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS)
    p.add_argument('--data-root', default=None, help="dataset root overriding the configs' data_root")
    p.add_argument('--samples', type=int, default=24, help='samples timed per config (after one untimed)')
    p.add_argument('--threads', type=int, default=1, help='torch threads (a dataloader worker uses 1)')
    p.add_argument('--step-s', type=float, nargs='+', default=[0.2], help='GPU step times to feed (seconds)')
    p.add_argument('--loader', action='store_true', help="also run the config's dataloader with its workers")
    add_json_option(p)
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error('--samples must be >= 1')
    return args


def _timed_pipeline(dataset, times: Dict[str, List[float]]):
    """Wraps each transform of ``dataset.pipeline`` so that its wall time per call is appended to ``times``."""
    transforms = dataset.pipeline.transforms
    for i, t in enumerate(transforms):
        name = f'{i}:{type(t).__name__}'

        def timed(results, __t=t, __name=name):
            t0 = time.perf_counter()
            out = __t(results)
            times[__name].append(time.perf_counter() - t0)
            return out
        transforms[i] = timed


def measure(config: str, args) -> Dict:
    import torch
    from mmdet3d.registry import DATASETS
    from mmengine.runner import Runner
    torch.set_num_threads(args.threads)
    cfg = load_config(config, args.data_root)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    n = min(args.samples + 1, len(dataset))
    if n < 2:
        raise ValueError(f'{config}: the training set has {len(dataset)} samples; need at least 2')
    dataset[0]  # warm-up (first file reads, lazy imports)
    per_transform: Dict[str, List[float]] = defaultdict(list)
    _timed_pipeline(dataset, per_transform)
    totals = []
    for i in range(1, n):
        t0 = time.perf_counter()
        dataset[i]
        totals.append(time.perf_counter() - t0)
    mean = statistics.mean(totals)
    batch = int(cfg.train_dataloader.batch_size)
    row = dict(config=osp.basename(config), samples=len(totals), batch=batch,
               num_workers=int(cfg.train_dataloader.get('num_workers', 0)),
               sample_ms_mean=mean * 1e3, sample_ms_median=statistics.median(totals) * 1e3,
               samples_per_s_per_worker=1.0 / mean,
               workers_needed={str(s): math.ceil(batch * mean / s) for s in args.step_s},
               transforms_ms={k: statistics.mean(v) * 1e3 for k, v in per_transform.items()})
    if args.loader:
        loader_cfg = dict(cfg.train_dataloader)
        loader = Runner.build_dataloader(loader_cfg, seed=0)
        it = iter(loader)
        next(it)  # workers start
        t0 = time.perf_counter()
        k = 0
        for k in range(1, args.samples + 1):
            try:
                next(it)
            except StopIteration:
                break
        row['loader_batches_per_s'] = k / (time.perf_counter() - t0)
    return row


def format_rows(rows: List[Dict], step_s: List[float]) -> str:
    header = ['config', 'batch', 'ms per sample (mean)', 'samples/s per worker'] + \
        [f'workers for a {s:g} s step' for s in step_s] + ['config num_workers']
    if any('loader_batches_per_s' in r for r in rows):
        header.append('loader batches/s')
    out = []
    for r in rows:
        row = [r['config'], r['batch'], f"{r['sample_ms_mean']:.1f}", f"{r['samples_per_s_per_worker']:.1f}"] + \
            [r['workers_needed'][str(s)] for s in step_s] + [r['num_workers']]
        if 'loader_batches_per_s' in r:
            row.append(f"{r['loader_batches_per_s']:.2f}")
        out.append(row)
    text = format_table(header, out, title='train pipeline per sample, one process (= one dataloader worker)')
    for r in rows:
        text += f"\n\ntransforms of {r['config']} (ms per sample, mean):"
        for k, v in r['transforms_ms'].items():
            text += f'\n  {v:8.2f}  {k}'
    return text


def main(argv=None):
    args = parse_args(argv)
    rows = [measure(c, args) for c in args.configs]
    print(format_rows(rows, args.step_s))
    write_json(args.json, rows, argv)
    return rows


if __name__ == '__main__':
    main()
