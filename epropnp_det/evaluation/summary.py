"""Human-readable tables of nuScenes detection metrics (the devkit's ``metrics_summary.json``)."""
import json
import os.path as osp
from typing import Dict, Sequence

TP_KEYS = (('mATE', 'trans_err'), ('mASE', 'scale_err'), ('mAOE', 'orient_err'), ('mAVE', 'vel_err'),
           ('mAAE', 'attr_err'))


def load_metrics_summary(path: str) -> dict:
    """Reads ``metrics_summary.json`` (``path`` may be the file or the directory holding it)."""
    if osp.isdir(path):
        path = osp.join(path, 'metrics_summary.json')
    if not osp.isfile(path):
        raise FileNotFoundError(f'no nuScenes metrics summary at {path}')
    with open(path) as f:
        return json.load(f)


def summary_row(summary: dict) -> Dict[str, float]:
    """``{'NDS', 'mAP', 'mATE', ..., 'mAAE'}`` from a devkit summary dict."""
    row = dict(NDS=summary['nd_score'], mAP=summary['mean_ap'])
    for name, key in TP_KEYS:
        row[name] = summary['tp_errors'][key]
    return row


def format_table(rows: Dict[str, Dict[str, float]], columns: Sequence[str] = ('NDS', 'mAP', 'mATE', 'mASE', 'mAOE',
                                                                              'mAVE', 'mAAE')) -> str:
    """Markdown table: one row per model/run name."""
    head = '| model | ' + ' | '.join(columns) + ' |'
    sep = '|---|' + '---|' * len(columns)
    lines = [head, sep]
    for name, row in rows.items():
        lines.append(f'| {name} | ' + ' | '.join(f'{row[c]:.4f}' for c in columns) + ' |')
    return '\n'.join(lines)


def format_class_table(summary: dict) -> str:
    """Markdown table: per class AP and TP errors."""
    lines = ['| class | AP | ATE | ASE | AOE | AVE | AAE |', '|---|---|---|---|---|---|---|']
    for cls, ap in summary['mean_dist_aps'].items():
        tp = summary['label_tp_errors'][cls]
        vals = [tp[k] for _, k in TP_KEYS]
        lines.append(f'| {cls} | {ap:.3f} | ' + ' | '.join(f'{v:.3f}' for v in vals) + ' |')
    return '\n'.join(lines)
