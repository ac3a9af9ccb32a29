from .postprocess import bev_nms, box_corners, project_boxes_2d, rotated_bev_nms

__all__ = ['box_corners', 'project_boxes_2d', 'bev_nms', 'rotated_bev_nms']
