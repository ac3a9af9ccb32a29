"""Per-class error decomposition of a nuScenes detection result (where mAP / NDS are lost).

    python tools/error_breakdown.py DATA_ROOT RESULTS_JSON [--version v1.0-mini] [--eval-set mini_val]
                                    [--dist-th 2.0] [--score-thr 0.0] [--out-png FILE]

RESULTS_JSON is a submission-format file such as ``<jsonfile_prefix>/results_nusc.json`` written by
``tools/test.py``. Predictions are matched to ground truth as the devkit does (descending score, nearest unmatched
ground truth within ``--dist-th`` m); for the matched pairs it prints per class the median radial (along the line
of sight, i.e. depth) and tangential position errors, size errors, and the orientation error split into small
errors and front/back flips, then the radial error by distance. ``--out-png`` draws radial error vs distance and
the |yaw error| histograms. See ``epropnp_det/evaluation/error_breakdown.py`` for the definitions.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

from epropnp_det.evaluation.error_breakdown import (  # noqa: E402
    depth_by_distance,
    format_breakdown,
    load_eval_boxes,
    match_and_decompose,
    plot_breakdown,
    summarise,
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('data_root', help='nuScenes root (with v1.0-mini/ or v1.0-trainval/)')
    p.add_argument('result_json', help='submission-format results, e.g. <jsonfile_prefix>/results_nusc.json')
    p.add_argument('--version', default='v1.0-mini')
    p.add_argument('--eval-set', default=None, help='devkit split (default: mini_val for v1.0-mini, else val)')
    p.add_argument('--dist-th', type=float, default=2.0, help='BEV centre distance of a match (m)')
    p.add_argument('--score-thr', type=float, default=0.0, help='ignore predictions below this score')
    p.add_argument('--out-png', default=None, help='also draw radial error vs distance and yaw-error histograms')
    args = p.parse_args(argv)
    if not osp.isfile(args.result_json):
        raise SystemExit(f'error_breakdown: no results file {args.result_json}')
    eval_set = args.eval_set or ('mini_val' if args.version == 'v1.0-mini' else 'val')
    gt, pred, classes = load_eval_boxes(args.data_root, args.result_json, args.version, eval_set)
    errors = match_and_decompose(gt, pred, classes, dist_th=args.dist_th, score_thr=args.score_thr)
    print(f'{args.result_json}: matched within {args.dist_th} m, score >= {args.score_thr}\n')
    print(format_breakdown(summarise(errors), depth_by_distance(errors)))
    if args.out_png:
        plot_breakdown(errors, args.out_png, title=osp.basename(osp.dirname(osp.abspath(args.result_json))))
        print(f'\nwrote {args.out_png}')


if __name__ == '__main__':
    main()
