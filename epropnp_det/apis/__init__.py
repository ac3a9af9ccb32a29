"""Inference on your own images (``tools/demo.py``): intrinsics, inputs, the predictor, the JSON output, and the
adapter that lets mmdet3d's ``MonoDet3DInferencer`` / ``inference_mono_3d_detector`` run the project's configs."""
from .calib import CalibError, Calibration, check_intrinsics, intrinsics_matrix, load_calibration
from .inference import EProPnPPredictor, InputGeometry, Prediction, image_results, transform_intrinsics
from .inputs import InputError, InputItem, collect_inputs, iter_batches, read_input
from .mmdet3d_api import write_mono_infos
from .results import JSON_FORMAT, boxes_from_json, prediction_to_json, write_json

__all__ = ['CalibError', 'Calibration', 'check_intrinsics', 'intrinsics_matrix', 'load_calibration',
           'EProPnPPredictor', 'InputGeometry', 'Prediction', 'image_results', 'transform_intrinsics',
           'write_mono_infos',
           'InputError', 'InputItem', 'collect_inputs', 'iter_batches', 'read_input', 'JSON_FORMAT',
           'boxes_from_json', 'prediction_to_json', 'write_json']
