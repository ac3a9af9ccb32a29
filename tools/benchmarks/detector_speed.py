"""Train-step and inference speed of detectors on the same synthetic input, one table row per config.

    python tools/benchmarks/detector_speed.py [CONFIG ...] [--data-root DIR] [--batch-size 2] [--repeats 5]
                                              [--warmup 2] [--threads 2] [--cfg-options k=v ...]

Defaults: ``configs/baselines/fcos3d_r18_synthetic.py`` and ``configs/epropnp_det_r18_synthetic.py`` (a config
that does not exist is skipped with a message), data from each config's own ``data_root`` unless ``--data-root``.

For each config, in a fresh subprocess (so that the peak memory is that model's alone):

* the model is built with random initialisation (``init_weights()``; no pretrained download);
* ONE batch of ``--batch-size`` images is drawn from the config's ``train_dataloader`` with its train pipeline,
  without shuffling (``DefaultSampler(shuffle=False)``, seed 0), so every config sees the same frames/cameras
  through its own pipeline (the input tensor size is printed: each config keeps its own resize/crop);
* **train step** = ``model.train_step`` (data preprocessor + forward + loss + backward + optimizer step with the
  config's ``optim_wrapper``), in seconds per batch;
* **inference** = ``model.test_step`` (preprocessor + predict incl. post-processing) on the same batch, in
  seconds per image (batch time / batch size);
* each is the median of ``--repeats`` (>= 5) timed runs after ``--warmup`` untimed runs, with
  ``torch.set_num_threads(--threads)`` (2);
* **peak RSS** = the subprocess's maximum resident set size (``getrusage``), and its growth over the RSS just
  before the model was built (``Δ``: model, activations, optimizer state, allocator caches).

The machine should otherwise be idle for meaningful numbers (2 cores here); each row prints its own load average.
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, format_table, load_config, model_name, write_json  # noqa: E402

DEFAULT_CONFIGS = ['configs/baselines/fcos3d_r18_synthetic.py', 'configs/epropnp_det_r18_synthetic.py']
RESULT_TAG = 'DETECTOR_SPEED_RESULT '


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*', default=DEFAULT_CONFIGS, help='config files (default: %(default)s)')
    p.add_argument('--data-root', default=None, help='dataset root overriding the configs\' data_root')
    p.add_argument('--batch-size', type=int, default=2, help='images per batch (default 2)')
    p.add_argument('--repeats', type=int, default=5, help='timed runs per measurement (>= 5; median reported)')
    p.add_argument('--warmup', type=int, default=2, help='untimed runs before timing')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads (default 2)')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                   help='mmengine-style overrides applied to every config')
    p.add_argument('--json', '--json-out', dest='json', metavar='PATH', default=None,
                   help='also write the rows (with date, machine, command, commit) as JSON, e.g. under docs/results/')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)  # one config, in this process
    args = p.parse_args(argv)
    if args.repeats < 5:
        p.error('--repeats must be >= 5')
    if args.batch_size < 1:
        p.error('--batch-size must be >= 1')
    return args


def _parse_cfg_options(opts: Optional[List[str]]) -> Optional[dict]:
    if not opts:
        return None
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, ns, opts)
    return ns.cfg_options


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 when unavailable)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20
    except (OSError, ValueError):
        return 0.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed_median(fn, repeats: int, warmup: int, setup=None) -> float:
    """Median wall time (s) of ``fn(setup())`` over ``repeats`` runs after ``warmup`` runs; ``setup`` (untimed)
    prepares each call's argument."""
    times = []
    for i in range(warmup + repeats):
        arg = setup() if setup is not None else None
        t0 = time.perf_counter()
        fn(arg)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return statistics.median(times)


def first_train_batch(cfg, batch_size: int) -> dict:
    """One collated batch from ``cfg.train_dataloader`` (its pipeline), unshuffled, in this process."""
    from mmengine.runner import Runner
    loader_cfg = copy.deepcopy(cfg.train_dataloader)
    loader_cfg.update(batch_size=batch_size, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False))
    loader_cfg.pop('batch_sampler', None)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    return next(iter(loader))


