"""Benchmark of the EPro-PnP layer: speed, peak memory and accuracy on detector-like problems.

Rows (N objects, n points, K Monte-Carlo samples):

* ``mc_train``  — training step: RSLM init + trust-region LM (gt competes) + AMIS + KL loss + backward
                  at (144, 256, 512) [v1-basic] and (96, 128, 128) [v1b/v2];
* ``gn_infer``  — inference: RSLM init + 5 Gauss-Newton steps at (144, 256) and (1536, 256);
* ``deriv_reg`` — derivative regularisation (independent solve + differentiable GN step, fwd + bwd) at (144, 256).

Problems come from :func:`epropnp_det.ops.pnp.testing.make_problems` (points in a (4, 1.6, 1.9) m box × U(0.75,
1.25), x ∈ [−15, 15], y ∈ [0.5, 2], z ∈ [5, 60] m, yaw ∈ [−π, π], centre in the image, nuScenes front camera,
2 px noise, w2d = softmax(N(0, 1)) × U(0.5, 2)). Each row runs in its own subprocess (clean peak-RSS measurement):
one warm-up (includes ``torch.compile`` of the sampled-cost kernels for large batches), then the median of
``--runs`` timed runs with ``torch.set_num_threads(--threads)``. Peak memory = peak RSS during the timed runs
(sampled every ms from /proc) minus the RSS just before them, so it covers torch's C++ allocations but not the
one-off warm-up/compilation.

Accuracy columns (median over objects): translation error (m), yaw error (deg), % of objects > 1 m off, and
% of objects whose pose agrees (‖Δt‖ < 5 cm and |Δyaw| < 1°) with a trust-region LM started from the true pose.
Speed-ups are only printed against the original measured in the same run (``--original PATH``).

Usage::

    python tools/benchmarks/pnp_layer.py [--runs 5] [--threads 2] [--rows mc_train_512,gn_infer_144,...]
                                         [--cost-backend auto|eager|compile] [--profile] [--original PATH]
                                         [--interleave] [--device cpu|cuda] [--count-ops] [--json PATH]

``--device cuda`` runs the problems on the GPU (times with ``torch.cuda.synchronize``; peak memory from
``torch.cuda.max_memory_allocated``). ``--count-ops`` adds the aten ops and host synchronisations of one call of
each row (:class:`epropnp_det.utils.op_counter.OpCounter`; on the CPU the synchronisations are those the call
would make on a GPU). ``--json PATH`` also writes the rows.

``--original PATH`` times the original implementation side by side (a checkout of tjiiv-cprg/EPro-PnP outside
the project; its ``mmcv.utils`` registry import is stubbed, pyro must be importable, e.g. installed with
``pip install --target /tmp/pyro_site --no-deps pyro-ppl==1.8.6 pyro-api opt_einsum`` and
``PYTHONPATH=/tmp/pyro_site``). Nothing of the original is copied into this project.

The machine should be quiet: numbers measured while other jobs run are not comparable. On a machine whose speed
drifts (shared VMs), ``--original PATH --interleave`` times both implementations in one process per row, one run
of each in turn, and reports the median of the per-pair speed-ups (speed only; memory and accuracy come from the
default mode, where each implementation runs in its own process).
"""
import argparse
import json
import math
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import threading
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# name: (kind, N, n, K)
ROWS = {
    'mc_train_512': ('mc_train', 144, 256, 512),
    'mc_train_128': ('mc_train', 96, 128, 128),
    'gn_infer_144': ('gn_infer', 144, 256, 0),
    'gn_infer_1536': ('gn_infer', 1536, 256, 0),
    'deriv_reg_144': ('deriv_reg', 144, 256, 0),
}


