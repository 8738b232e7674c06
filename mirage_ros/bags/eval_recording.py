"""``mirage eval-bag``: a recorded ROS 2 bag -> the memory from its first part -> imagination along the path the robot
drove later -> compared with what the camera recorded there (:mod:`mirage.eval.recording` does the evaluation).

    mirage eval-bag --bag PATH --output DIR [--model mirage-tiny] [--memory-fraction 0.5] [--frame-stride 1]

Any bag with rgb, depth (16UC1 mm or 32FC1 m, registered to the colour camera), camera_info and TF (``/tf`` and
``/tf_static``) works, e.g. one the synthetic camera wrote (``python -m mirage_ros.bag_tools record --out DIR``).
Frames are paired by stamp and posed with TF at their stamp (world frame ``--world-frame``, default ``odom``) by
mirage_ros's bag reader (:mod:`mirage_ros.bags.read`), which needs the ``bags`` extra (``rosbags``); it is imported
only when a bag is read. It lives in mirage_ros because it reads ROS bags; the evaluation itself is the core library's. Frames without a pose at their stamp, or
with unusable pixels, are skipped and counted. Pixels are fitted to the model's size as the node fits them
(:func:`mirage.frames.fit_to_size`: centre crop to the aspect ratio, area resize; depth nearest).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

import torch

from mirage.data.clip import Clip

__all__ = ["BagRecording", "read_bag_recording", "add_arguments", "main"]

TOPIC_KEYS = ("rgb", "depth", "info", "tf", "tf_static")
BAGS_EXTRA_HINT = ('reading bags needs the "bags" extra: pip install "mirage[bags]" (rosbags), with mirage_ros '
                   "importable")


@dataclass
class BagRecording:
    """Every usable frame of a bag in time order: ``clip`` at the fitted size, ``stamps`` (N,) seconds of the
    header stamps, ``skipped`` {reason: count}."""

    clip: Clip
    stamps: list[float]
    skipped: dict[str, int] = field(default_factory=dict)


def _bag_reader():
    """mirage_ros's bag reading and conversions, imported on first use (ImportError naming the extra)."""
    try:
        from mirage_ros import conversions
        from mirage_ros.bags.read import BAG_TOPICS, iter_bag_frames, read_bag_tf
    except ImportError as exc:
        raise ImportError(f"{BAGS_EXTRA_HINT}: {exc}") from exc
    return conversions, BAG_TOPICS, iter_bag_frames, read_bag_tf


