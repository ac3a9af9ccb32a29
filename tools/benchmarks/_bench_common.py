"""Helpers shared by ``tools/benchmarks/*.py``: config loading with a data-root override, table formatting."""
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # run from a clone without installing


def data_root_options(cfg, data_root: str) -> Dict[str, str]:
    """Dotted ``--cfg-options`` keys that point every dataloader dataset and evaluator of ``cfg`` (an mmengine
    Config) at ``data_root``.

    Config variables such as ``data_root`` are resolved when the file is parsed, so ``--cfg-options
    data_root=...`` would not reach the datasets; these options rewrite the resolved fields instead. An
    evaluator's ``ann_file`` becomes ``<data_root>/<its basename>``. Dataset wrappers (``dataset.dataset``) are
    followed.
    """
    root = data_root.rstrip('/') + '/'
    opts = {}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        path, ds = f'{key}.dataset', loader['dataset']
        while 'data_root' not in ds and 'dataset' in ds:  # RepeatDataset, CBGSDataset, ...
            path, ds = f'{path}.dataset', ds['dataset']
        opts[f'{path}.data_root'] = root
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if not evaluators:
            continue
        items = list(enumerate(evaluators)) if isinstance(evaluators, (list, tuple)) else [(None, evaluators)]
        for i, ev in items:
            path = key if i is None else f'{key}.{i}'
            if 'data_root' in ev:
                opts[f'{path}.data_root'] = root
            if ev.get('ann_file'):
                opts[f'{path}.ann_file'] = root + osp.basename(ev['ann_file'])
    return opts


def set_data_root(cfg, data_root: str) -> None:
    """Applies :func:`data_root_options` to ``cfg`` in place."""
    cfg.merge_from_dict(data_root_options(cfg, data_root))


def load_config(path: str, data_root: Optional[str] = None, cfg_options: Optional[dict] = None):
    """``Config.fromfile`` (runs ``custom_imports``), registers mmdet3d's modules, sets the default scope, then
    applies ``data_root`` (see :func:`set_data_root`) and ``cfg_options``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config not found: {path}')
    from mmdet3d.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(path)
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    if data_root:
        set_data_root(cfg, data_root)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def model_name(config_path: str) -> str:
    """``configs/baselines/fcos3d_r18_synthetic.py`` -> ``fcos3d_r18_synthetic`` (the work-dir name)."""
    return osp.splitext(osp.basename(config_path))[0]


def format_table(header: Sequence[str], rows: List[Sequence], title: Optional[str] = None) -> str:
    """Plain-text (and Markdown-compatible) table: ``| a | b |`` rows with a ``|---|`` separator. Floats are
    printed with 4 significant decimals unless pre-formatted as strings; ``None`` prints as ``n/a``."""
    def cell(v):
        if v is None:
            return 'n/a'
        if isinstance(v, float):
            return f'{v:.4f}'
        return str(v)

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
    lines = [] if title is None else [title]
    lines.append('| ' + ' | '.join(h.ljust(w) for h, w in zip(header, widths)) + ' |')
    lines.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for r in body:
        lines.append('| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |')
    return '\n'.join(lines)


def run_meta(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Where and how a result was measured: UTC date and time, host, CPU count, torch version and device, the
    command line and the git commit (``None`` outside a checkout). Stored as ``meta`` in every ``--json`` file."""
    import datetime
    import os
    import platform
    import subprocess
    meta: Dict[str, object] = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d'),
        time_utc=datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S'),
        host=platform.node(), cpus=os.cpu_count(), python=platform.python_version(),
        command=' '.join(['python', osp.relpath(osp.abspath(sys.argv[0]), REPO)] +
                         list(sys.argv[1:] if argv is None else argv)))
    try:
        import torch
        meta['torch'] = torch.__version__
        meta['torch_threads'] = torch.get_num_threads()
        meta['cuda_device'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        meta['commit'] = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta['commit'] = None
    return meta


def write_json(path: Optional[str], rows, argv: Optional[Sequence[str]] = None, **extra) -> None:
    """Writes ``{"meta": run_meta(argv), **extra, "rows": rows}`` to ``path`` (nothing if ``path`` is None);
    ``tools/make_readme_tables.py`` reads such files from ``docs/results/``."""
    if not path:
        return
    import json
    import os
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(dict(meta=run_meta(argv), **extra, rows=rows), f, indent=1, default=str)
    print(f'wrote {path}')


def add_json_option(parser) -> None:
    """The benchmarks' common ``--json PATH`` option (results for ``docs/results/``)."""
    parser.add_argument('--json', metavar='PATH', default=None,
                        help='also write the results (with date, machine, command, commit) as JSON, e.g. '
                             'docs/results/NAME_YYYY-MM-DD.json (see tools/make_readme_tables.py)')
