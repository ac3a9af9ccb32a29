"""Where the time of one EPro-PnP-Det train step goes, stage by stage (a table for speed work).

    python tools/benchmarks/train_step_breakdown.py [CONFIG] [--batch-size 2] [--repeats 7] [--warmup 2]
                                                    [--threads 2] [--cfg-options k=v ...]

Default config: ``configs/epropnp_det_r18_synthetic.py``. One batch is drawn as in ``detector_speed.py``
(unshuffled train pipeline); the model is randomly initialised. Each repeat runs the train step in its parts:

* ``data preprocessor``, ``backbone + neck forward`` and ``head loss forward`` (whose sub-stages are timed by
  wrapping the head's methods: FCOS forward, centre and FCOS targets, dense key/value branch, deformable sampler,
  point subnet, Monte-Carlo pose loss (solve + AMIS), derivative regularisation, RoI auxiliary branch);
* ``backward`` (all of it: backbone, neck and head; autograd gives no per-module split without the profiler,
  whose overhead distorts the many small ops of the PnP layer);
* ``optimizer step`` (``EProPnPOptimWrapper``: clipping, AdamW).

Times are wall-clock medians over ``--repeats`` (perf_counter, no profiler); sub-stages are indented and included
in their parent. The ``train step`` row is the sum of the top-level parts. Run on an otherwise idle machine.
"""
import argparse
import logging
import os.path as osp
import statistics
import sys
import time
from collections import defaultdict
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import add_json_option, format_table, load_config, write_json  # noqa: E402

DEFAULT_CONFIG = 'configs/epropnp_det_r18_synthetic.py'

# (label, attribute path on the model, method) of the head's sub-stages, in call order; missing ones are skipped
SUB_STAGES = [
    ('FCOS forward', 'bbox_head', 'forward'),
    ('centre targets', 'bbox_head.center_target', 'get_targets'),
    ('FCOS targets', 'bbox_head.fcos_head', 'get_targets'),
    ('FCOS losses', 'bbox_head.fcos_head', 'loss_by_feat'),
    ('dense key/value branch', 'bbox_head.dense_branch', 'forward'),
    ('deformable sampler', 'bbox_head.sampler', 'forward'),
    ('point subnet', 'bbox_head.point_subnet', 'forward'),
    ('MC pose loss (solve + AMIS)', 'bbox_head.pose_stage.pnp', 'monte_carlo_forward'),
    ('RoI auxiliary branch', 'bbox_head.roi_aux', 'loss_from_samples'),
]
TOP = ['data preprocessor', 'backbone + neck forward', 'head loss forward', 'backward', 'optimizer step']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config', nargs='?', default=DEFAULT_CONFIG)
    p.add_argument('--data-root', default=None, help="dataset root overriding the config's data_root")
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--repeats', type=int, default=7, help='timed steps (median reported)')
    p.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE')
    add_json_option(p)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error('--repeats must be >= 1 and --warmup >= 0')
    return args


def _resolve(obj, path: str):
    for name in path.split('.'):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _timed(fn, acc: List[float]):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        acc.append(time.perf_counter() - t0)
        return out
    return wrapper


def _wrap_derivative_regularization(acc: List[float]):
    """The head calls the module-level function: time it in the head's module namespace."""
    import epropnp_det.models.dense_heads.deform_pnp_head as head_mod
    head_mod.derivative_regularization = _timed(head_mod.derivative_regularization, acc)


def measure(args) -> Dict[str, float]:
    """Median seconds per stage (keys: the ``TOP`` labels, sub-stage labels and ``train step``)."""
    import torch
    from detector_speed import _parse_cfg_options, first_train_batch
    from mmdet3d.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import set_random_seed

    torch.set_num_threads(args.threads)
    set_random_seed(0)
    cfg = load_config(args.config, args.data_root, _parse_cfg_options(args.cfg_options))
    batch = first_train_batch(cfg, args.batch_size)
    model = MODELS.build(cfg.model)
    logging.getLogger('mmengine').setLevel(logging.WARNING)  # init_weights' per-parameter report
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    if not hasattr(model, 'bbox_head') or not hasattr(model.bbox_head, 'pnp'):
        raise SystemExit(f'{args.config}: not an EPro-PnP-Det model (no bbox_head.pnp); use detector_speed.py')

    sub = defaultdict(list)
    for label, path, method in SUB_STAGES:
        owner = _resolve(model, path)
        if owner is not None and callable(getattr(owner, method, None)):
            setattr(owner, method, _timed(getattr(owner, method), sub[label]))
    _wrap_derivative_regularization(sub['derivative regularisation'])
    extract = model.extract_feat
    model.extract_feat = _timed(extract, sub['backbone + neck forward'])

    top, per_step = defaultdict(list), defaultdict(list)
    for i in range(args.warmup + args.repeats):
        t = {}
        t0 = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        t['data preprocessor'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        losses = model.loss(data['inputs'], data['data_samples'])
        t['loss forward'] = time.perf_counter() - t0
        loss, _ = model.parse_losses(losses)
        t0 = time.perf_counter()
        optim_wrapper.backward(loss)
        t['backward'] = time.perf_counter() - t0
        t0 = time.perf_counter()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        t['optimizer step'] = time.perf_counter() - t0
        for label, acc in sub.items():  # a sub-stage's time per step = the sum over its calls in the step
            if i >= args.warmup and acc:
                per_step[label].append(sum(acc))
            acc.clear()
        if i >= args.warmup:
            for k, v in t.items():
                top[k].append(v)
    out = {k: statistics.median(v) for k, v in top.items()}
    med = {k: statistics.median(v) for k, v in per_step.items()}
    out['head loss forward'] = out.pop('loss forward') - med.get('backbone + neck forward', 0.0)
    out.update(med)
    out['train step'] = sum(out[k] for k in TOP)
    return out


def format_breakdown(times: Dict[str, float], title: str) -> str:
    """Rows: top-level stages, the head's sub-stages indented under ``head loss forward``, then the total."""
    total = times['train step']
    rows = []
    for k in TOP:
        rows.append([k, f'{times[k] * 1e3:.1f}', f'{100 * times[k] / total:.1f}'])
        if k == 'head loss forward':
            for label in [s[0] for s in SUB_STAGES] + ['derivative regularisation']:
                if label in times:
                    rows.append([f'  {label}', f'{times[label] * 1e3:.1f}', f'{100 * times[label] / total:.1f}'])
    rows.append(['train step', f'{total * 1e3:.1f}', '100.0'])
    return format_table(['stage', 'ms (median)', '% of step'], rows, title=title)


def main(argv=None):
    args = parse_args(argv)
    times = measure(args)
    print(format_breakdown(times, f'{osp.basename(args.config)}: train step by stage (batch {args.batch_size}, '
                                  f'{args.threads} threads, median of {args.repeats})'))
    write_json(args.json, [dict(stage=k, median_s=v) for k, v in times.items()], argv, config=args.config,
               batch_size=args.batch_size, threads=args.threads, repeats=args.repeats)
    return times


if __name__ == '__main__':
    main()