def measure_config(config: str, data_root: Optional[str], batch_size: int, repeats: int, warmup: int,
                   threads: int, cfg_options: Optional[dict] = None) -> Dict:
    """Measures one config in this process; returns a row dict (see :func:`format_speed_table`)."""
    import torch
    from mmdet3d.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import set_random_seed

    torch.set_num_threads(threads)
    set_random_seed(0)
    cfg = load_config(config, data_root, cfg_options)
    batch = first_train_batch(cfg, batch_size)
    img = batch['inputs']['img']
    shapes = sorted({tuple(t.shape[-2:]) for t in img}) if isinstance(img, (list, tuple)) else [tuple(img.shape[-2:])]

    rss_before = _rss_mib()
    model = MODELS.build(cfg.model)
    model.init_weights()
    n_params = sum(p.numel() for p in model.parameters())
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

    model.train()
    train_s = timed_median(lambda b: model.train_step(b, optim_wrapper), repeats, warmup,
                           setup=lambda: copy.deepcopy(batch))
    model.eval()
    with torch.no_grad():
        infer_s = timed_median(lambda b: model.test_step(b), repeats, warmup, setup=lambda: copy.deepcopy(batch))
        padded = model.data_preprocessor(copy.deepcopy(batch), False)['inputs']['imgs'].shape[-2:]
    return dict(model=model_name(config), config=config, batch_size=batch_size,
                input_hw='/'.join(f'{h}x{w}' for h, w in shapes), padded_hw=f'{padded[0]}x{padded[1]}',
                params_m=n_params / 1e6, train_step_s=train_s, infer_per_img_s=infer_s / batch_size,
                peak_rss_mib=_peak_rss_mib(), rss_growth_mib=_peak_rss_mib() - rss_before, threads=threads,
                repeats=repeats, loadavg=os.getloadavg()[0], error=None)


def format_speed_table(rows: List[Dict]) -> str:
    """One line per row: model, batch, input H×W (after the pipeline; padded tensor), parameters, train step
    (s/batch), inference (s/image), peak RSS and its growth (MiB), 1-min load average. Rows with ``error`` set
    print the message instead of numbers."""
    header = ['model', 'batch', 'input HxW (padded)', 'params (M)', 'train step (s/batch)', 'inference (s/img)',
              'peak RSS (MiB)', 'Δ RSS (MiB)', 'load']
    body = []
    for r in rows:
        if r.get('error'):
            body.append([r['model'], '-', f'skipped: {r["error"]}', '-', '-', '-', '-', '-', '-'])
            continue
        body.append([r['model'], str(r['batch_size']), f'{r["input_hw"]} ({r["padded_hw"]})',
                     f'{r["params_m"]:.2f}', f'{r["train_step_s"]:.3f}', f'{r["infer_per_img_s"]:.3f}',
                     f'{r["peak_rss_mib"]:.0f}', f'{r["rss_growth_mib"]:.0f}', f'{r["loadavg"]:.1f}'])
    n = rows[0].get('repeats', 5) if rows else 5
    thr = rows[0].get('threads', 2) if rows else 2
    title = f'Detector speed on CPU (median of {n} after warm-up, torch threads={thr})'
    return format_table(header, body, title=title)


def _run_worker(config: str, args) -> Dict:
    """Runs this script with ``--worker`` on one config and parses its result line."""
    cmd = [sys.executable, osp.abspath(__file__), config, '--worker', '--batch-size', str(args.batch_size),
           '--repeats', str(args.repeats), '--warmup', str(args.warmup), '--threads', str(args.threads)]
    if args.data_root:
        cmd += ['--data-root', args.data_root]
    if args.cfg_options:
        cmd += ['--cfg-options', *args.cfg_options]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
    return dict(model=model_name(config), config=config, error=f'worker failed (exit {proc.returncode}): {tail[0]}')


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        row = measure_config(args.configs[0], args.data_root, args.batch_size, args.repeats, args.warmup,
                             args.threads, _parse_cfg_options(args.cfg_options))
        print(RESULT_TAG + json.dumps(row))
        return row
    rows = []
    for config in args.configs:
        path = config if osp.isabs(config) else osp.join(REPO, config)
        if not osp.isfile(path):
            print(f'[detector_speed] skipping {config}: config does not exist (yet)', file=sys.stderr)
            rows.append(dict(model=model_name(config), config=config, error='config does not exist'))
            continue
        print(f'[detector_speed] measuring {config} ...', file=sys.stderr, flush=True)
        rows.append(_run_worker(path, args))
    print(format_speed_table(rows))
    write_json(args.json, rows, settings=dict(batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup,
                                              threads=args.threads))
    return rows


if __name__ == '__main__':
    main()
