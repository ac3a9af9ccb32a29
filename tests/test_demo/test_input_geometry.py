"""Images of any size become the model's input scale with the intrinsics carried exactly.

The expected network-input position of a projected 3D point is computed by hand (keep-ratio scale to fit
640x360, bottom 256 rows kept: the synthetic config's test pipeline) and compared with where a disc drawn at that
point ends up in the resized and cropped image, and with the recorded ``img_transform``.
"""
import numpy as np
import pytest
from mmengine.config import Config

from epropnp_det.apis import InputGeometry, intrinsics_matrix
from epropnp_det.apis.inference import transform_intrinsics

from .conftest import CONFIG


@pytest.fixture(scope='module')
def geometry():
    return InputGeometry.from_pipeline(Config.fromfile(CONFIG).test_dataloader.dataset.pipeline)


def test_geometry_from_config(geometry):
    assert geometry == InputGeometry(ref_size=(640, 360), crop_size=(640, 256))
    assert geometry.plan(640, 360) == ((640, 360), (0, 104, 640, 360))       # the training crop itself
    assert geometry.plan(1600, 900) == ((640, 360), (0, 104, 640, 360))
    assert geometry.plan(640, 256) == ((640, 256), None)
    assert geometry.plan(800, 600) == ((480, 360), (0, 104, 480, 360))
    assert geometry.plan(2000, 500) == ((640, 160), None)                    # wide: fits the width
    assert geometry.plan(360, 640) == ((203, 360), (0, 104, 203, 360))      # portrait: fits the height
    r101 = InputGeometry.from_pipeline([dict(type='EProPnPLoadImage'), dict(type='EProPnPCrop',
                                                                            crop_box=(0, 228, 1600, 900))])
    assert r101 == InputGeometry(ref_size=(1600, 900), crop_size=(1600, 672))


def _blob_centroid(img: np.ndarray, near_uv, radius: float = 12) -> np.ndarray:
    g = img.astype(np.float64).sum(-1)
    v, u = np.mgrid[:g.shape[0], :g.shape[1]]
    w = g * ((u - near_uv[0]) ** 2 + (v - near_uv[1]) ** 2 < radius ** 2)
    return np.array([(w * u).sum(), (w * v).sum()]) / w.sum()


@pytest.mark.parametrize('size, scale, crop_y', [((800, 600), 0.6, 104), ((1280, 720), 0.5, 104),
                                                 ((320, 180), 2.0, 104), ((500, 300), 1.2, 104),
                                                 ((1000, 300), 0.64, 0)])
def test_projected_point_lands_where_expected(geometry, size, scale, crop_y):
    from epropnp_det.structures.boxes import apply_transform
    w, h = size
    K = intrinsics_matrix(0.8 * w, 0.8 * w, w / 2 + 3.3, h / 2 - 7.1)
    point = np.array([1.5, 0.9, 12.0])                           # camera frame, below the horizon (kept rows)
    uvw = K @ point
    u, v = uvw[:2] / uvw[2]                                       # K-projection: pixel centre convention
    img = np.zeros((h, w, 3), np.uint8)
    vv, uu = np.mgrid[:h, :w]
    r = 8.0 / min(scale, 1.0)                                     # a disc that survives downscaling
    img[(uu - u) ** 2 + (vv - v) ** 2 <= r ** 2] = 255
    results, resize = geometry.apply(img, K, 'v1', 'dots.png')
    out = results['img']
    # by hand: continuous coordinates scale by `scale`, then the crop removes crop_y rows
    expected = np.array([(u + 0.5) * scale - 0.5, (v + 0.5) * scale - 0.5 - crop_y])
    found = _blob_centroid(out, expected, radius=r * scale + 4)
    np.testing.assert_allclose(found, expected, atol=0.15)
    np.testing.assert_allclose(resize, np.diag([scale, scale, 1.0]), atol=1e-12)
    # the model's intrinsics (of the resized image) project the point there too, before the recorded crop
    uvw = results['cam2img'] @ point
    np.testing.assert_allclose(apply_transform(results['img_transform'], uvw[:2] / uvw[2] + 0.5) - 0.5, expected,
                               atol=1e-9)
    assert results['ori_shape'] == (round(h * scale), round(w * scale))
    assert out.shape[:2] == (round(h * scale) - crop_y, round(w * scale))


def test_transform_intrinsics_conventions():
    K = intrinsics_matrix(100., 120., 30., 40.)
    # v1 (pixel i centred on u = i): halving the image moves centre 30 -> (30.5 / 2 - 0.5)
    np.testing.assert_allclose(transform_intrinsics(K, np.diag([0.5, 0.5, 1.]), 'v1'),
                               [[50, 0, 14.75], [0, 60, 19.75], [0, 0, 1]])
    np.testing.assert_allclose(transform_intrinsics(K, np.diag([0.5, 0.5, 1.]), 'v2'),
                               [[50, 0, 15], [0, 60, 20], [0, 0, 1]])
    crop = np.array([[1., 0, -10], [0, 1, -5], [0, 0, 1]])
    np.testing.assert_allclose(transform_intrinsics(K, crop, 'v1'), [[100, 0, 20], [0, 120, 35], [0, 0, 1]])
