# Post-hoc calibration of the pose covariance (tools/fit_uncertainty_calibration.py):
# coverage68 on mini_train (every 3rd sample, 27 of 80), 211 matches, checkpoint iteration 200 of the 800-iteration run.
# Per class (config class order): scale factors of the std of [x, y, z, yaw] (camera frame); the head
# scales its Laplace covariance by s_i s_j (docs/uncertainty.md).
_base_ = ['./epropnp_det_r18_synthetic.py']
model = dict(test_cfg=dict(pose_cov_scale=[
        (0.6190, 0.4628, 0.1695, 2.8019),  # car
        (0.5815, 0.8795, 0.3310, 2.0811),  # truck
        (0.5815, 0.8795, 0.3310, 2.0811),  # trailer
        (0.5815, 0.8795, 0.3310, 2.0811),  # bus
        (0.5815, 0.8795, 0.3310, 2.0811),  # construction_vehicle
        (0.8357, 1.1668, 0.5683, 4.2717),  # bicycle
        (0.5815, 0.8795, 0.3310, 2.0811),  # motorcycle
        (0.4088, 0.9692, 0.3442, 1.2345),  # pedestrian
        (0.5815, 0.8795, 0.3310, 2.0811),  # traffic_cone
        (0.5815, 0.8795, 0.3310, 2.0811),  # barrier
    ]))
