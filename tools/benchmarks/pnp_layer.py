"""Benchmark of the EPro-PnP layer (issue 7): speed, peak memory and accuracy on detector-like problems.

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
The baseline column holds the original implementation's times measured on this machine kind (issue 7).

Usage::

    python tools/benchmarks/pnp_layer.py [--runs 5] [--threads 2] [--rows mc_train_512,gn_infer_144,...]
                                         [--cost-backend auto|eager|compile] [--profile] [--original PATH]
                                         [--interleave]

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

# name: (kind, N, n, K, original implementation's seconds on this machine kind, issue 7)
ROWS = {
    'mc_train_512': ('mc_train', 144, 256, 512, 1.96),
    'mc_train_128': ('mc_train', 96, 128, 128, 0.21),
    'gn_infer_144': ('gn_infer', 144, 256, 0, 0.16),
    'gn_infer_1536': ('gn_infer', 1536, 256, 0, 2.49),
    'deriv_reg_144': ('deriv_reg', 144, 256, 0, 0.23),
}
# original implementation's accuracy at (144, 256) (issue 7)
BASELINE_ACCURACY = dict(t_err=0.20, yaw_err=0.44, pct_far=11.8)


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


def run_row(name, runs, threads, backend, profile, original=None):
    """Executed in a subprocess: prints one JSON line (``original``: path of the original implementation)."""
    import torch
    torch.set_num_threads(threads)
    from epropnp_det.ops.pnp import solve_pnp
    from epropnp_det.ops.pnp.testing import make_problems
    kind, N, n, K, _ = ROWS[name]
    p = make_problems(N, n, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # reference: trust-region LM started from the true pose (no RSLM)
        ref = solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], pose_init=p['pose_gt'], num_iter=10).pose
    if original:
        step = _make_step_original(kind, p, K, _import_original(original))
    else:
        step = _make_step(kind, p, K, backend, gen)
    t0 = time.perf_counter()
    step()  # warm-up (allocator, compile)
    warm = time.perf_counter() - t0
    times, pose = [], None
    rss0 = _rss_mb()
    with _PeakRSS() as mem:
        for _ in range(runs):
            t0 = time.perf_counter()
            pose = step()
            times.append(time.perf_counter() - t0)
    res = dict(name=name, kind=kind, N=N, n=n, K=K, time=statistics.median(times), times=times, warmup=warm,
               peak_mb=mem.peak - rss0, **_accuracy(pose.detach(), p['pose_gt'], ref))
    if profile and not original:
        res['stages'] = _stage_timers(kind, p, K, backend, gen)
        with torch.profiler.profile() as prof:
            step()
        res['profile'] = prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15)
    print('@@' + json.dumps(res))


def run_pair(name, runs, threads, backend, original):
    """Executed in a subprocess: both implementations in one process, timed alternately (ours, original, ours,
    ...) so that both see the same machine state; prints one JSON line with the medians and the per-pair
    speed-ups (original time / ours of the adjacent run)."""
    import torch
    torch.set_num_threads(threads)
    from epropnp_det.ops.pnp.testing import make_problems
    kind, N, n, K, _ = ROWS[name]
    p = make_problems(N, n, generator=torch.Generator().manual_seed(0))
    orig_step = _make_step_original(kind, p, K, _import_original(original))
    ours_step = _make_step(kind, p, K, backend, torch.Generator().manual_seed(1))
    ours_step(), orig_step()  # warm-ups (allocator, compile)
    t_ours, t_orig = [], []
    for _ in range(runs):
        for step, out in ((ours_step, t_ours), (orig_step, t_orig)):
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
    ratios = sorted(b / a for a, b in zip(t_ours, t_orig))
    print('@@' + json.dumps(dict(name=name, N=N, n=n, K=K, ours=statistics.median(t_ours),
                                 orig=statistics.median(t_orig), ratio=statistics.median(ratios),
                                 ratio_min=ratios[0], ratio_max=ratios[-1])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rows', default=','.join(ROWS))
    parser.add_argument('--cost-backend', default='auto', choices=['auto', 'eager', 'compile'])
    parser.add_argument('--profile', action='store_true', help='per-stage timers and a torch.profiler table')
    parser.add_argument('--original', metavar='PATH',
                        help='also time the original implementation: a checkout of tjiiv-cprg/EPro-PnP (or its '
                             'EPro-PnP-Det/epropnp_det/ops/pnp dir) outside this project; needs pyro importable')
    parser.add_argument('--interleave', action='store_true',
                        help='with --original: time both implementations in one process per row, alternating '
                             'run by run (robust to a machine whose speed drifts); speed only')
    parser.add_argument('--row', help=argparse.SUPPRESS)  # internal: run one row in this process
    parser.add_argument('--impl', default='ours', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        if args.impl == 'pair':
            run_pair(args.row, args.runs, args.threads, args.cost_backend, args.original)
        else:
            run_row(args.row, args.runs, args.threads, args.cost_backend, args.profile,
                    args.original if args.impl == 'original' else None)
        return
    if args.interleave and not args.original:
        parser.error('--interleave needs --original PATH')

    def launch(name, impl):
        cmd = [sys.executable, osp.abspath(__file__), '--row', name, '--runs', str(args.runs), '--threads',
               str(args.threads), '--cost-backend', args.cost_backend, '--impl', impl] + \
            (['--profile'] if args.profile else []) + (['--original', args.original] if args.original else [])
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('@@')]
        if proc.returncode != 0 or not lines:
            print(f'row {name} ({impl}) failed:\n{proc.stdout}\n{proc.stderr}', file=sys.stderr)
            return None
        return json.loads(lines[-1][2:])

    if args.interleave:
        print(f'threads={args.threads} runs={args.runs} cost_backend={args.cost_backend}: both implementations in '
              f'one process per row, timed alternately after one warm-up each; speed-up = median over the runs of '
              f'(original time / ours of the adjacent run)')
        head = f"{'row':<14} {'N':>5} {'n':>4} {'K':>4} {'ours s':>8} {'orig s':>8} {'speed-up':>8} {'min-max':>12}"
        print(head)
        print('-' * len(head))
        for name in args.rows.split(','):
            r = launch(name, 'pair')
            if r is not None:
                print(f"{name:<14} {r['N']:>5} {r['n']:>4} {r['K'] or '-':>4} {r['ours']:>8.3f} {r['orig']:>8.3f} "
                      f"{r['ratio']:>7.1f}x {r['ratio_min']:>5.1f}-{r['ratio_max']:<5.1f}x", flush=True)
        print(f'load average at the end {os.getloadavg()[0]:.2f}')
        return
    results, originals = [], {}
    for name in args.rows.split(','):
        r = launch(name, 'ours')
        if r is not None:
            results.append(r)
        if args.original:
            originals[name] = launch(name, 'original')
    head = (f"{'row':<14} {'N':>5} {'n':>4} {'K':>4} {'time s':>8} {'orig s':>7} {'speed-up':>8} {'peak MB':>8} "
            f"{'t err m':>8} {'yaw °':>6} {'>1 m %':>7} {'agree %':>8} {'1st call s':>10}")
    print(f'threads={args.threads} runs={args.runs} cost_backend={args.cost_backend} (median after a warm-up; '
          f'1st call = the warm-up, incl. torch.compile with the inductor cache as found); '
          f'load average at the end {os.getloadavg()[0]:.2f}')
    print(head)
    print('-' * len(head))
    for r in results:
        orig = ROWS[r['name']][4]
        print(f"{r['name']:<14} {r['N']:>5} {r['n']:>4} {r['K'] or '-':>4} {r['time']:>8.3f} {orig:>7.2f} "
              f"{orig / r['time']:>7.1f}x {r['peak_mb']:>8.0f} {r['t_err']:>8.3f} {r['yaw_err']:>6.2f} "
              f"{r['pct_far']:>7.1f} {r['pct_agree']:>8.1f} {r['warmup']:>10.1f}")
    b = BASELINE_ACCURACY
    print(f"original at (144, 256) (issue 7): t err {b['t_err']:.2f} m, yaw {b['yaw_err']:.2f}°, "
          f"{b['pct_far']:.1f} % > 1 m")
    if originals:
        print('\noriginal implementation measured now, same problems and settings ("orig s" = its median):')
        print(head)
        print('-' * len(head))
        ours = {r['name']: r for r in results}
        for name, r in originals.items():
            if r is None or name not in ours:
                continue
            print(f"{name:<14} {r['N']:>5} {r['n']:>4} {r['K'] or '-':>4} {ours[name]['time']:>8.3f} "
                  f"{r['time']:>7.3f} {r['time'] / ours[name]['time']:>7.1f}x {r['peak_mb']:>8.0f} "
                  f"{r['t_err']:>8.3f} {r['yaw_err']:>6.2f} {r['pct_far']:>7.1f} {r['pct_agree']:>8.1f} "
                  f"{r['warmup']:>10.1f}")
        print('(accuracy and peak-memory columns of this table are the original\'s)')
    if args.profile:
        for r in results:
            print(f"\n=== {r['name']}: stages (s, one call) ===")
            for k, v in r.get('stages', {}).items():
                print(f'  {k:<40} {v:.3f}')
            print(r.get('profile', ''))


if __name__ == '__main__':
    main()
