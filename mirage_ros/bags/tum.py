"""``mirage tum-to-bag``: a TUM RGB-D sequence -> a ROS 2 bag (MCAP by default) the node, ``mirage build-cache`` and
``mirage eval-bag`` read like a camera's, no ROS graph needed (``rosbags``).

    mirage tum-to-bag --tum /data/rgbd_dataset_freiburg1_rpy --out bags/fr1_rpy [--height 120 --width 160]

Per associated, posed frame (:class:`mirage.data.tum.TUMSequence`: rgb <-> depth by the benchmark's rule, the pose
interpolated from the ground truth), all stamped with the **rgb image's stamp** (the depth image was taken within
the association limit, 0.02 s, and is registered to it):

* ``/tf``: ``world_frame`` (default ``odom``, the node's default world frame; the benchmark calls its motion-capture
  frame ``world``) -> ``camera_frame`` (default ``openni_rgb_optical_frame``, the name in the benchmark's own bags):
  the ground-truth pose of the colour camera's optical centre, which is already an optical frame (REP 103);
* ``/rgb/image`` (rgb8) and ``/depth/image`` (32FC1 metres, NaN where the sensor had no reading), undistorted to
  the calibration's pinhole camera (the loader's ``fr1`` default), optionally resized (``--height/--width``: centre
  crop to the aspect ratio and area resize, depth nearest, :func:`mirage.frames.fit_to_size`, as the node fits
  frames);
* ``/rgb/camera_info``: that pinhole camera (zero distortion, since the images are undistorted).

No ``/tf_static``: the ground truth poses the optical frame itself. Topics are those of the synthetic camera
(:data:`mirage_ros.bags.read.BAG_TOPICS`), so every tool that reads its bags, and the launch file's ``bag:=``
replay with its default remaps, read this one unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

__all__ = ["CAMERA_FRAME", "write_tum_bag", "add_arguments", "main"]

CAMERA_FRAME = "openni_rgb_optical_frame"


def write_tum_bag(path: str | Path, sequence, *, image_size: Sequence[int] | None = None,
                  indices: Sequence[int] | None = None, storage: str = "mcap", world_frame: str = "odom",
                  camera_frame: str = CAMERA_FRAME, progress: bool = True) -> Path:
    """Write frames ``indices`` (default all) of ``sequence`` (a :class:`~mirage.data.tum.TUMSequence`) to a new bag
    at ``path`` (see the module docstring). Returns the bag directory; ValueError on bad arguments or frames,
    FileExistsError when ``path`` exists (nothing is written then)."""
    import torch

    from mirage.frames import fit_to_size
    from mirage_ros.bags.read import typestore
    from mirage_ros.bags.write import STORAGE_PLUGINS, _Builders, camera_connections, open_bag_writer
    from mirage_ros.conversions.time import stamp_to_ns

    if storage not in STORAGE_PLUGINS:
        raise ValueError(f"storage must be one of {sorted(STORAGE_PLUGINS)}, got {storage!r}")
    if not world_frame or not camera_frame or world_frame == camera_frame:
        raise ValueError(f"world and camera frames must be two non-empty names, got {world_frame!r}, {camera_frame!r}")
    indices = list(range(len(sequence))) if indices is None else [int(i) for i in indices]
    if not indices or min(indices) < 0 or max(indices) >= len(sequence):
        raise ValueError(f"frame indices must be in [0, {len(sequence)}), got {indices[:3]}...")
    size = tuple(int(s) for s in (image_size or sequence.image_size))
    if Path(path).exists():
        raise FileExistsError(f"bag {path} already exists")
    ts = typestore()
    build = _Builders(ts)
    K = sequence.intrinsics
    with open_bag_writer(path, storage) as writer:
        write = camera_connections(writer, ts, tf_static=False)
        for i in tqdm(indices, desc="tum-to-bag", unit="frame", disable=not progress):
            rgb, depth = sequence.frame(i)
            rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, size)
            rgb8 = (rgb_t.permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
            depth32 = np.ascontiguousarray(depth_t.numpy(), dtype=np.float32)
            stamp = stamp_to_ns(float(sequence.stamps[i]))
            write("tf", build.tf([(world_frame, camera_frame, sequence.cam_to_world[i])], stamp), stamp)
            write("rgb", build.image(rgb8, "rgb8", stamp, camera_frame), stamp)
            write("depth", build.image(depth32, "32FC1", stamp, camera_frame), stamp)
            write("info", build.camera_info(K_t, size[0], size[1], stamp, camera_frame), stamp)
    return Path(path)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tum", required=True,
                        help="TUM RGB-D sequence directory (rgb.txt, depth.txt, groundtruth.txt, rgb/, depth/)")
    parser.add_argument("--out", required=True, help="bag directory to create")
    parser.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    parser.add_argument("--camera", default=None,
                        help="calibration: fr1, fr2, fr3, ros_default (default: from the directory name)")
    parser.add_argument("--height", type=int, help="image height in the bag (default: the sequence's)")
    parser.add_argument("--width", type=int, help="image width in the bag (default: the sequence's)")
    parser.add_argument("--first", type=int, default=0, help="first frame (after association)")
    parser.add_argument("--frames", type=int, default=None, help="at most this many frames")
    parser.add_argument("--stride", type=int, default=1, help="every n-th frame")
    parser.add_argument("--world-frame", default="odom")
    parser.add_argument("--camera-frame", default=CAMERA_FRAME)
    parser.add_argument("--max-difference", type=float, default=0.02,
                        help="seconds: rgb <-> depth and frame <-> ground-truth association limit")


def main(args: argparse.Namespace) -> int:
    from mirage.data.tum import TUMSequence

    try:
        if (args.height is None) != (args.width is None):
            raise ValueError("give both --height and --width, or neither")
        if args.stride < 1 or args.first < 0:
            raise ValueError(f"--stride must be >= 1 and --first >= 0, got {args.stride}, {args.first}")
        sequence = TUMSequence(args.tum, camera=args.camera, max_difference=args.max_difference,
                               max_pose_difference=args.max_difference)
        indices = list(range(args.first, len(sequence), args.stride))[: args.frames]
        size = (args.height, args.width) if args.height else None
        path = write_tum_bag(args.out, sequence, image_size=size, indices=indices, storage=args.storage,
                             world_frame=args.world_frame, camera_frame=args.camera_frame)
    except (ValueError, FileExistsError) as exc:
        print(f"mirage tum-to-bag: {exc}", file=sys.stderr)
        return 2
    for reason, count in sequence.skipped.items():
        print(f"mirage tum-to-bag: {count} frame(s) left out: {reason}", file=sys.stderr)
    print(f"wrote {len(indices)} frames of {sequence.name} to {path} (world frame {args.world_frame}, camera frame "
          f"{args.camera_frame})")
    return 0
