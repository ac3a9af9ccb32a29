"""Fixed tables of the synthetic nuScenes-format generator: classes, categories, sizes, colours and the camera rig.

Conventions (shared by the whole ``epropnp_det.synthetic`` package):

* Ego frame: x forward, y left, z up, metres; the ground is the plane z = 0 of the ego frame.
* Camera frame: OpenCV (x right, y down, z forward).  Pixel (column i, row j) shows the ray through
  ``u = i, v = j`` of ``K`` (integer coordinates are pixel centres, as in OpenCV and the nuScenes calibration).
* Box local frame (nuScenes ``Box``): x = length direction (heading), y = width direction (left), z = up;
  sizes are stored as ``wlh`` = (width, length, height) like ``sample_annotation.size``.
* Rotations are ``[w, x, y, z]`` quaternions (pyquaternion / devkit order); translations in metres.
"""
from __future__ import annotations

# The 10 nuScenes detection classes, in mmdet3d / EPro-PnP order.
CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
           'traffic_cone', 'barrier')

# Detection class -> nuScenes category name used for the generated objects (one per class).
CLASS_TO_CATEGORY = {
    'car': 'vehicle.car',
    'truck': 'vehicle.truck',
    'trailer': 'vehicle.trailer',
    'bus': 'vehicle.bus.rigid',
    'construction_vehicle': 'vehicle.construction',
    'bicycle': 'vehicle.bicycle',
    'motorcycle': 'vehicle.motorcycle',
    'pedestrian': 'human.pedestrian.adult',
    'traffic_cone': 'movable_object.trafficcone',
    'barrier': 'movable_object.barrier',
}

# The full nuScenes v1.0 category list (name, description); only the 10 above are instantiated.
CATEGORIES = (
    ('human.pedestrian.adult', 'Adult subcategory.'),
    ('human.pedestrian.child', 'Child subcategory.'),
    ('human.pedestrian.wheelchair', 'Wheelchairs.'),
    ('human.pedestrian.stroller', 'Strollers.'),
    ('human.pedestrian.personal_mobility', 'A small electric or self-propelled vehicle.'),
    ('human.pedestrian.police_officer', 'Police officer.'),
    ('human.pedestrian.construction_worker', 'Construction worker.'),
    ('animal', 'All animals.'),
    ('vehicle.car', 'Vehicle designed primarily for personal use.'),
    ('vehicle.motorcycle', 'Gasoline or electric powered 2-wheeled vehicle.'),
    ('vehicle.bicycle', 'Human or electric powered 2-wheeled vehicle.'),
    ('vehicle.bus.bendy', 'Bendy bus subcategory.'),
    ('vehicle.bus.rigid', 'Rigid bus subcategory.'),
    ('vehicle.truck', 'Vehicles primarily designed to haul cargo.'),
    ('vehicle.construction', 'Vehicles primarily designed for construction.'),
    ('vehicle.emergency.ambulance', 'All types of ambulances.'),
    ('vehicle.emergency.police', 'All types of police vehicles.'),
    ('vehicle.trailer', 'Any vehicle trailer.'),
    ('movable_object.barrier', 'Temporary road barrier placed in the scene.'),
    ('movable_object.trafficcone', 'All types of traffic cone.'),
    ('movable_object.pushable_pullable', 'Objects that a pedestrian may push or pull.'),
    ('movable_object.debris', 'Movable object that is left on the driveable surface.'),
    ('static_object.bicycle_rack', 'Area or device intended to park or secure the bicycles in a row.'),
)

# The 8 nuScenes attributes (name, description), in the nuScenes / mmdet3d attribute-index order.
ATTRIBUTES = (
    ('cycle.with_rider', 'There is a rider on the bicycle or motorcycle.'),
    ('cycle.without_rider', 'There is NO rider on the bicycle or motorcycle.'),
    ('pedestrian.moving', 'The human is moving.'),
    ('pedestrian.standing', 'The human is standing.'),
    ('pedestrian.sitting_lying_down', 'The human is sitting or lying down.'),
    ('vehicle.moving', 'Vehicle is moving.'),
    ('vehicle.parked', 'Vehicle is stationary (usually for longer duration) with no immediate intent to move.'),
    ('vehicle.stopped', 'Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.'),
)

# nuScenes visibility table: token, level, description.  Level = fraction of the box visible over all 6 images.
VISIBILITIES = (
    ('1', 'v0-40', 'visibility of whole object is between 0 and 40%'),
    ('2', 'v40-60', 'visibility of whole object is between 40 and 60%'),
    ('3', 'v60-80', 'visibility of whole object is between 60 and 80%'),
    ('4', 'v80-100', 'visibility of whole object is between 80 and 100%'),
)


def visibility_token(fraction: float) -> str:
    """Visible fraction in [0, 1] -> nuScenes visibility token '1'..'4' (bins 0-40, 40-60, 60-80, 80-100 %)."""
    if fraction < 0.4:
        return '1'
    if fraction < 0.6:
        return '2'
    if fraction < 0.8:
        return '3'
    return '4'


