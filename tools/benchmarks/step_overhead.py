"""Fixed per-step overhead of one training step: aten ops launched, host synchronisations and their source lines.

    python tools/benchmarks/step_overhead.py [CONFIG ...] [--device cpu|cuda] [--batch-size 2] [--repeats 5]
                                             [--warmup 2] [--threads 2] [--amp fp32 fp16 bf16] [--device-path]
                                             [--ref-tree PATH]
                                             [--data-root DIR] [--json PATH] [--cfg-options k=v ...]

For each config (default: the embedded default ``configs/epropnp_det_r18_synthetic.py``) one batch of its train
pipeline (unshuffled) is run through ``warmup`` untimed steps, then one step is counted with
:class:`epropnp_det.utils.op_counter.OpCounter` (a ``TorchDispatchMode``, so it counts on the CPU as on a GPU):

* **aten ops**: every op dispatched from the start of the forward pass to the end of ``backward`` (on a GPU each
  is a kernel launch or at least a dispatch; views included), and separately those of the optimizer step;
* **syncs**: host synchronisations in the same window (``.item()``, ``nonzero``, boolean-mask indexing, copies
  to the host, ...; on the CPU, reads of CPU tensors count as they would on a GPU), each with the source line
  that made it (the innermost frame outside torch);

then ``repeats`` steps are timed (wall clock, ``torch.cuda.synchronize`` around each on CUDA; median).
``--amp fp16`` / ``bf16`` (several values: each config in each) trains with ``EProPnPAmpOptimWrapper`` (fp16
with a dynamic loss scale, or bf16), as ``tools/train.py --amp`` does.

``--device-path`` (CPU runs) takes the GPU code path where the project has a CPU-only branch
(:mod:`epropnp_det.utils.device_path`: the grid-sample RoIAlign backward, the dims coder's label check, the PnP
solver's guide-table sampler and plane-form GN step), so the syncs counted are those of the code a GPU runs, and
it estimates the launches of a GPU step: the aten ops with each of the PnP layer's CUDA-graph stages (RSLM + solve,
AMIS) counted as its replay (input copies, output clones, one launch) instead of its eager ops. The data preprocessor's
synchronisations are counted in their own column (on a GPU its reads are of host metadata).

``--ref-tree PATH`` measures the same configs a second time with the package of another checkout (e.g. a
``git worktree`` of an older commit) in a subprocess, and prints both side by side; the counting code is this
file's in both runs.
"""
import argparse
import contextlib
import importlib.util
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, format_table, load_config, write_json  # noqa: E402

if os.environ.get('STEP_OVERHEAD_PACKAGE_ROOT'):  # --ref-tree run: that checkout's package before this one's
    sys.path.insert(0, os.environ['STEP_OVERHEAD_PACKAGE_ROOT'])

DEFAULT_CONFIG = 'configs/epropnp_det_r18_synthetic.py'
_OP_COUNTER = osp.join(REPO, 'epropnp_det', 'utils', 'op_counter.py')


def _load_op_counter():
    """This checkout's OpCounter, by path (the measured package may be another checkout's)."""
    spec = importlib.util.spec_from_file_location('_step_overhead_op_counter', _OP_COUNTER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.OpCounter


#: ops of the PnP layer's CUDA-graph stages run eagerly under ``--device-path``, minus what a replay launches
_GRAPH_STAGE_OPS = [0]


@contextlib.contextmanager
def _device_path_context():
    """The GPU code path on CPU tensors: the project's switch (:mod:`epropnp_det.utils.device_path`), the PnP solver's
    RSLM sampler (patched as its sync-free test does; the torch-only library has no switch of its own), no
    native CPU kernels, and the PnP layer's CUDA-graph stages, which run eagerly here with their ops tallied in
    ``_GRAPH_STAGE_OPS`` so that the launches of a GPU step can be estimated (a replay: one copy per input, one
    clone per output, the graph launch itself)."""
    from epropnp_det.ops.pnp import solver
    try:
        from epropnp_det.utils.device_path import emulate_device_path
    except ImportError:  # a --ref-tree checkout older than the switch: its CPU-only branches stay
        emulate_device_path = contextlib.nullcontext
    try:
        from epropnp_det.ops.pnp import _graphs
    except ImportError:  # a checkout without CUDA graphs: every op is a launch
        _graphs = None
    try:
        from epropnp_det.ops.pnp import _native
    except ImportError:  # a checkout without the native CPU kernels
        _native = None
    OpCounter = _load_op_counter()
    patched = []

    def patch(obj, name, value):
        if obj is not None and hasattr(obj, name):
            patched.append((obj, name, getattr(obj, name)))
            setattr(obj, name, value)

    def run_eagerly(name, fn, tensors, obj_dims, out_obj_dims, static, generator, num_objects):
        with OpCounter(record_sites=False) as inner:
            out = fn(*tensors, generator)
        replay = sum(t is not None for t in tensors) + len(pytree_leaves(out)) + 1
        _GRAPH_STAGE_OPS[0] += inner.ops - replay
        return out

    from torch.utils._pytree import tree_leaves as pytree_leaves
    patch(solver, '_use_guide_table', lambda device: False)
    patch(solver, '_use_stacked_gn', lambda device: True)
    patch(_graphs, 'enabled', lambda backend, device: backend in ('default', 'auto'))
    patch(_graphs, 'run', run_eagerly)
    patch(_native, 'enabled', lambda *tensors, backend='default': False)  # CPU-only kernels: a GPU runs torch ops
    try:
        with emulate_device_path():
            yield
    finally:
        for obj, name, value in reversed(patched):
            setattr(obj, name, value)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*', default=[DEFAULT_CONFIG])
    p.add_argument('--device', default='cpu')
    p.add_argument('--data-root', default=None, help="dataset root overriding the configs' data_root")
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--amp', choices=['fp32', 'fp16', 'bf16'], nargs='+', default=['fp32'],
                   help='precisions to measure, each config in each (fp32 = no autocast)')
    p.add_argument('--ref-tree', default=None, help='another checkout to measure side by side')
    p.add_argument('--device-path', action='store_true',
                   help='on the CPU, take the GPU code path where the project has a CPU-only branch')
    p.add_argument('--json', default=None, help='write the rows as JSON')
    p.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE')
    p.add_argument('--row-json', action='store_true', help=argparse.SUPPRESS)  # internal: print rows as JSON
    return p.parse_args(argv)


