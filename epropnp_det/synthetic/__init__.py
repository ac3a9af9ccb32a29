"""Synthetic nuScenes-format dataset generator (numpy / PIL / tqdm only; no mm* imports).

``generate_dataset(GeneratorConfig(out_dir=...))`` writes a ``v1.0-mini`` nuScenes root that the unchanged
nuscenes-devkit loads; see :mod:`epropnp_det.synthetic.generator` for the layout and modelling choices.
"""
from .constants import CAMERAS, CLASSES, LIDAR
from .generator import GeneratorConfig, generate_dataset

__all__ = ['CAMERAS', 'CLASSES', 'LIDAR', 'GeneratorConfig', 'generate_dataset']