def read_bag_recording(bag, image_size: tuple[int, int], world_frame: str = "odom",
                       topics: dict[str, str] | None = None, slop: float = 0.02, max_frames: int | None = None
                       ) -> BagRecording:
    """Read, pose and fit every stamp-matched RGB-D frame of ``bag`` (see the module docstring).

    ValueError when the bag holds no usable frame (the reasons counted), or lacks a topic.
    """
    import numpy as np

    from mirage.frames import fit_to_size

    conv, bag_topics, iter_bag_frames, read_bag_tf = _bag_reader()
    topics = {**bag_topics, **{k: v for k, v in (topics or {}).items() if v}}
    tf = read_bag_tf(bag, topics["tf"], topics["tf_static"])
    rgbs, depths, Ks, poses, stamps = [], [], [], [], []
    skipped: dict[str, int] = {}
    for pair in iter_bag_frames(bag, topics["rgb"], topics["depth"], topics["info"], slop):
        if max_frames is not None and len(rgbs) >= max_frames:
            break
        frame_id = pair.rgb.header.frame_id or pair.depth.header.frame_id
        stamp = conv.stamp_to_ns(pair.rgb.header.stamp)
        try:
            c2w = np.asarray(tf.lookup_transform(world_frame, frame_id, stamp).matrix, dtype=np.float64)
        except Exception:  # noqa: BLE001 - the buffer's error types are mirage_ros's
            skipped["no pose at the stamp"] = skipped.get("no pose at the stamp", 0) + 1
            continue
        try:
            K, size = conv.camera_info_to_intrinsics(pair.info)
            rgb, depth = conv.image_to_rgb(pair.rgb), conv.image_to_depth(pair.depth)
            if tuple(rgb.shape[:2]) != tuple(depth.shape) or tuple(size) != tuple(depth.shape):
                raise ValueError(f"rgb {rgb.shape[:2]}, depth {depth.shape} and camera_info {size} differ")
            rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, image_size)
        except ValueError as exc:
            key = f"unusable frame ({exc})"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        rgbs.append(rgb_t)
        depths.append(depth_t)
        Ks.append(K_t)
        poses.append(torch.from_numpy(c2w).float())
        stamps.append(conv.ns_to_seconds(stamp))
    if not rgbs:
        raise ValueError(f"no usable frame in {bag} (world frame {world_frame!r}); skipped: {skipped or 'none read'}")
    clip = Clip(rgb=torch.stack(rgbs), intrinsics=torch.stack(Ks), cam_to_world=torch.stack(poses),
                depth=torch.stack(depths), name=str(bag))
    return BagRecording(clip, stamps, skipped)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="ROS 2 bag directory (sqlite3 or MCAP)")
    parser.add_argument("--output", required=True, help="directory for results.md, results.json, side_by_side.mp4")
    parser.add_argument("--model", default="mirage-tiny", help="world model: built-in name or directory")
    parser.add_argument("--methods", nargs="+", default=["latent", "none"],
                        help="methods of mirage eval to imagine with (default: latent none)")
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="share of the frames (from the start) that build the memory (default 0.5)")
    parser.add_argument("--frame-stride", type=int, default=1, help="take every n-th later frame as the path")
    parser.add_argument("--max-frames", type=int, default=None, help="at most this many imagined frames + 1")
    parser.add_argument("--max-bag-frames", type=int, default=None, help="read at most this many bag frames")
    parser.add_argument("--world-frame", default="odom")
    parser.add_argument("--keyframe-translation", type=float, default=0.1, help="metres (the node's default)")
    parser.add_argument("--keyframe-rotation-deg", type=float, default=10.0, help="degrees (the node's default)")
    parser.add_argument("--sync-slop", type=float, default=0.02, help="seconds")
    for key in TOPIC_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}-topic", default=None,
                            help="default: the synthetic camera's (mirage_ros.bags.read.BAG_TOPICS)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, help="override the model's image height")
    parser.add_argument("--width", type=int, help="override the model's image width")
    parser.add_argument("--lpips-dir", help="local LPIPS weights (else $MIRAGE_LPIPS_DIR; skipped when absent)")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--no-consistency", action="store_true")


def main(args: argparse.Namespace) -> int:
    from mirage.eval.recording import HIGHER, RECORDING_METRICS, evaluate_recording
    from mirage.eval.report import markdown_table
    from mirage.train.export import load_world_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        sizes = {k: getattr(args, k) for k in ("height", "width") if getattr(args, k) is not None}
        world_model = load_world_model(args.model, **sizes)
        topics = {k: getattr(args, f"{k}_topic") for k in TOPIC_KEYS}
        recording = read_bag_recording(args.bag, world_model.image_size, args.world_frame, topics, args.sync_slop,
                                       args.max_bag_frames)
        for reason, count in recording.skipped.items():
            print(f"mirage eval-bag: {count} frame(s) skipped: {reason}", file=sys.stderr)
        out = evaluate_recording(
            world_model, recording.clip, args.output, stamps=recording.stamps, methods=args.methods,
            memory_fraction=args.memory_fraction, frame_stride=args.frame_stride, max_frames=args.max_frames,
            keyframe_translation=args.keyframe_translation, keyframe_rotation_deg=args.keyframe_rotation_deg,
            seed=args.seed, num_inference_steps=args.steps, lpips_dir=args.lpips_dir, video=not args.no_video,
            consistency=not args.no_consistency,
            settings={"bag": str(args.bag), "model": str(args.model), "world frame": args.world_frame,
                      "frames skipped": sum(recording.skipped.values())})
    except (ImportError, ValueError, FileNotFoundError) as exc:
        print(f"mirage eval-bag: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(out["table"], out["notes"], RECORDING_METRICS, HIGHER))
    print(f"written to {args.output}/results.md, results.json" + ("" if args.no_video else ", side_by_side.mp4"))
    return 0
