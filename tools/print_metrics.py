"""Prints nuScenes metrics tables from devkit ``metrics_summary.json`` files.

    python tools/print_metrics.py DIR_OR_JSON [NAME=DIR_OR_JSON ...] [--classes]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

from epropnp_det.evaluation.summary import format_class_table, format_table, load_metrics_summary, summary_row  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('summaries', nargs='+', help='metrics_summary.json or its directory, optionally NAME=PATH')
    parser.add_argument('--classes', action='store_true', help='also print the per-class table of each summary')
    args = parser.parse_args(argv)
    rows, loaded = {}, {}
    for item in args.summaries:
        name, _, path = item.rpartition('=') if '=' in item else (item, '', item)
        loaded[name] = load_metrics_summary(path)
        rows[name] = summary_row(loaded[name])
    print(format_table(rows))
    if args.classes:
        for name, summary in loaded.items():
            print(f'\n{name}\n' + format_class_table(summary))


if __name__ == '__main__':
    main()
