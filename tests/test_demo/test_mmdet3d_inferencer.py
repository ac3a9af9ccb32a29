"""mmdet3d's own inference API runs the project's config and checkpoint end to end (no mocks):
``MonoDet3DInferencer(model=CONFIG, weights=CKPT)`` with a config *file* that inherits the project's config unchanged
(only test-time thresholds and the seed set), on an image with its ``cam2img``, and
``inference_mono_3d_detector`` on the same file; both give the boxes of ``EProPnPPredictor`` on the same image."""
import cv2
import numpy as np
import pytest
import torch

from epropnp_det.apis import EProPnPPredictor, write_mono_infos
from epropnp_det.structures.boxes import cam_boxes_to_model

from .conftest import CONFIG, RANDOM_MODEL_OPTIONS


@pytest.fixture(scope='module')
def image(demo_folder):
    import os.path as osp
    folder, renders = demo_folder
    return osp.join(folder, 'wide_640x360.png'), renders['wide_640x360']['cam2img']


@pytest.fixture(scope='module')
def reference(checkpoint, image, demo_folder):
    pred = EProPnPPredictor(CONFIG, checkpoint, cfg_options=RANDOM_MODEL_OPTIONS)
    return pred.predict([demo_folder[1]['wide_640x360']['img']], [image[1]])[0]


@pytest.fixture(scope='module')
def config_file(tmp_path_factory):
    """A user's config file: the project's config, inherited as is, with a random model's test thresholds."""
    path = tmp_path_factory.mktemp('cfg') / 'my_epropnp.py'
    opts = dict(RANDOM_MODEL_OPTIONS, **{'model.test_cfg.mc_seed': 0})
    lines = [f'_base_ = [{CONFIG!r}]', 'model = dict(test_cfg=dict(']
    lines += [f'    {k.rsplit(".", 1)[1]}={v!r},' for k, v in opts.items()]
    path.write_text('\n'.join(lines + ['))', '']))
    return str(path)


def _model_boxes(sample):
    boxes, _ = cam_boxes_to_model(sample.pred_instances_3d.bboxes_3d)
    order = np.lexsort((boxes[:, 5].numpy(), -sample.pred_instances_3d.scores_3d.numpy()))
    return boxes.double().numpy()[order]


def _sorted_ref(pred):
    return pred.boxes[np.lexsort((pred.boxes[:, 5], -pred.scores))]


def test_mono_det3d_inferencer(checkpoint, image, reference, config_file, tmp_path):
    from mmdet3d.apis import MonoDet3DInferencer
    img_path, K = image
    infos = str(tmp_path / 'infos.pkl')
    write_mono_infos(infos, [(img_path, K)])
    inferencer = MonoDet3DInferencer(model=config_file, weights=checkpoint, device='cpu')
    out = inferencer(dict(img=img_path, infos=infos), return_datasamples=True, no_save_vis=True,
                     no_save_pred=True)
    sample = out['predictions'][0]
    np.testing.assert_allclose(np.asarray(sample.metainfo['cam2img'])[:3, :3], K, rtol=1e-6)
    boxes = _model_boxes(sample)
    assert len(boxes) == len(reference) > 0
    np.testing.assert_allclose(boxes, _sorted_ref(reference), rtol=1e-4, atol=1e-4)
    # the default (JSON-able dict) output and mmdet3d's visualiser (Det3DLocalVisualizer) work too
    out = inferencer(dict(img=img_path, infos=infos), out_dir=str(tmp_path / 'vis'), pred_score_thr=0.0)
    pred = out['predictions'][0]
    assert pred['box_type_3d'] == 'Camera' and len(pred['bboxes_3d']) == len(reference)
    drawn = cv2.imread(str(tmp_path / 'vis' / 'vis_camera' / 'CAM2' / 'wide_640x360.png'))
    original = cv2.imread(img_path)
    assert drawn.shape == original.shape and (drawn != original).any(-1).sum() > 100


def test_inference_mono_3d_detector(checkpoint, image, reference, config_file, tmp_path):
    from mmdet3d.apis import inference_mono_3d_detector, init_model
    img_path, K = image
    ann = str(tmp_path / 'infos.pkl')
    write_mono_infos(ann, [(img_path, K)], cam_type='CAM_FRONT')
    model = init_model(config_file, checkpoint, device='cpu')
    with torch.no_grad():
        sample = inference_mono_3d_detector(model, img_path, ann)
    np.testing.assert_allclose(_model_boxes(sample), _sorted_ref(reference), rtol=1e-4, atol=1e-4)