def _to_device(batch: dict, device: str) -> dict:
    """Moves the image tensors of a collated batch (the preprocessor moves them too; this keeps the first step's
    transfer out of the counted window)."""
    import torch
    inputs = batch['inputs']
    img = inputs.get('img')
    if isinstance(img, torch.Tensor):
        inputs['img'] = img.to(device)
    elif isinstance(img, (list, tuple)):
        inputs['img'] = [t.to(device) for t in img]
    return batch


def measure(config: str, args, amp: str = 'fp32') -> Dict:
    """One config in this process -> row dict."""
    import torch
    from detector_speed import _parse_cfg_options, first_train_batch
    from mmdet3d.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    from mmengine.runner import set_random_seed

    OpCounter = _load_op_counter()
    torch.set_num_threads(args.threads)
    set_random_seed(0)
    cfg = load_config(config, args.data_root, _parse_cfg_options(args.cfg_options))
    batch = _to_device(first_train_batch(cfg, args.batch_size), args.device)
    if amp != 'fp32':
        cfg.optim_wrapper.type = 'EProPnPAmpOptimWrapper'
        cfg.optim_wrapper.dtype = {'fp16': 'float16', 'bf16': 'bfloat16'}[amp]
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(args.device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    device_type = torch.device(args.device).type
    cuda = device_type == 'cuda'

    def sync():
        if cuda:
            torch.cuda.synchronize()

    emulate = contextlib.nullcontext
    if args.device_path and device_type == 'cpu':
        emulate = _device_path_context

    def forward_backward(pre_counter=None, fb_counter=None):
        # as mmengine's train_step: preprocessor, forward under the wrapper's context (autocast with AMP), backward;
        # the counters (if given) see the preprocessor and forward + backward separately
        with emulate(), optim_wrapper.optim_context(model):
            with pre_counter or contextlib.nullcontext():
                data = model.data_preprocessor(batch, True)
            with fb_counter or contextlib.nullcontext():
                losses = model.loss(data['inputs'], data['data_samples'])
                loss, _ = model.parse_losses(losses)
                optim_wrapper.backward(loss)
        return loss

    def optimizer_step():
        optim_wrapper.step()
        optim_wrapper.zero_grad()

    for _ in range(args.warmup):
        forward_backward()
        optimizer_step()
    sync()
    fb, pre = OpCounter(host_is_device=device_type == 'cpu'), OpCounter(host_is_device=device_type == 'cpu')
    _GRAPH_STAGE_OPS[0] = 0
    loss = forward_backward(pre, fb)
    graph_saved = _GRAPH_STAGE_OPS[0]
    with OpCounter(host_is_device=device_type == 'cpu', record_sites=False) as opt:
        optimizer_step()
    times = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        loss = forward_backward()
        optimizer_step()
        sync()
        times.append(time.perf_counter() - t0)
    sites = Counter(f'{site} ({reason})' for reason, site in fb.syncs)
    mem = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return dict(config=osp.basename(config), device=args.device, batch=args.batch_size, amp=amp,
                code_path='device' if args.device_path or cuda else 'cpu', syncs_preprocessor=pre.num_syncs,
                preprocessor_sync_sites=sorted(Counter(f'{site} ({reason})' for reason, site in pre.syncs).items()),
                ops_fwd_bwd=fb.ops, syncs=fb.num_syncs, ops_optimizer=opt.ops, step_s=statistics.median(times),
                times=times, loss=float(loss), sync_sites=sorted(sites.items()), gpu_mem_gib=mem,
                top_ops=fb.top_ops(8),
                est_gpu_ops_fwd_bwd=fb.ops - graph_saved if args.device_path and not cuda else None)


def _rows_from_tree(tree: str, args) -> List[Dict]:
    """Runs this script on ``args.configs`` with ``tree``'s package first on the path; returns its rows. Each
    config is taken from ``tree`` where it exists there (a config names the modules of its own version), with data
    paths resolved from this checkout."""
    configs = [osp.join(tree, c) if not osp.isabs(c) and osp.isfile(osp.join(tree, c)) else c for c in args.configs]
    rows = []
    env = dict(os.environ, STEP_OVERHEAD_PACKAGE_ROOT=osp.abspath(tree))
    for config in configs:
        for amp in args.amp:  # one process each: a precision the old package cannot train gives an empty cell
            cmd = [sys.executable, osp.abspath(__file__), config, '--device', args.device, '--batch-size',
                   str(args.batch_size), '--repeats', str(args.repeats), '--warmup', str(args.warmup), '--threads',
                   str(args.threads), '--row-json', '--amp', amp] + \
                (['--data-root', args.data_root] if args.data_root else []) + \
                (['--device-path'] if args.device_path else []) + \
                (['--cfg-options', *args.cfg_options] if args.cfg_options else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
            got = [json.loads(ln[2:]) for ln in proc.stdout.splitlines() if ln.startswith('@@')]
            if proc.returncode != 0 or not got:
                print(f'--ref-tree {tree}: {config} {amp} failed:\n{proc.stderr[-1500:]}', file=sys.stderr)
                got = [None]
            rows += got
    if all(r is None for r in rows):
        raise RuntimeError(f'--ref-tree {tree} failed for every row')
    return rows


def format_rows(rows: List[Dict], ref: Optional[List[Dict]] = None) -> str:
    header = ['config', 'device', 'code path', 'batch', 'precision', 'aten ops fwd+bwd', 'syncs fwd+bwd',
              'syncs preprocessor', 'aten ops optimizer', 'step ms (median)']
    est = any(r.get('est_gpu_ops_fwd_bwd') is not None for r in rows)
    if est:
        header.insert(6, 'est. GPU launches fwd+bwd')
    if ref:
        header += ['ref aten ops', 'ref syncs', 'ref step ms', 'ops ratio ref/now', 'speed-up']
    out = []
    for i, r in enumerate(rows):
        row = [r['config'], r['device'], r.get('code_path', ''), r['batch'], r['amp'], r['ops_fwd_bwd'], r['syncs'],
               r.get('syncs_preprocessor', ''), r['ops_optimizer'], f"{r['step_s'] * 1e3:.1f}"]
        if est:
            row.insert(6, r.get('est_gpu_ops_fwd_bwd'))
        if ref and ref[i] is None:
            row += ['failed'] + [''] * 4
        elif ref:
            q = ref[i]
            # with --device-path: the ref's ops (every op a launch where it has no CUDA graphs) against the estimate
            now_ops = r.get('est_gpu_ops_fwd_bwd') or r['ops_fwd_bwd']
            ref_ops = q.get('est_gpu_ops_fwd_bwd') or q['ops_fwd_bwd']
            row += [ref_ops, q['syncs'], f"{q['step_s'] * 1e3:.1f}", f"{ref_ops / max(now_ops, 1):.2f}x",
                    f"{q['step_s'] / r['step_s']:.2f}x"]
        out.append(row)
    text = format_table(header, out, title='one training step: aten ops, host synchronisations, time')
    for r in rows:
        text += f"\n\nsynchronisations of {r['config']} ({r['device']}, {r['amp']}), forward start to backward end:"
        if not r['sync_sites']:
            text += '\n  none'
        for site, n in r['sync_sites']:
            text += f'\n  {n} x {site}'
        for site, n in r.get('preprocessor_sync_sites', []):
            text += f'\n  (data preprocessor) {n} x {site}'
    return text


def main(argv=None):
    args = parse_args(argv)
    import epropnp_det
    print(f'package measured: {osp.dirname(osp.abspath(epropnp_det.__file__))}', file=sys.stderr)
    rows = [measure(c, args, amp) for c in args.configs for amp in args.amp]
    if args.row_json:
        for r in rows:
            print('@@' + json.dumps(r))
        return rows
    ref = _rows_from_tree(args.ref_tree, args) if args.ref_tree else None
    print(format_rows(rows, ref))
    write_json(args.json, rows, argv, ref=ref, ref_tree=args.ref_tree)
    return rows


if __name__ == '__main__':
    main()
