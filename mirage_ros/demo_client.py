"""The ROS demo in one command: synthetic camera -> mirage node -> ImagineTrajectory goal -> files.

    python -m mirage_ros.demo_client --out outputs/demo

Starts, in one process and on loopback DDS, the synthetic RGB-D camera (one pass of an orbit through a random
scene), the ``mirage`` node (parameters from ``config/mirage.yaml``: mirage-tiny on the CPU) and a client. Once
the camera's pass is in the memory, the client sends an ImagineTrajectory goal back along the seen path and
writes to ``--out``: the imagined frames (PNG + MP4), the ground truth rendered at the same poses, a
side-by-side video (imagined | ground truth), the memory (``memory.safetensors`` via ``~/save_cache`` and
``memory.ply``), the published cloud (``cloud.ply``) and ``summary.json``; then prints where.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "main", "cli", "run_demo", "load_params_file"]

ROOT = Path(__file__).resolve().parents[1]


def load_params_file(path: str | Path, node_name: str = "mirage") -> dict:
    """``ros__parameters`` for ``node_name`` from a ROS 2 YAML file (``/**`` entries, then the node's own), nested
    mappings flattened to dotted names as ROS does (``camera: {rgb_topic: x}`` -> ``camera.rgb_topic``)."""
    import yaml

    def flatten(mapping: dict, prefix: str = "") -> dict:
        flat: dict = {}
        for key, value in mapping.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = value
        return flat

    data = yaml.safe_load(Path(path).read_text()) or {}
    out: dict = {}
    for key in ("/**", node_name, f"/{node_name}"):
        out.update(flatten((data.get(key) or {}).get("ros__parameters", {}) or {}))
    return out


def _default_params_file() -> Path | None:
    candidates = [ROOT / "config" / "mirage.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("mirage_ros")) / "config" / "mirage.yaml")
    except Exception:  # noqa: BLE001 - not installed through colcon
        pass
    return next((p for p in candidates if p.is_file()), None)


def _upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else frames


def run_demo(args) -> dict:
    from geometry_msgs.msg import PoseStamped
    from rclpy.action import ActionClient
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2
    from tqdm import tqdm

    from mirage.media import psnr_uint8, write_png, write_video
    from mirage.memory import LatentSpatialMemory
    from mirage.memory.io import write_ply
    from mirage_ros import conversions as conv
    from mirage_ros.action import ImagineTrajectory
    from mirage_ros.core.goal_poses import interpolate_poses
    from mirage_ros.node import MirageNode
    from mirage_ros.run import LocalGraph, wait_future
    from mirage_ros.sim.camera import SyntheticCamera
    from mirage_ros.sim.rig import RigConfig, SyntheticRig
    from mirage_ros.srv import SaveCache

    out = Path(args.out).expanduser().resolve()
    (out / "imagined").mkdir(parents=True, exist_ok=True)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    node_params = load_params_file(args.params_file) if args.params_file else {}
    for item in args.param:
        key, _, value = item.partition(":=")
        import yaml

        node_params[key] = yaml.safe_load(value)
    node_params["cache_directory"] = str(out)  # the demo saves its memory (relative names) into its output
    rig = SyntheticRig(RigConfig(scene_seed=args.seed, height=args.height, width=args.width,
                                 trajectory=args.trajectory, num_frames=args.frames,
                                 world_frame=node_params.get("world_frame", "odom")))
    for i in tqdm(range(len(rig)), desc="rendering the camera pass", unit="frame"):
        rig.frame(i)
    summary: dict = {"out": str(out)}
    t_start = time.monotonic()
    with LocalGraph(domain_id=args.domain_id) as graph:
        print(f"starting the mirage node ({node_params.get('model', 'default model')}) ...", flush=True)
        node = graph.add(MirageNode(context=graph.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in node_params.items()]))
        camera = SyntheticCamera(rig=rig, context=graph.context, parameter_overrides=[
            Parameter("rate", value=float(args.rate)), Parameter("loop", value=False),
            Parameter("reliable", value=True)])
        graph.add(camera.node)
        client = graph.node("mirage_demo_client")
        clouds, images = [], []
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        client.create_subscription(PointCloud2, "/mirage/cache/points", clouds.append, latched)
        client.create_subscription(Image, "/mirage/imagined/image", images.append, 100)
        action = ActionClient(client, ImagineTrajectory, "/mirage/imagine_trajectory")
        if not action.wait_for_server(timeout_sec=30.0):
            raise TimeoutError("the mirage node's action server did not come up")

        # 1. seed: one pass of the camera
        with tqdm(total=len(rig), desc="camera -> memory", unit="frame") as bar:
            while camera.index < len(rig):
                bar.update(camera.index - bar.n)
                time.sleep(0.05)
            bar.update(len(rig) - bar.n)
        graph.wait_until(lambda: node.worker.wait_idle(0.1), 60.0, "the node to ingest the camera pass")
        stats = node.ingestor.stats
        print(f"memory: {len(node.holder.memory)} points from {stats.keyframes} keyframes "
              f"({stats.frames_in} frames in)", flush=True)

        # 2. imagine: back along the seen path, interpolated to --imagine-frames
        keys = list(range(0, len(rig), max(1, len(rig) // 8)))
        goal = ImagineTrajectory.Goal()
        for i in keys:
            ps = PoseStamped()
            ps.header.frame_id = rig.config.world_frame
            ps.pose = conv.matrix_to_pose(rig.frame(i).cam_to_world)
            goal.poses.append(ps)
        goal.num_frames, goal.return_frames, goal.fps, goal.seed = args.imagine_frames, True, float(args.fps), 0
        bar = tqdm(total=args.imagine_frames, desc="imagining", unit="frame")

        def on_feedback(msg):
            bar.update(int(msg.feedback.frames_done) - bar.n)

        handle = wait_future(action.send_goal_async(goal, feedback_callback=on_feedback), 30.0, "goal response")
        if not handle.accepted:
            raise RuntimeError("the goal was rejected")
        result = wait_future(handle.get_result_async(), args.timeout, "the imagined trajectory").result
        bar.update(args.imagine_frames - bar.n)
        bar.close()
        if result.frames_generated == 0:
            raise RuntimeError(f"the node generated nothing: {result.message}")
        imagined = np.stack([conv.image_to_rgb(m) for m in result.frames])
        graph.wait_until(lambda: len(images) >= len(imagined), 10.0, "the imagined frames on ~/imagined/image")

        # 3. the memory: through ~/save_cache, and the published cloud
        save = client.create_client(SaveCache, "/mirage/save_cache")
        save.wait_for_service(timeout_sec=10.0)
        saved = wait_future(save.call_async(SaveCache.Request(path="memory.safetensors")), 30.0, "save")
        if not saved.success:
            raise RuntimeError(saved.message)
        cloud = graph.wait_until(lambda: clouds and clouds[-1].width > 0 and clouds[-1], 15.0, "the memory cloud")
        xyz, rgb = conv.pointcloud2_to_numpy(cloud)
        write_ply(out / "cloud.ply", xyz, rgb)
        _, K = node.runner.camera()  # the intrinsics the goal imagined with
        H, W = node.image_size
        summary.update(model=node.model_name, keyframes=stats.keyframes,
                       frames_in=stats.frames_in, memory_points=len(node.holder.memory), goal_message=result.message,
                       seconds_per_frame=float(result.seconds_per_frame), image_size=[H, W],
                       frames_on_topic=len(images))

    # 4. files
    LatentSpatialMemory.load(out / "memory.safetensors").export_ply(out / "memory.ply")
    c2w = interpolate_poses(np.stack([rig.frame(i).cam_to_world for i in keys]), args.imagine_frames)
    import torch

    truth = rig.render_views(torch.from_numpy(c2w).float(), H, W, K)
    for i, (a, b) in enumerate(zip(imagined, truth)):
        write_png(out / "imagined" / f"{i:04d}.png", a)
        write_png(out / "ground_truth" / f"{i:04d}.png", b)
    scale = max(1, 256 // W)
    write_video(out / "imagined.mp4", _upscale(imagined, scale), args.fps)
    write_video(out / "side_by_side.mp4", _upscale(np.concatenate([imagined, truth], axis=2), scale), args.fps)
    write_png(out / "side_by_side.png", _upscale(np.concatenate(
        [np.concatenate(list(imagined[:: max(1, len(imagined) // 6)]), axis=1),
         np.concatenate(list(truth[:: max(1, len(truth) // 6)]), axis=1)], axis=0), scale))
    summary["psnr_vs_ground_truth"] = float(np.mean([psnr_uint8(a, b) for a, b in zip(imagined, truth)]))
    summary["seconds_total"] = time.monotonic() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Demo options (also usable as a ``mirage`` subcommand: ``add_arguments`` + ``main(args)``)."""
    parser.add_argument("--out", default="outputs/demo", help="output folder (default %(default)s)")
    default_params = _default_params_file()
    parser.add_argument("--params-file", default=str(default_params) if default_params else None,
                        help="node parameters (default: config/mirage.yaml)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="override one node parameter, e.g. --param steps:=8")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--trajectory", default="orbit")
    parser.add_argument("--frames", type=int, default=24, help="frames of the camera pass")
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--imagine-frames", type=int, default=17, help="frames to imagine")
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the imagined trajectory")
    parser.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0) or 0))


def main(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(args)
    except (RuntimeError, TimeoutError, ValueError, FileNotFoundError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    out = Path(summary["out"])
    print(f"\n{summary['goal_message']}; memory {summary['memory_points']} points from {summary['keyframes']} "
          f"keyframes; PSNR vs ground truth {summary['psnr_vs_ground_truth']:.2f} dB")
    print(f"outputs in {out}:")
    for name in ("imagined/", "ground_truth/", "imagined.mp4", "side_by_side.mp4", "side_by_side.png",
                 "memory.safetensors", "memory.ply", "cloud.ply", "summary.json"):
        print(f"  {out / name}")
    return 0


def cli(argv: list[str] | None = None, prog: str = "python -m mirage_ros.demo_client") -> int:
    """Command line: parse ``argv`` (default: the process arguments) and run the demo."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
