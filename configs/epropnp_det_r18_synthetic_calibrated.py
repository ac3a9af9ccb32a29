# Post-hoc calibration of the pose covariance (tools/fit_uncertainty_calibration.py):
# coverage68 on mini_train, 405 matches.
# Per class (config class order): scale factors of the std of [x, y, z, yaw] (camera frame); the head
# scales its Laplace covariance by s_i s_j (docs/uncertainty.md).
_base_ = ['./epropnp_det_r18_synthetic.py']
model = dict(test_cfg=dict(pose_cov_scale=[
        (0.6494, 0.5860, 0.2838, 2.0066),  # car
        (0.6320, 0.7432, 0.3649, 1.2736),  # truck
        (0.5753, 0.6769, 0.3525, 1.2451),  # trailer
        (0.8080, 0.9630, 0.5339, 1.9541),  # bus
        (0.5753, 0.6769, 0.3525, 1.2451),  # construction_vehicle
        (0.6470, 0.7478, 0.5097, 1.0291),  # bicycle
        (0.6584, 0.6454, 0.5139, 0.6662),  # motorcycle
        (0.2893, 0.3585, 0.2570, 0.7767),  # pedestrian
        (0.4531, 0.6610, 0.4482, 1.2451),  # traffic_cone
        (0.7549, 0.8658, 0.3544, 1.0094),  # barrier
    ]))
