"""Generate a synthetic nuScenes-format dataset (v1.0-mini layout) for tests, demos and benchmarks.

Example::

    python tools/create_synthetic_nuscenes.py --out-dir data/synthetic_nuscenes
    python tools/create_synthetic_nuscenes.py --out-dir /tmp/tiny --scenes 2 --samples-per-scene 3 \\
        --image-size 400 225 --overwrite
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from epropnp_det.synthetic import GeneratorConfig, generate_dataset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out-dir', required=True, help='nuScenes root to write (DIR/v1.0-mini, DIR/samples, ...)')
    p.add_argument('--samples-per-scene', type=int, default=10, help='keyframes per scene (2 Hz)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--image-size', type=int, nargs=2, default=(1600, 900), metavar=('W', 'H'))
    p.add_argument('--scenes', type=int, default=10,
                   help='number of scenes (1..10, named after the devkit mini split; 2 or more include mini_val)')
    p.add_argument('--min-lidar-pts', type=int, default=1,
                   help='objects with fewer LiDAR returns are left out of that keyframe (0 keeps all within 55 m)')
    p.add_argument('--workers', type=int, default=2, help='worker processes (output does not depend on it)')
    p.add_argument('--camera-time-offsets-us', type=int, nargs=6, default=None, metavar='US',
                   help='capture time of each camera minus the keyframe time, microseconds, in the order '
                        'CAM_FRONT, CAM_FRONT_RIGHT, CAM_FRONT_LEFT, CAM_BACK, CAM_BACK_LEFT, CAM_BACK_RIGHT '
                        '(default: all 0, synchronous)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing generated dataset in --out-dir')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = GeneratorConfig(out_dir=args.out_dir, samples_per_scene=args.samples_per_scene, seed=args.seed,
                          image_size=tuple(args.image_size), num_scenes=args.scenes, workers=args.workers,
                          min_lidar_pts=args.min_lidar_pts,
                          camera_time_offsets_us=tuple(args.camera_time_offsets_us or ()),
                          overwrite=args.overwrite)
    try:
        s = generate_dataset(cfg)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    print(f'Wrote {s["num_samples"]} samples, {s["num_annotations"]} annotations to {args.out_dir}')
    print(f'Generation time: {s["time_s"]:.1f} s; dataset size: {s["size_bytes"] / 2**20:.1f} MiB')
    print(f'Objects per sample: mean {s["objects_per_sample_mean"]:.1f} (min {s["objects_per_sample_min"]}, '
          f'max {s["objects_per_sample_max"]}); annotations with >=1 LiDAR point: '
          f'{100 * s["frac_with_lidar_pts"]:.1f} %')
    print('Class histogram: ' + ', '.join(f'{k} {v}' for k, v in s['class_histogram'].items()))


if __name__ == '__main__':
    main()
