"""Drawing helpers: projected 3D boxes on images and bird's-eye views (numpy/cv2; no mm registries needed)."""
from .draw import BEVCanvas, draw_bev, draw_boxes_3d, edge_segments_2d

__all__ = ['BEVCanvas', 'draw_bev', 'draw_boxes_3d', 'edge_segments_2d']
