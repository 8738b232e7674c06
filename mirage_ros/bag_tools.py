"""ROS 2 bags without a ROS graph: record the synthetic camera, build the memory offline.

``mirage build-cache --bag PATH --out FILE`` reads rgb, depth, camera_info, /tf and /tf_static from a bag
(sqlite3 or MCAP, via ``rosbags``), pairs them by stamp, and runs the node's own ingest
(:class:`~mirage_ros.node_ingest.FrameIngestor`: same keyframe selection, same encoder, same memory), then saves
the memory. ``python -m mirage_ros.bag_tools record --out BAG`` writes the synthetic camera to a bag.
Nothing here imports rclpy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from mirage_ros.bag_writer import BAG_TOPICS

__all__ = ["read_bag_tf", "iter_bag_frames", "build_cache", "add_arguments", "main", "add_record_arguments",
           "record_main"]


def _open(bag: str | Path):
    from rosbags.rosbag2 import Reader

    path = Path(bag)
    if not path.exists():
        raise ValueError(f"no bag at {path}")
    return Reader(path)


def read_bag_tf(bag: str | Path, tf_topic: str = BAG_TOPICS["tf"], tf_static_topic: str = BAG_TOPICS["tf_static"]):
    """Every /tf and /tf_static transform of the bag in one :class:`~mirage_ros.tf_buffer.TransformBuffer`."""
    from mirage_ros.bag_writer import typestore
    from mirage_ros.tf_buffer import TransformBuffer

    ts = typestore()
    with _open(bag) as reader:
        span = max(reader.duration * 1e-9, 0.0) + 10.0
        buffer = TransformBuffer(cache_time=span)  # offline: keep the whole bag
        conns = [c for c in reader.connections if c.topic in (tf_topic, tf_static_topic)]
        for conn, _, raw in reader.messages(connections=conns):
            buffer.set_tf_message(ts.deserialize_cdr(raw, conn.msgtype), static=conn.topic == tf_static_topic)
    return buffer


def iter_bag_frames(bag: str | Path, rgb_topic: str = BAG_TOPICS["rgb"], depth_topic: str = BAG_TOPICS["depth"],
                    info_topic: str = BAG_TOPICS["info"], slop: float = 0.02):
    """Yield :class:`~mirage_ros.node_ingest.FramePair` of stamp-matched rgb, depth, camera_info, in bag order.

    ``arrival`` is the bag's receive time in seconds. Raises ValueError when a topic is missing.
    """
    from mirage_ros.bag_writer import typestore
    from mirage_ros.node_ingest import FramePair
    from mirage_ros.sync import ApproximateTimeSync

    ts = typestore()
    sync = ApproximateTimeSync(("rgb", "depth", "info"), slop=slop, queue_size=10)
    keys = {rgb_topic: "rgb", depth_topic: "depth", info_topic: "info"}
    with _open(bag) as reader:
        topics = {c.topic for c in reader.connections}
        missing = [t for t in keys if t not in topics]
        if missing:
            raise ValueError(f"bag has no topic(s) {missing}; it has {sorted(topics)}")
        conns = [c for c in reader.connections if c.topic in keys]
        for conn, t_ns, raw in reader.messages(connections=conns):
            synced = sync.add(keys[conn.topic], ts.deserialize_cdr(raw, conn.msgtype))
            if synced is not None:
                yield FramePair(synced["rgb"], synced["depth"], synced["info"], t_ns * 1e-9)


def build_cache(bag: str | Path, out: str | Path | None, world_model, *, world_frame: str = "odom",
                keyframe_translation: float = 0.1, keyframe_rotation_deg: float = 10.0, voxel_size: float = 0.05,
                max_points: int = 0, slop: float = 0.02, topics: dict[str, str] | None = None,
                progress: bool = True, log=print):
    """Build the memory from a bag exactly as the node would (every frame reaches the ingest, none dropped).

    Returns ``(memory, stats)``; saves the memory to ``out`` when given. Bad frames are logged and skipped.
    """
    from mirage_ros.node_ingest import FrameIngestor, TransformUnavailable
    from mirage_ros.node_memory import MemoryHolder

    topics = {**BAG_TOPICS, **(topics or {})}
    tf = read_bag_tf(bag, topics["tf"], topics["tf_static"])
    holder = MemoryHolder(world_model.new_memory(voxel_size=voxel_size or None, max_points=max_points or None))

    def lookup(target, source, stamp_ns):
        return tf.lookup_transform(target, source, int(stamp_ns)).matrix

    ingest = FrameIngestor(world_model, holder, lookup, world_frame, (world_model.height, world_model.width),
                           keyframe_translation, keyframe_rotation_deg)
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
    from mirage_ros.node_params import NodeParams

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
    from mirage_ros.node_model import load_world_model
    from mirage_ros.node_params import validate_params

    try:
        params = validate_params(dict(
            model=args.model, model_path=args.model_path, checkpoints=args.checkpoints, device=args.device,
            dtype=args.dtype, image_height=args.image_height, image_width=args.image_width,
            world_frame=args.world_frame, keyframe_translation=args.keyframe_translation,
            keyframe_rotation_deg=args.keyframe_rotation_deg, voxel_size=args.voxel_size,
            max_points=args.max_points, sync_slop=args.sync_slop))
        topics = {k: getattr(args, f"{k}_topic") for k in ("rgb", "depth", "info", "tf", "tf_static")}
        world_model, _ = load_world_model(params, log=lambda m: print(m, file=sys.stderr))
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


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="bag directory to create")
    parser.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    parser.add_argument("--frames", type=int, default=None, help="frames to record (default: one trajectory pass)")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--scene-seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--trajectory", default="orbit")
    parser.add_argument("--num-frames", type=int, default=40, help="frames in one trajectory pass")
    parser.add_argument("--depth-encoding", default="16UC1", choices=["16UC1", "32FC1"])
    parser.add_argument("--world-frame", default="odom")


def record_main(args: argparse.Namespace) -> int:
    from mirage_ros.bag_writer import write_rig_bag
    from mirage_ros.synthetic_rig import RigConfig, SyntheticRig

    try:
        rig = SyntheticRig(RigConfig(scene_seed=args.scene_seed, height=args.height, width=args.width,
                                     trajectory=args.trajectory, num_frames=args.num_frames,
                                     depth_encoding=args.depth_encoding, world_frame=args.world_frame))
        path = write_rig_bag(args.out, rig, args.frames, rate=args.rate, storage=args.storage)
    except (ValueError, FileExistsError) as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mirage_ros.bag_tools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_record_arguments(sub.add_parser("record", help="write the synthetic camera to a bag"))
    add_arguments(sub.add_parser("build-cache", help="build and save the memory from a bag"))
    args = parser.parse_args(argv)
    return record_main(args) if args.command == "record" else main(args)


if __name__ == "__main__":
    sys.exit(_cli())
