"""``mirage build-cache``: a bag -> the memory, exactly as the live node builds it (no ROS graph).

Reads rgb, depth, camera_info, /tf and /tf_static from a bag (sqlite3 or MCAP, via ``rosbags``), pairs them by
stamp, and runs the node's own ingest (:class:`~mirage_ros.core.ingest.FrameIngestor`: same keyframe
selection, same ``world_model.observe``, same memory), then saves the memory. Nothing here imports rclpy.

    mirage build-cache --bag PATH --out FILE [--model mirage-tiny] ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from mirage_ros.bags.read import BAG_TOPICS, iter_bag_frames, read_bag_tf

__all__ = ["build_cache", "add_arguments", "main"]


def build_cache(bag: str | Path, out: str | Path | None, world_model, *, world_frame: str = "odom",
                keyframe_translation: float = 0.1, keyframe_rotation_deg: float = 10.0, voxel_size: float = 0.05,
                max_points: int = 0, slop: float = 0.02, topics: dict[str, str] | None = None,
                progress: bool = True, log=print):
    """Build the memory from a bag exactly as the node would (every frame reaches the ingest, none dropped).

    Returns ``(memory, stats)``; saves the memory to ``out`` when given. Bad frames are logged and skipped.
    """
    from mirage_ros.core.ingest import FrameIngestor, TransformUnavailable
    from mirage_ros.core.memory_holder import MemoryHolder

    topics = {**BAG_TOPICS, **(topics or {})}
    tf = read_bag_tf(bag, topics["tf"], topics["tf_static"])
    holder = MemoryHolder(world_model.new_memory(voxel_size=voxel_size or None, max_points=max_points or None))

    def lookup(target, source, stamp_ns):
        return tf.lookup_transform(target, source, int(stamp_ns)).matrix

    ingest = FrameIngestor(world_model, holder, lookup, world_frame, None, keyframe_translation, keyframe_rotation_deg)
    frames = iter_bag_frames(bag, topics["rgb"], topics["depth"], topics["info"], slop)
    for pair in tqdm(frames, desc="build-cache", unit="frame", disable=not progress):
        try:
            ingest.process(pair)
        except (ValueError, TransformUnavailable) as exc:
            log(f"frame at {pair.arrival:.3f} s skipped: {exc}")
    if out is not None:
        holder.save(str(out))
    return holder.memory, ingest.stats


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``mirage build-cache`` arguments (defaults follow config/mirage.yaml)."""
    from mirage_ros.params import NodeParams

    d = NodeParams.defaults()
    parser.add_argument("--bag", required=True, help="ROS 2 bag directory (sqlite3 or MCAP)")
    parser.add_argument("--out", required=True, help="memory file to write (.safetensors)")
    parser.add_argument("--model", default=d.model, help="world model name (default %(default)s)")
    parser.add_argument("--model-path", default=d.model_path, help="local model directory (overrides --model)")
    parser.add_argument("--checkpoints", default=d.checkpoints, help="NAME=PATH,... (side_branch, lora, ...)")
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--image-height", type=int, default=d.image_height)
    parser.add_argument("--image-width", type=int, default=d.image_width)
    parser.add_argument("--world-frame", default=d.world_frame)
    parser.add_argument("--keyframe-translation", type=float, default=d.keyframe_translation, help="metres")
    parser.add_argument("--keyframe-rotation-deg", type=float, default=d.keyframe_rotation_deg)
    parser.add_argument("--voxel-size", type=float, default=d.voxel_size)
    parser.add_argument("--max-points", type=int, default=d.max_points)
    parser.add_argument("--sync-slop", type=float, default=d.sync_slop, help="seconds")
    for key in ("rgb", "depth", "info", "tf", "tf_static"):
        parser.add_argument(f"--{key.replace('_', '-')}-topic", default=BAG_TOPICS[key])


def main(args: argparse.Namespace) -> int:
    from mirage_ros.core.model_loading import world_model_from_params
    from mirage_ros.params import validate_params

    try:
        params = validate_params(dict(
            model=args.model, model_path=args.model_path, checkpoints=args.checkpoints, device=args.device,
            dtype=args.dtype, image_height=args.image_height, image_width=args.image_width,
            world_frame=args.world_frame, keyframe_translation=args.keyframe_translation,
            keyframe_rotation_deg=args.keyframe_rotation_deg, voxel_size=args.voxel_size,
            max_points=args.max_points, sync_slop=args.sync_slop))
        topics = {k: getattr(args, f"{k}_topic") for k in ("rgb", "depth", "info", "tf", "tf_static")}
        world_model, _ = world_model_from_params(params, log=lambda m: print(m, file=sys.stderr))
        memory, stats = build_cache(
            args.bag, args.out, world_model, world_frame=params.world_frame,
            keyframe_translation=params.keyframe_translation, keyframe_rotation_deg=params.keyframe_rotation_deg,
            voxel_size=params.voxel_size, max_points=params.max_points, slop=params.sync_slop, topics=topics,
            log=lambda m: print(m, file=sys.stderr))
    except (ValueError, FileNotFoundError) as exc:
        print(f"mirage build-cache: {exc}", file=sys.stderr)
        return 2
    print(f"{stats.frames_in} frames, {stats.keyframes} keyframes, {len(memory)} points -> {args.out}")
    return 0
