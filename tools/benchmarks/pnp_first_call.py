"""First-call time of each PnP-layer function with default settings, each in a fresh interpreter.

    python tools/benchmarks/pnp_first_call.py [--threads 2] [--backend default] [--cold-native-cache]
                                              [--json docs/results/X.json]

Why: ``torch.compile`` costs 10–120 s per process on a 2-core CPU (minutes with a cold inductor cache), which a
new user meets as a first training step that seems to hang. With the default backend (``'default'``: never
compiles, CUDA graphs on a GPU) every function below must answer within a few seconds in a fresh process.
Each row starts a new Python process, imports the layer, builds the problem, then times the first call and a
second call (the difference is one-off work: compilation, lazy initialisation). Import time is not included
(``tools/benchmarks/import_time.py``). ``--backend auto`` shows what opting into compilation costs.
On the CPU the default backend runs the native C++ kernels (:mod:`epropnp_det.ops.pnp._native`), built once per
machine into a cache; ``--cold-native-cache`` gives every row an empty cache of its own, so each first call
includes that build, as on a fresh machine.

Problem sizes (CPU): the 4-DoF rows are the detector's training/inference batches of ``tools/benchmarks/
pnp_layer.py`` (96 objects × 128 points × 128 samples; 144 × 256 at inference); the 6-DoF rows are the original's
identity-fitting demo (a batch of 256 poses × 64 points × 512 samples).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _bench_common import REPO, add_json_option, format_table, write_json  # noqa: E402

_SETUP = '''
import json, sys, time, torch
torch.set_num_threads({threads})
from epropnp_det.ops.pnp import (EProPnP4DoF, EProPnP6DoF, MonteCarloPoseLoss, adaptive_huber_delta,
                                 derivative_regularization, sampled_pnp_cost, solve_pnp)
from epropnp_det.ops.pnp.testing import make_problems
BACKEND = {backend!r}
'''

# name -> (problem arguments, code of one call using p, gen)
ROWS = {
    'solve_pnp (4-DoF, LM, 96 x 128)': (
        dict(N=96, n=128, dof=4),
        "solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], generator=gen, backend=BACKEND)"),
    'solve_pnp (4-DoF, GN inference, 144 x 256)': (
        dict(N=144, n=256, dof=4),
        "solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], fast_mode=True, num_iter=5, with_cov=True, "
        "generator=gen, backend=BACKEND)"),
    'EProPnP4DoF MC forward + KL loss backward (96 x 128 x 128)': (
        dict(N=96, n=128, dof=4),
        "w = p['w2d'].clone().requires_grad_(); "
        "mc = EProPnP4DoF(mc_samples=128, cost_backend=BACKEND).monte_carlo_forward(p['x3d'], p['x2d'], w, "
        "p['camera'], pose_init=p['pose_gt'], generator=gen); "
        "MonteCarloPoseLoss()(mc.cost_init, mc.logw).loss.backward()"),
    'derivative_regularization (4-DoF, 96 x 128)': (
        dict(N=96, n=128, dof=4),
        "w = p['w2d'].clone().requires_grad_(); "
        "r = derivative_regularization(p['x3d'], p['x2d'], w, p['camera'], adaptive_huber_delta(p['x2d'], w), "
        "p['pose_gt'], generator=gen, backend=BACKEND); (r['loss_pos'] + r['loss_orient']).sum().backward()"),
    'sampled_pnp_cost fwd + bwd (4-DoF, 512 x 96 x 128)': (
        dict(N=96, n=128, dof=4),
        "w = p['w2d'].clone().requires_grad_(); "
        "poses = p['pose_gt'] + 0.1 * torch.randn(512, 96, 4, generator=gen); "
        "sampled_pnp_cost(p['x3d'], p['x2d'], w, poses, p['camera'], torch.ones(96), backend=BACKEND).sum()"
        ".backward()"),
    'EProPnP6DoF MC forward (pose_plus) + losses backward (256 x 64 x 512)': (
        dict(N=256, n=64, dof=6),
        "w = p['w2d'].clone().requires_grad_(); "
        "mc = EProPnP6DoF(mc_samples=512, cost_backend=BACKEND).monte_carlo_forward(p['x3d'], p['x2d'], w, "
        "p['camera'], pose_init=p['pose_gt'], with_pose_plus=True, generator=gen); "
        "(MonteCarloPoseLoss()(mc.cost_init, mc.logw).loss + mc.pose_plus.sum()).backward()"),
    'solve_pnp (6-DoF, 256 x 64)': (
        dict(N=256, n=64, dof=6),
        "solve_pnp(p['x3d'], p['x2d'], p['w2d'], p['camera'], dof=6, generator=gen, backend=BACKEND)"),
}

_BODY = '''
p = make_problems({N}, {n}, generator=torch.Generator().manual_seed(0), dof={dof})
times = []
for i in range(2):
    gen = torch.Generator().manual_seed(i)
    t = time.perf_counter()
    {call}
    times.append(time.perf_counter() - t)
print(json.dumps(times))
'''


def first_call(name: str, threads: int, backend: str, cold_native_cache: bool = False) -> list:
    prob, call = ROWS[name]
    code = _SETUP.format(threads=threads, backend=backend) + _BODY.format(call=call, **prob)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
    if cold_native_cache:
        with tempfile.TemporaryDirectory(prefix='epropnp_native_') as cache:
            env['EPROPNP_NATIVE_CACHE'] = cache
            return _run(name, code, env)
    return _run(name, code, env)


def _run(name: str, code: str, env: dict) -> list:
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f'{name!r} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    p.add_argument('--backend', default='default', choices=['default', 'eager', 'auto', 'compile'],
                   help="backend passed to every function (default: the library default 'default')")
    p.add_argument('--rows', default=None, help='comma-separated substrings selecting rows')
    p.add_argument('--cold-native-cache', action='store_true',
                   help='an empty native-kernel cache per row: each first call includes the C++ build (CPU)')
    add_json_option(p)
    args = p.parse_args(argv)
    names = [n for n in ROWS if args.rows is None or any(s in n for s in args.rows.split(','))]
    rows, records = [], []
    for name in names:
        t1, t2 = first_call(name, args.threads, args.backend, args.cold_native_cache)
        rows.append([name, f'{t1:.2f}', f'{t2:.2f}', f'{t1 - t2:.2f}'])
        records.append(dict(name=name, first_call_s=t1, second_call_s=t2))
        print(f'{name}: first {t1:.2f} s, second {t2:.2f} s', flush=True)
    print(format_table(['function (problem)', '1st call s', '2nd call s', 'one-off s'], rows,
                       title=f'First call in a fresh process, backend={args.backend!r}, {args.threads} threads'
                             + (', cold native cache' if args.cold_native_cache else '')))
    write_json(args.json, records, argv, threads=args.threads, backend=args.backend,
               cold_native_cache=args.cold_native_cache)
    return 0


if __name__ == '__main__':
    sys.exit(main())
