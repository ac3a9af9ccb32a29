"""Drawing helpers: projected 3D boxes on images, bird's-eye views with orientation histograms of the Monte-Carlo
pose samples, and the dense depth view (numpy/cv2; no mm registries needed)."""
from .draw import (
                   BEVCanvas,
                   depth_to_image,
                   draw_bev,
                   draw_boxes_3d,
                   edge_segments_2d,
                   rose_area,
                   rose_polygon,
                   yaw_histogram,
)

__all__ = ['BEVCanvas', 'depth_to_image', 'draw_bev', 'draw_boxes_3d', 'edge_segments_2d', 'rose_area', 'rose_polygon',
           'yaw_histogram']
