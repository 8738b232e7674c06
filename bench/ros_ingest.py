"""How much live RGB-D the mirage node takes in, and how fast it reaches the memory (CPU, mirage-tiny).

    python bench/ros_ingest.py [--seconds 10] [--rate 30] [--height 480] [--width 640] [--every-frame] [--same-process]

A publisher streams 640x480 rgb8 + 16UC1 depth + camera_info + TF at 30 Hz (synthetic-scene frames rendered
once at 160x120 and upsampled, so rendering is not what is measured) into the node over loopback DDS, from a
process of its own as a camera driver would (``--same-process``: from the node's process, sharing its GIL). Reports the rates at each stage (published, paired by the node's callbacks, processed by the worker,
inserted), the input -> memory latency of inserts (p50 / p95: from the arrival of a complete rgb + depth +
camera_info set to the end of its memory insert) and the keep-latest queue's high-water mark, which must
never exceed its size: a slow encoder drops stale frames instead of building latency.
``--every-frame`` sets the keyframe thresholds to 0 (every frame encoded and inserted: the worst case).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def upsampled_rig(height: int, width: int):
    """The synthetic rig's interface serving 30 orbit frames rendered at 160x120 and upsampled to (height, width)."""
    from mirage.camera import scale_intrinsics
    from mirage_ros.sim.rig import RigConfig, RigFrame, SyntheticRig

    small = SyntheticRig(RigConfig(height=120, width=160, num_frames=30, trajectory="orbit"))
    sy, sx = height // 120, width // 160
    frames = []
    for i in range(len(small)):
        f = small.frame(i)
        frames.append(RigFrame(i, f.rgb.repeat(sy, 0).repeat(sx, 1), f.depth.repeat(sy, 0).repeat(sx, 1),
                               scale_intrinsics(f.intrinsics, (120, 160), (height, width)),
                               f.cam_to_world, f.world_to_body))

    class Upsampled:
        config = RigConfig(height=height, width=width, num_frames=len(frames))

        def __len__(self):
            return len(frames)

        def frame(self, i):
            return frames[i % len(frames)]

        def body_to_camera(self):
            return small.body_to_camera()

    return Upsampled()


def stream(camera, rate: float, seconds: float, first_index: int = 1) -> tuple[int, int, float]:
    """Publish frames at ``rate`` for ``seconds``; returns (sets published, times late, seconds elapsed)."""
    period = 1.0 / rate
    published, late = 0, 0
    t_start = time.monotonic()
    next_t = t_start
    while time.monotonic() - t_start < seconds:
        camera.publish_frame(first_index + published)
        published += 1
        next_t += period
        slack = next_t - time.monotonic()
        if slack > 0:
            time.sleep(slack)
        else:
            late += 1
    return published, late, time.monotonic() - t_start


