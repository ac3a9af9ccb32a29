"""Drawing helpers: projected 3D boxes on images, bird's-eye views with orientation histograms of the Monte-Carlo
pose samples and position-uncertainty ellipses, the dense depth view (numpy/cv2; no mm registries needed), and the
demo's views (:mod:`.views`)."""
from .draw import (
                   BEVCanvas,
                   covariance_ellipse,
                   depth_to_image,
                   draw_bev,
                   draw_boxes_3d,
                   edge_segments_2d,
                   rose_area,
                   rose_polygon,
                   yaw_histogram,
)
from .views import (
                    CLASS_COLORS,
                    class_color,
                    fit_bev_canvas,
                    view_bev,
                    view_boxes_3d,
                    view_correspondences,
                    view_depth,
                    view_orientation,
                    weight_colors,
)

__all__ = ['BEVCanvas', 'covariance_ellipse', 'depth_to_image', 'draw_bev', 'draw_boxes_3d', 'edge_segments_2d',
           'rose_area', 'rose_polygon', 'yaw_histogram', 'CLASS_COLORS', 'class_color', 'fit_bev_canvas', 'view_bev',
           'view_boxes_3d', 'view_correspondences', 'view_depth', 'view_orientation', 'weight_colors']
