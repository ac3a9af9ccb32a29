"""nuScenes classes and attributes: which attributes each class may carry (docs/method.md §4.2), in one place.

The head restricts its attribute prediction to the allowed set of the predicted class (``test_cfg.cls_attrs``,
default :data:`NUSCENES_CLS_ATTRS`); the metric restricts the attribute written into the submission with
:data:`CLS2ATTR` / :data:`DEFAULT_ATTR`. Both come from the table below.
"""
from typing import Dict, Sequence, Tuple

__all__ = ['NUSCENES_CLASSES', 'ATTRIBUTES', 'CLS2ATTR', 'DEFAULT_ATTR', 'NONE_ATTR', 'class_attribute_sets',
           'NUSCENES_CLS_ATTRS']

#: the ten detection classes in the order of the class index
NUSCENES_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle', 'pedestrian',
                    'traffic_cone', 'barrier')
#: the nine attribute names in the order of the attribute index (8 = 'None', "no attribute")
ATTRIBUTES = ('cycle.with_rider', 'cycle.without_rider', 'pedestrian.moving', 'pedestrian.standing',
              'pedestrian.sitting_lying_down', 'vehicle.moving', 'vehicle.parked', 'vehicle.stopped', 'None')
NONE_ATTR = ATTRIBUTES.index('None')
_VEHICLE, _CYCLE, _PED = (5, 6, 7), (0, 1), (2, 3, 4)
#: allowed attribute indices per class name; empty = the class has no attribute ('' in the submission JSON)
CLS2ATTR: Dict[str, Tuple[int, ...]] = dict(
    car=_VEHICLE, truck=_VEHICLE, trailer=_VEHICLE, bus=_VEHICLE, construction_vehicle=_VEHICLE, bicycle=_CYCLE,
    motorcycle=_CYCLE, pedestrian=_PED, traffic_cone=(), barrier=())
#: attribute used when a given attribute label is outside the class's set (mmdet3d's DefaultAttribute)
DEFAULT_ATTR = dict(car=6, truck=6, trailer=6, bus=5, construction_vehicle=6, bicycle=1, motorcycle=1,
                    pedestrian=2, traffic_cone=None, barrier=None)


def class_attribute_sets(class_names: Sequence[str] = NUSCENES_CLASSES) -> Tuple[Tuple[int, ...], ...]:
    """Allowed attribute indices per class index, for an argmax over attribute logits: the class's set, or
    ``(NONE_ATTR,)`` for a class without attributes.

    >>> class_attribute_sets(('bus', 'barrier'))
    ((5, 6, 7), (8,))
    """
    return tuple(CLS2ATTR[name] or (NONE_ATTR,) for name in class_names)


#: :func:`class_attribute_sets` of the nuScenes classes (the head's default ``test_cfg.cls_attrs``)
NUSCENES_CLS_ATTRS = class_attribute_sets(NUSCENES_CLASSES)