def _rss_mb() -> float:
    """Current resident set size (MB) from /proc (Linux); falls back to the lifetime peak."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _PeakRSS:
    """Samples the RSS every millisecond in a thread; ``peak`` = max RSS while active (MB)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def _accuracy(pose, pose_gt, pose_ref):
    import torch

    from epropnp_det.ops.pnp import wrap_angle
    t_err = (pose[:, :3] - pose_gt[:, :3]).norm(dim=-1)
    yaw_err = wrap_angle(pose[:, 3] - pose_gt[:, 3]).abs() * 180 / math.pi
    agree = ((pose[:, :3] - pose_ref[:, :3]).norm(dim=-1) < 0.05) & \
        (wrap_angle(pose[:, 3] - pose_ref[:, 3]).abs() * 180 / math.pi < 1.0)
    return dict(t_err=t_err.median().item(), yaw_err=yaw_err.median().item(),
                pct_far=100 * (t_err > 1).float().mean().item(), pct_agree=100 * agree.float().mean().item(),
                finite=bool(torch.isfinite(pose).all()))


def _make_step(kind, p, K, backend, gen):
    """Returns ``step() -> pose (N, 4)`` (detached) for one row, and a dict of per-stage callables."""
    import torch

    from epropnp_det.ops.pnp import EProPnP4DoF, MonteCarloPoseLoss, adaptive_huber_delta, derivative_regularization
    camera, pose_gt = p['camera'], p['pose_gt']
    layer = EProPnP4DoF(mc_samples=max(K, 4), num_iter=4, cost_backend=backend)
    loss_fn = MonteCarloPoseLoss(loss_weight=0.15)

    def leaves():
        return p['x3d'].clone().requires_grad_(), p['x2d'].clone().requires_grad_(), \
            p['w2d'].clone().requires_grad_()

    if kind == 'mc_train':
        def step():
            x3d, x2d, w2d = leaves()
            out = layer.monte_carlo_forward(x3d, x2d.detach(), w2d, camera, pose_init=pose_gt,
                                            force_init_solve=True, generator=gen)
            loss, _ = loss_fn(out.cost_init, out.logw, batch_norm_factor=w2d.detach().mean() * x3d.shape[1])
            loss.backward()
            return out.pose_opt
    elif kind == 'gn_infer':
        def step():
            with torch.no_grad():
                return layer.solve(p['x3d'], p['x2d'], p['w2d'], camera, fast_mode=True, num_iter=5,
                                   generator=gen).pose
    else:
        def step():
            x3d, x2d, w2d = leaves()
            delta = adaptive_huber_delta(x2d.detach(), w2d).detach()
            reg = derivative_regularization(x3d, x2d, w2d, camera, delta, pose_gt, generator=gen, backend=backend)
            (reg['loss_pos'].mean() + reg['loss_orient'].mean()).backward()
            return reg['pose_opt']
    return step


