"""``tools/benchmarks/demo_speed.py`` prints its table (tiny run: 2 small images, batch 1 and 2)."""
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@pytest.mark.slow  # about 20 s on 2 shared cores (model built twice)
def test_demo_speed_table(capsys):
    sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmarks'))
    from demo_speed import main
    rows = main(['--num-images', '2', '--batch-sizes', '1', '2', '--devices', 'cpu', '--image-size', '320', '180',
                 '--repeats', '1', '--views', '3d'])
    out = capsys.readouterr().out
    assert [r[:3] for r in rows] == [['cpu', 1, 2], ['cpu', 2, 2]]
    for r in rows:
        model, demo, ms = float(r[3]), float(r[4]), float(r[5])
        assert model > 0 and demo > 0 and abs(ms * demo / 1000 - 1) < 0.02   # ms/img: the demo column's inverse
    assert '| device | batch | images | model img/s | demo img/s | demo ms/img |' in out