def camera_process(height, width, rate, seconds, domain_id, warm, go, results) -> None:
    """The camera as its own process (as a driver is): publish frame 0 until ``go``, then stream."""
    from mirage_ros.run import LocalGraph
    from mirage_ros.sim.camera import SyntheticCamera

    rig = upsampled_rig(height, width)
    with LocalGraph(domain_id=domain_id) as graph:
        camera = SyntheticCamera(rig=rig, autostart=False, context=graph.context)
        graph.add(camera.node)
        graph.wait_until(lambda: camera.rgb_pub.get_subscription_count() >= 1, 30.0, "the node's subscriptions")
        while not go.wait(0.3):
            if warm.is_set():
                continue
            camera.publish_frame(0)
        results.put(stream(camera, rate, seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--model", default="mirage-tiny")
    parser.add_argument("--every-frame", action="store_true", help="keyframe thresholds 0: encode every frame")
    parser.add_argument("--same-process", action="store_true",
                        help="publish from the node's process (one GIL for camera and node) instead of a separate one")
    parser.add_argument("--tf-timeout", type=float, default=None, help="the node's tf_timeout (default: its own)")
    parser.add_argument("--domain-id", type=int, default=57)
    args = parser.parse_args()

    import multiprocessing

    import torch
    from rclpy.parameter import Parameter

    from mirage_ros.node import MirageNode
    from mirage_ros.run import LocalGraph
    from mirage_ros.sim.camera import SyntheticCamera

    params = [Parameter("model", value=args.model), Parameter("input_qos", value="sensor_data")]
    if args.tf_timeout is not None:
        params.append(Parameter("tf_timeout", value=args.tf_timeout))
    if args.every_frame:
        params += [Parameter("keyframe_translation", value=0.0), Parameter("keyframe_rotation_deg", value=0.0)]
    spawn = multiprocessing.get_context("spawn")
    with LocalGraph(domain_id=args.domain_id) as graph:
        node = graph.add(MirageNode(context=graph.context, parameter_overrides=params))
        if args.same_process:
            camera = SyntheticCamera(rig=upsampled_rig(args.height, args.width), autostart=False,
                                     context=graph.context)
            graph.add(camera.node)
            graph.wait_until(lambda: camera.rgb_pub.get_subscription_count() >= 1, 20.0, "the node's subscriptions")
            camera.publish_frame(0)  # warm up the encoder so the first insert does not count one-off costs
        else:
            warm, go, results = spawn.Event(), spawn.Event(), spawn.Queue()
            proc = spawn.Process(target=camera_process, daemon=True,
                                 args=(args.height, args.width, args.rate, args.seconds, args.domain_id, warm, go,
                                       results))
            proc.start()
        graph.wait_until(lambda: node.ingestor.stats.keyframes >= 1, 90.0, "the first keyframe")
        if not args.same_process:
            warm.set()
        node.worker.wait_idle(10.0)
        time.sleep(0.5)
        s0 = dict(node._received)
        emitted0, proc0, key0 = node.sync.emitted, node.ingestor.stats.frames_in, node.ingestor.stats.keyframes
        lat0 = len(node.ingestor.stats.latencies)
        no_tf0, skipped0 = node.ingestor.stats.frames_dropped_tf, node.ingestor.stats.frames_skipped
        node.queue.high_water = 0
        dropped0 = node.queue.dropped
        if args.same_process:
            published, late, elapsed = stream(camera, args.rate, args.seconds)
        else:
            go.set()
            published, late, elapsed = results.get(timeout=args.seconds + 60)
            proc.join(timeout=10)
        time.sleep(0.5)
        node.worker.wait_idle(30.0)
        st = node.ingestor.stats
        received = {k: node._received[k] - s0[k] for k in s0}
        synced = node.sync.emitted - emitted0
        processed = st.frames_in - proc0
        inserted = st.keyframes - key0
        no_tf, skipped = st.frames_dropped_tf - no_tf0, st.frames_skipped - skipped0
        lat = np.asarray(st.latencies[lat0:]) * 1e3
        high_water, dropped = node.queue.high_water, node.queue.dropped - dropped0
        memory_points = len(node.holder.memory)
        model_name = node.model_name

    print(f"mirage node ingest, {args.width}x{args.height} rgb8 + 16UC1 depth at {args.rate:g} Hz for {elapsed:.1f} s, "
          f"camera in {'the same' if args.same_process else 'a separate'} process, "
          f"model {model_name} on CPU, torch threads {torch.get_num_threads()}, "
          f"{'every frame a keyframe' if args.every_frame else 'default keyframe thresholds'}")
    print(f"  published       {published / elapsed:7.1f} Hz  ({published} sets; publisher late {late} times)")
    print(f"  received rgb    {received['rgb'] / elapsed:7.1f} Hz  depth {received['depth'] / elapsed:.1f} Hz  "
          f"info {received['info'] / elapsed:.1f} Hz")
    print(f"  paired (sync)   {synced / elapsed:7.1f} Hz  ({synced / max(published, 1):.0%} of published)")
    print(f"  processed       {processed / elapsed:7.1f} Hz  (queue dropped {dropped} stale sets)")
    print(f"  inserted        {inserted / elapsed:7.1f} Hz  ({inserted} keyframes, memory {memory_points} points; "
          f"{skipped} not keyframes, {no_tf} without a pose in time)")
    if lat.size:
        print(f"  input -> memory latency: p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
              f"max {lat.max():.1f} ms over {lat.size} inserts")
    print(f"  queue high water {high_water} (size {node.params.ingest_queue_size}): "
          f"{'never grew' if high_water <= node.params.ingest_queue_size else 'GREW'}")
    return 0 if high_water <= node.params.ingest_queue_size else 1


if __name__ == "__main__":
    raise SystemExit(main())