def _import_original(path):
    """Import the original repository's ``epropnp_det/ops/pnp`` (a checkout outside this project) as
    ``orig_pnp``. Its only mm dependency, ``mmcv.utils.Registry/build_from_cfg`` (mmcv 1.x), is replaced by a
    minimal stand-in; pyro must be importable (e.g. ``pip install --target DIR pyro-ppl==1.8.6 pyro-api
    opt_einsum --no-deps`` and ``PYTHONPATH=DIR``)."""
    import importlib.util
    import types
    for sub in ('', 'EPro-PnP-Det/epropnp_det/ops/pnp', 'epropnp_det/ops/pnp', 'ops/pnp'):
        cand = osp.join(path, sub)
        if osp.isfile(osp.join(cand, 'epropnp.py')):
            path = cand
            break
    else:
        raise FileNotFoundError(f'no epropnp.py under {path}')

    class Registry:
        def __init__(self, name):
            self.modules = {}

        def register_module(self, name=None, force=False, module=None):
            def deco(cls):
                self.modules[name or cls.__name__] = cls
                return cls
            return deco(module) if module is not None else deco

    def build_from_cfg(cfg, registry, default_args=None):
        cfg = dict(cfg)
        cls = cfg.pop('type')
        cls = registry.modules[cls] if isinstance(cls, str) else cls
        return cls(**dict(default_args or {}, **cfg))

    mmcv, utils = types.ModuleType('mmcv'), types.ModuleType('mmcv.utils')
    utils.Registry, utils.build_from_cfg, mmcv.utils = Registry, build_from_cfg, utils
    sys.modules['mmcv'], sys.modules['mmcv.utils'] = mmcv, utils
    spec = importlib.util.spec_from_file_location('orig_pnp', osp.join(path, '__init__.py'),
                                                  submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules['orig_pnp'] = mod
    spec.loader.exec_module(mod)
    return mod


def _make_step_original(kind, p, K, orig):
    """Same rows with the original implementation (v1 configs: normalize=True, LM 10 its, RSLM 64×16×3); seeds
    the global RNGs it draws from."""
    import numpy as np
    import torch
    np.random.seed(0)  # the original draws von Mises samples from the global NumPy RNG
    torch.manual_seed(0)
    camera = orig.PerspectiveCamera(cam_mats=p['cam_mats'], z_min=0.1, img_shape=p['img_hw'])
    cost_fun = orig.AdaptiveHuberPnPCost(relative_delta=0.5)
    solver = dict(type='LMSolver', dof=4, num_iter=10, normalize=True,
                  init_solver=dict(type='RSLMSolver', dof=4, num_points=16, num_proposals=64, num_iter=3))
    pnp = orig.EProPnP4DoF(mc_samples=max(K, 4), num_iter=4, normalize=True, solver=solver)
    pose_gt = p['pose_gt']

    def leaves():
        return p['x3d'].clone().requires_grad_(), p['x2d'].clone().requires_grad_(), \
            p['w2d'].clone().requires_grad_()

    if kind == 'mc_train':
        def step():
            x3d, x2d, w2d = leaves()
            cost_fun.set_param(x2d.detach(), w2d)
            pose_opt, _, _, _, logw, cost_tgt = pnp.monte_carlo_forward(
                x3d, x2d.detach(), w2d, camera, cost_fun, pose_init=pose_gt, force_init_solve=True)
            loss = torch.nan_to_num(cost_tgt + torch.logsumexp(logw, dim=0)).mean() * 0.15
            loss.backward()
            return pose_opt
    elif kind == 'gn_infer':
        pnp.solver.num_iter = 5  # the original head's eval-mode override

        def step():
            with torch.no_grad():
                cost_fun.set_param(p['x2d'], p['w2d'])
                return pnp.solver(p['x3d'], p['x2d'], p['w2d'], camera, cost_fun, fast_mode=True)[0]
    else:
        def step():
            x3d, x2d, w2d = leaves()
            cost_fun.set_param(x2d.detach(), w2d.detach())
            pose_opt, _, _, plus = pnp.solver(x3d, x2d, w2d, camera, cost_fun, with_pose_opt_plus=True)
            dist = (plus[:, :3] - pose_gt[:, :3]).norm(dim=-1)
            loss_pos = torch.where(dist < 1, 0.5 * dist ** 2, dist - 0.5)
            (loss_pos.mean() + (1 - torch.cos(plus[:, 3] - pose_gt[:, 3])).mean()).backward()
            return pose_opt
    return step


def _stage_timers(kind, p, K, backend, gen):
    """Per-stage wall times (s) of one call (for ``--profile``)."""
    import torch

    from epropnp_det.ops.pnp import (
        Proposal4DoF,
        adaptive_huber_delta,
        amis,
        compute_pose_plus,
        pnp_normalize,
        solve_pnp,
    )
    camera, pose_gt = p['camera'], p['pose_gt']
    x3d, x2d, w2d = p['x3d'].clone().requires_grad_(), p['x2d'], p['w2d'].clone().requires_grad_()
    delta = adaptive_huber_delta(x2d, w2d)
    t = {}

    def tick(name, fn):
        t0 = time.perf_counter()
        r = fn()
        t[name] = time.perf_counter() - t0
        return r

    if kind == 'mc_train':
        offset, x3d_n, pose_n = pnp_normalize(x3d, pose_gt)
        sol = tick('solve (RSLM + LM, gt competes)', lambda: solve_pnp(
            x3d_n, x2d, w2d, camera, delta.detach(), pose_init=pose_n, force_init_solve=True, with_cov=True,
            normalize=False, generator=gen))
        prop = Proposal4DoF.initial_fit(sol.pose, sol.cov)
        _, logw, _ = tick('AMIS sampling + sampled cost (fwd)', lambda: amis(
            x3d_n, x2d, w2d, camera, delta, prop, K, 4, gen, backend=backend))
        tick('loss backward', lambda: torch.logsumexp(logw, 0).sum().backward())
    elif kind == 'gn_infer':
        with torch.no_grad():
            tick('RSLM init (fast mode)', lambda: solve_pnp(x3d.detach(), x2d, w2d.detach(), camera, num_iter=0,
                                                            fast_mode=True, generator=gen))
            tick('RSLM + 5 GN', lambda: solve_pnp(x3d.detach(), x2d, w2d.detach(), camera, num_iter=5,
                                                  fast_mode=True, generator=gen))
    else:
        d = delta.detach()
        sol = tick('solve (RSLM + 10 LM)', lambda: solve_pnp(x3d.detach(), x2d, w2d.detach(), camera, d,
                                                             generator=gen))
        plus = tick('GN step fwd', lambda: compute_pose_plus(x3d, x2d, w2d, sol.pose, camera, d))
        tick('GN step bwd', lambda: (plus - pose_gt).square().sum().backward())
    return t


def _sync(device):
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(step, device):
    _sync(device)
    t0 = time.perf_counter()
    out = step()
    _sync(device)
    return time.perf_counter() - t0, out


def _problems(name, device):
    import torch

    from epropnp_det.ops.pnp.testing import make_problems
    kind, N, n, K = ROWS[name]
    p = make_problems(N, n, generator=torch.Generator().manual_seed(0))
    if device != 'cpu':
        p = {k: (v.to(device) if hasattr(v, 'to') else v) for k, v in p.items()}
    return kind, N, n, K, p


def _count_ops(step, device):
    from epropnp_det.utils.op_counter import OpCounter
    with OpCounter(host_is_device=device == 'cpu') as c:
        step()
    return dict(ops=c.ops, syncs=c.num_syncs, sync_sites=sorted({site for _, site in c.syncs}))


def run_row(name, runs, threads, backend, profile, original=None, device='cpu', count_ops=False):
    """Executed in a subprocess: prints one JSON line (``original``: path of the original implementation)."""
    import torch
    torch.set_num_threads(threads)
    from epropnp_det.ops.pnp import solve_pnp
    kind, N, n, K, p = _problems(name, device)
    gen = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():  # reference: trust-region LM started from the true pose (no RSLM)
        ref = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], pose_init=p['pose_gt'], num_iter=10,
                        backend='eager').pose
    if original:
        step = _make_step_original(kind, p, K, _import_original(original))
    else:
        step = _make_step(kind, p, K, backend, gen)
    warm, _ = _timed(step, device)  # first call (allocator, compile, CUDA-graph capture)
    times, pose = [], None
    rss0 = _rss_mb()
    if device != 'cpu':
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    with _PeakRSS() as mem:
        for _ in range(runs):
            t, pose = _timed(step, device)
            times.append(t)
    peak = mem.peak - rss0 if device == 'cpu' else (torch.cuda.max_memory_allocated() - mem0) / 2 ** 20
    res = dict(name=name, kind=kind, N=N, n=n, K=K, time=statistics.median(times), times=times, warmup=warm,
               peak_mb=peak, device=device, **_accuracy(pose.detach(), p['pose_gt'], ref))
    if count_ops:
        res.update(_count_ops(step, device))
    if profile and not original:
        res['stages'] = _stage_timers(kind, p, K, backend, gen)
        with torch.profiler.profile() as prof:
            step()
        res['profile'] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15)
    print('@@' + json.dumps(res))


