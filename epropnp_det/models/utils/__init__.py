from .postprocess import bev_nms, box_corners, project_boxes_2d

__all__ = ['box_corners', 'project_boxes_2d', 'bev_nms']
