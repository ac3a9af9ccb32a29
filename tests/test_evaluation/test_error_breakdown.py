"""Error decomposition of matched detections (epropnp_det/evaluation/error_breakdown.py, tools/error_breakdown.py):
ground truth with known radial shifts, size factors and yaw flips must come back as exactly those numbers."""
import json
import math

import numpy as np
import pytest

from tests.test_datasets.tiny_nuscenes import tiny_nuscenes_root

REL = -0.02         # radial shift, fraction of the ego distance: towards the ego (stays within the class ranges)
W_FACTOR = 1.1      # predicted width / true width
YAW_SMALL = 0.1     # rad, added to the boxes that are not flipped


@pytest.fixture(scope='module')
def perturbed(tmp_path_factory):
    """(root, results json path, {class: (num gt, num flipped)}) for perturbed ground-truth predictions."""
    from nuscenes import NuScenes
    from nuscenes.eval.common.loaders import add_center_dist, load_gt
    from nuscenes.eval.common.utils import quaternion_yaw
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion

    root = tiny_nuscenes_root()
    nusc = NuScenes('v1.0-mini', root, verbose=False)
    gt = add_center_dist(nusc, load_gt(nusc, 'mini_val', DetectionBox, verbose=False))
    results, flipped = {}, {}
    for tok in gt.sample_tokens:
        out = []
        for i, g in enumerate(gt[tok]):
            ego = np.array(g.ego_translation[:2])
            flip = g.detection_name == 'car' and i % 2 == 0
            yaw = quaternion_yaw(Quaternion(g.rotation)) + (math.pi if flip else YAW_SMALL)
            box = dict(sample_token=tok, detection_name=g.detection_name, attribute_name=g.attribute_name or '',
                       translation=[g.translation[0] + REL * ego[0], g.translation[1] + REL * ego[1],
                                    g.translation[2]],
                       size=[g.size[0] * W_FACTOR, g.size[1], g.size[2]],
                       rotation=list(Quaternion(axis=[0, 0, 1], angle=yaw).elements),
                       velocity=list(g.velocity), detection_score=0.9 - 0.001 * i)
            # a lower-scored duplicate (must stay unmatched: each ground truth matches once) and a far decoy
            dup = dict(box, detection_score=0.1, translation=list(g.translation))
            decoy = dict(box, detection_score=0.95, translation=[g.translation[0] + 5.0, g.translation[1],
                                                                 g.translation[2]])
            out += [box, dup, decoy]
            flipped[g.detection_name] = flipped.get(g.detection_name, 0) + int(flip)
        results[tok] = out
    path = tmp_path_factory.mktemp('eb') / 'results_nusc.json'
    meta = dict(use_camera=True, use_lidar=False, use_radar=False, use_map=False, use_external=False)
    path.write_text(json.dumps(dict(meta=meta, results=results)))
    return root, str(path), flipped


def test_known_perturbations_are_recovered(perturbed):
    from epropnp_det.evaluation.error_breakdown import (
        depth_by_distance,
        load_eval_boxes,
        match_and_decompose,
        summarise,
    )
    root, path, flipped = perturbed
    gt, pred, classes = load_eval_boxes(root, path)
    errors = match_and_decompose(gt, pred, classes, dist_th=2.0)
    rows = summarise(errors)
    assert sum(r['matched'] for r in rows.values()) > 20
    for cls, r in rows.items():
        e = errors[cls]
        if not r['matched']:
            continue
        # the box-for-box predictions win every match (higher score than the duplicate; the decoy is 5 m away)
        assert r['matched'] == r['gt'], cls
        np.testing.assert_allclose(e.radial, REL * np.asarray(e.dist), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(e.tangential, 0.0, atol=1e-6)
        assert r['radial_rel'] == pytest.approx(abs(REL), rel=1e-5)
        assert r['radial_bias'] < 0           # predicted too near
        assert r['size_w'] == pytest.approx(math.log(W_FACTOR), rel=1e-6)
        assert r['size_l'] == pytest.approx(0.0, abs=1e-6) and r['size_h'] == pytest.approx(0.0, abs=1e-6)
        if cls == 'traffic_cone':
            assert math.isnan(r['yaw_deg']) and not e.yaw
            continue
        n_flip = flipped.get(cls, 0)
        assert r['yaw_ok'] == pytest.approx(1 - n_flip / r['matched'])
        if cls == 'barrier':
            assert math.isnan(r['yaw_flip'])
        else:
            assert r['yaw_flip'] == pytest.approx(n_flip / r['matched'])
            small = np.abs(np.asarray(e.yaw))[np.abs(np.asarray(e.yaw)) < 1.0]
            np.testing.assert_allclose(small, YAW_SMALL, atol=1e-5)
    by_dist = depth_by_distance(errors)
    assert sum(b['n'] for b in by_dist) == sum(r['matched'] for r in rows.values())
    for b in by_dist:
        if b['n']:
            assert b['radial_rel'] == pytest.approx(abs(REL), rel=1e-5)


def test_score_threshold_and_distance_threshold(perturbed):
    from epropnp_det.evaluation.error_breakdown import load_eval_boxes, match_and_decompose, summarise
    root, path, _ = perturbed
    gt, pred, classes = load_eval_boxes(root, path)
    # only the decoys score above 0.92: all 5 m off, so nothing matches within 2 m ...
    rows = summarise(match_and_decompose(gt, pred, classes, dist_th=2.0, score_thr=0.92))
    assert all(r['matched'] == 0 for r in rows.values())
    assert all(math.isnan(r['radial']) for r in rows.values())
    # ... but within 6 m they take the ground truth first (highest score), as in the devkit's greedy matching
    errors = match_and_decompose(gt, pred, classes, dist_th=6.0, score_thr=0.92)
    pairs = [(d, r, t) for e in errors.values() for d, r, t in zip(e.dist, e.radial, e.tangential)]
    norms = np.array([math.hypot(r, t) for _, r, t in pairs])
    assert len(norms) and (norms < 6.0).all()
    # a decoy takes its own object unless a same-class neighbour is nearer (then it sits < 5 m from that one)
    assert np.mean(np.abs(norms - 5.0) < 1e-6) > 0.5 and (norms < 5.0 + 1e-6).all()


def test_tool_prints_tables_and_draws(perturbed, tmp_path, capsys):
    import importlib.util
    import os.path as osp
    root, path, _ = perturbed
    spec = importlib.util.spec_from_file_location(
        'error_breakdown_tool', osp.join(osp.dirname(__file__), '..', '..', 'tools', 'error_breakdown.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    png = tmp_path / 'eb.png'
    tool.main([root, path, '--out-png', str(png)])
    out = capsys.readouterr().out
    assert '| car |' in out and '| distance (m) |' in out
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit, match='no results file'):
        tool.main([root, str(tmp_path / 'missing.json')])


def test_foreign_sample_tokens_are_named(perturbed, tmp_path):
    from epropnp_det.evaluation.error_breakdown import load_eval_boxes
    root, path, _ = perturbed
    data = json.loads(open(path).read())
    tok = next(iter(data['results']))
    data['results']['not_a_val_sample'] = [dict(b, sample_token='not_a_val_sample') for b in data['results'][tok]]
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match='bad.json: 1 sample tokens are not in v1.0-mini/mini_val'):
        load_eval_boxes(root, str(bad))