def run_pair(name, runs, threads, backend, original, device='cpu'):
    """Executed in a subprocess: both implementations in one process, timed alternately (ours, original, ours,
    ...) so that both see the same machine state; prints one JSON line with the medians, both first calls and
    the per-pair speed-ups (original time / ours of the adjacent run)."""
    import torch
    torch.set_num_threads(threads)
    kind, N, n, K, p = _problems(name, device)
    orig_step = _make_step_original(kind, p, K, _import_original(original))
    ours_step = _make_step(kind, p, K, backend, torch.Generator(device=device).manual_seed(1))
    first_ours, _ = _timed(ours_step, device)  # first calls (allocator, compile, CUDA-graph capture)
    first_orig, _ = _timed(orig_step, device)
    t_ours, t_orig = [], []
    for _ in range(runs):
        for step, out in ((ours_step, t_ours), (orig_step, t_orig)):
            out.append(_timed(step, device)[0])
    ratios = sorted(b / a for a, b in zip(t_ours, t_orig))
    print('@@' + json.dumps(dict(name=name, N=N, n=n, K=K, ours=statistics.median(t_ours),
                                 orig=statistics.median(t_orig), ratio=statistics.median(ratios),
                                 ratio_min=ratios[0], ratio_max=ratios[-1], first_ours=first_ours,
                                 first_orig=first_orig, device=device)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rows', default=','.join(ROWS))
    parser.add_argument('--cost-backend', default='auto', choices=['default', 'auto', 'eager', 'compile'])
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--count-ops', action='store_true', help='aten ops and host syncs of one call per row')
    parser.add_argument('--json', metavar='PATH', help='also write the results as JSON')
    parser.add_argument('--timeout', type=float, default=600, help='seconds per row subprocess')
    parser.add_argument('--profile', action='store_true', help='per-stage timers and a torch.profiler table')
    parser.add_argument('--original', metavar='PATH',
                        help='also time the original implementation: a checkout of tjiiv-cprg/EPro-PnP (or its '
                             'EPro-PnP-Det/epropnp_det/ops/pnp dir) outside this project; needs pyro importable')
    parser.add_argument('--interleave', action='store_true',
                        help='with --original: time both implementations in one process per row, alternating '
                             'run by run (robust to a machine whose speed drifts); speed only')
    parser.add_argument('--row', help=argparse.SUPPRESS)  # internal: run one row in this process
    parser.add_argument('--impl', default='ours', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        if args.impl == 'pair':
            run_pair(args.row, args.runs, args.threads, args.cost_backend, args.original, args.device)
        else:
            run_row(args.row, args.runs, args.threads, args.cost_backend, args.profile,
                    args.original if args.impl == 'original' else None, args.device, args.count_ops)
        return None
    if args.interleave and not args.original:
        parser.error('--interleave needs --original PATH')

    def launch(name, impl):
        cmd = [sys.executable, osp.abspath(__file__), '--row', name, '--runs', str(args.runs), '--threads',
               str(args.threads), '--cost-backend', args.cost_backend, '--impl', impl, '--device', args.device] + \
            (['--profile'] if args.profile else []) + (['--original', args.original] if args.original else []) + \
            (['--count-ops'] if args.count_ops and impl == 'ours' else [])
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f'row {name} ({impl}) timed out after {args.timeout:.0f} s', file=sys.stderr)
            return None
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('@@')]
        if proc.returncode != 0 or not lines:
            print(f'row {name} ({impl}) failed:\n{proc.stdout}\n{proc.stderr[-3000:]}', file=sys.stderr)
            return None
        return json.loads(lines[-1][2:])

    report = dict(device=args.device, threads=args.threads, runs=args.runs, cost_backend=args.cost_backend)
    if args.interleave:
        print(f'device={args.device} threads={args.threads} runs={args.runs} cost_backend={args.cost_backend}: both '
              f'implementations in one process per row, timed alternately after one first call each; speed-up = '
              f'median over the runs of (original time / ours of the adjacent run); 1st = first call in a fresh '
              f'process')
        head = (f"{'row':<14} {'N':>5} {'n':>4} {'K':>4} {'ours s':>8} {'orig s':>8} {'speed-up':>8} "
                f"{'min-max':>12} {'ours 1st s':>10} {'orig 1st s':>10}")
        print(head)
        print('-' * len(head))
        pairs = []
        for name in args.rows.split(','):
            r = launch(name, 'pair')
            if r is not None:
                pairs.append(r)
                print(f"{name:<14} {r['N']:>5} {r['n']:>4} {r['K'] or '-':>4} {r['ours']:>8.4f} {r['orig']:>8.4f} "
                      f"{r['ratio']:>7.2f}x {r['ratio_min']:>5.2f}-{r['ratio_max']:<5.2f}x "
                      f"{r['first_ours']:>10.2f} {r['first_orig']:>10.2f}", flush=True)
        print(f'load average at the end {os.getloadavg()[0]:.2f}')
        report['interleaved'] = pairs
    else:
        results, originals = [], {}
        for name in args.rows.split(','):
            r = launch(name, 'ours')
            if r is not None:
                results.append(r)
            if args.original:
                originals[name] = launch(name, 'original')
        ops_cols = args.count_ops
        head = (f"{'row':<14} {'N':>5} {'n':>4} {'K':>4} {'time s':>8} {'peak MB':>8} {'t err m':>8} {'yaw °':>6} "
                f"{'>1 m %':>7} {'agree %':>8} {'1st call s':>10}" + (f" {'aten ops':>9} {'syncs':>5}" if ops_cols
                                                                      else ''))
        print(f'device={args.device} threads={args.threads} runs={args.runs} cost_backend={args.cost_backend} '
              f'(median after a first call; 1st call = in a fresh process, incl. torch.compile with the inductor '
              f'cache as found or CUDA-graph capture); load average at the end {os.getloadavg()[0]:.2f}')
        print(head)
        print('-' * len(head))
        for r in results:
            print(f"{r['name']:<14} {r['N']:>5} {r['n']:>4} {r['K'] or '-':>4} {r['time']:>8.4f} {r['peak_mb']:>8.0f} "
                  f"{r['t_err']:>8.3f} {r['yaw_err']:>6.2f} {r['pct_far']:>7.1f} {r['pct_agree']:>8.1f} "
                  f"{r['warmup']:>10.2f}" + (f" {r.get('ops', 0):>9} {r.get('syncs', 0):>5}" if ops_cols else ''))
        if ops_cols:
            for r in results:
                if r.get('sync_sites'):
                    print(f"  {r['name']} syncs at: {', '.join(r['sync_sites'])}")
        report['ours'] = results
        if originals:
            print('\noriginal implementation, same problems and settings, each in its own process '
                  '("orig s" = its median; speed-up = orig s / ours):')
            head2 = (f"{'row':<14} {'ours s':>8} {'orig s':>8} {'speed-up':>8} {'peak MB':>8} {'t err m':>8} "
                     f"{'yaw °':>6} {'>1 m %':>7} {'agree %':>8} {'1st call s':>10}")
            print(head2)
            print('-' * len(head2))
            ours = {r['name']: r for r in results}
            for name, r in originals.items():
                if r is None or name not in ours:
                    continue
                speedup = r['time'] / ours[name]['time']
                print(f"{name:<14} {ours[name]['time']:>8.4f} {r['time']:>8.4f} {speedup:>7.2f}x "
                      f"{r['peak_mb']:>8.0f} {r['t_err']:>8.3f} {r['yaw_err']:>6.2f} {r['pct_far']:>7.1f} "
                      f"{r['pct_agree']:>8.1f} {r['warmup']:>10.2f}")
            print('(accuracy, peak-memory and first-call columns of this table are the original\'s)')
            report['original'] = [r for r in originals.values() if r is not None]
        if args.profile:
            for r in results:
                print(f"\n=== {r['name']}: stages (s, one call) ===")
                for k, v in r.get('stages', {}).items():
                    print(f'  {k:<40} {v:.3f}')
                print(r.get('profile', ''))
    if args.json:
        sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
        from _bench_common import run_meta
        report = dict(meta=run_meta(argv), **report)
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == '__main__':
    main()