# Class size statistics from docs/method.md §3.7, order (l, h, w) metres: mean and standard deviation.
SIZE_MEAN_LHW = {
    'car': (4.62, 1.73, 1.96), 'truck': (6.94, 2.84, 2.52), 'trailer': (12.56, 3.89, 2.94),
    'bus': (11.22, 3.50, 2.95), 'construction_vehicle': (6.68, 3.21, 2.85), 'bicycle': (1.70, 1.29, 0.61),
    'motorcycle': (2.11, 1.46, 0.78), 'pedestrian': (0.73, 1.77, 0.67), 'traffic_cone': (0.41, 1.08, 0.41),
    'barrier': (0.50, 0.99, 2.52),
}
SIZE_STD_LHW = {
    'car': (0.46, 0.24, 0.16), 'truck': (2.11, 0.84, 0.45), 'trailer': (4.50, 0.77, 0.54),
    'bus': (2.06, 0.49, 0.33), 'construction_vehicle': (3.23, 0.93, 1.07), 'bicycle': (0.26, 0.35, 0.16),
    'motorcycle': (0.33, 0.29, 0.17), 'pedestrian': (0.19, 0.19, 0.14), 'traffic_cone': (0.14, 0.27, 0.13),
    'barrier': (0.17, 0.15, 0.62),
}

# Per-class base colour (RGB) of the rendered cuboids: distinct hues so that the class is learnable.
CLASS_COLORS = {
    'car': (220, 20, 20),                  # red, hue 0
    'truck': (20, 60, 230),                # blue, hue 230
    'trailer': (140, 40, 220),             # violet, hue 273
    'bus': (250, 210, 0),                  # yellow, hue 50
    'construction_vehicle': (255, 120, 0),  # orange, hue 28
    'bicycle': (0, 200, 200),              # cyan, hue 180
    'motorcycle': (230, 0, 200),           # magenta, hue 308
    'pedestrian': (20, 180, 20),           # green, hue 120
    'traffic_cone': (140, 240, 0),         # chartreuse, hue 85
    'barrier': (235, 235, 235),            # white (with dark stripes on the long faces)
}
# LiDAR intensity (0..255) per class surface.
CLASS_INTENSITY = {
    'car': 40., 'truck': 35., 'trailer': 30., 'bus': 45., 'construction_vehicle': 60., 'bicycle': 20.,
    'motorcycle': 25., 'pedestrian': 15., 'traffic_cone': 90., 'barrier': 80.,
}

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
LIDAR = 'LIDAR_TOP'

# Camera rig modelled on the nuScenes vehicle (values rounded from the public v1.0 calibration):
# name -> (translation in ego [x, y, z] m, yaw of the optical axis about ego z in degrees (0 = forward,
# positive = to the left), fx, fy, cx, cy for a 1600x900 image).  Optical axes are horizontal.
CAMERA_RIG = {
    'CAM_FRONT': ((1.70, 0.02, 1.51), 0.0, 1266.4, 1266.4, 816.3, 491.5),
    'CAM_FRONT_RIGHT': ((1.55, -0.49, 1.49), -55.0, 1260.8, 1260.8, 808.0, 495.3),
    'CAM_FRONT_LEFT': ((1.52, 0.49, 1.51), 55.0, 1272.6, 1272.6, 826.6, 479.8),
    'CAM_BACK': ((0.03, 0.00, 1.57), 180.0, 809.2, 809.2, 829.2, 481.8),
    'CAM_BACK_LEFT': ((1.04, 0.48, 1.56), 110.0, 1256.7, 1256.7, 817.8, 452.0),
    'CAM_BACK_RIGHT': ((1.03, -0.48, 1.59), -110.0, 1259.5, 1259.5, 807.3, 501.2),
}
RIG_IMAGE_SIZE = (1600, 900)  # (W, H) the intrinsics above refer to

# LIDAR_TOP: position in ego (m) and yaw (deg); like nuScenes the sensor x axis points to the ego's right.
LIDAR_TRANSLATION = (0.94, 0.0, 1.84)
LIDAR_YAW_DEG = -90.0
LIDAR_NUM_BEAMS = 32
LIDAR_ELEVATION_DEG = (-30.0, 10.0)
LIDAR_AZIMUTH_STEPS = 1100
LIDAR_MAX_RANGE = 70.0

# Mini-split scene names of nuscenes-devkit (create_splits_scenes): 8 mini_train then 2 mini_val.
MINI_TRAIN_SCENES = ('scene-0061', 'scene-0553', 'scene-0655', 'scene-0757', 'scene-0796', 'scene-1077',
                     'scene-1094', 'scene-1100')
MINI_VAL_SCENES = ('scene-0103', 'scene-0916')
LOCATIONS = ('boston-seaport', 'singapore-onenorth', 'singapore-queenstown', 'singapore-hollandvillage')

KEYFRAME_INTERVAL_US = 500_000  # 2 Hz keyframes
ANNOTATION_RADIUS = 55.0        # objects farther than this (ego xy distance) are neither annotated nor rendered
