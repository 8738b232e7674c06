"""How much live RGB-D the mirage node takes in, and how fast it reaches the memory (CPU, mirage-tiny).

    python bench/ros_ingest.py [--seconds 10] [--rate 30] [--height 480] [--width 640] [--every-frame]

A publisher streams 640x480 rgb8 + 16UC1 depth + camera_info + TF at 30 Hz (synthetic-scene frames rendered
once at 160x120 and upsampled, so rendering is not what is measured) into the node, over loopback DDS in one
process. Reports the rates at each stage (published, paired by the node's callbacks, processed by the worker,
inserted), the input -> memory latency of inserts (p50 / p95: from the arrival of a complete rgb + depth +
camera_info set to the end of its memory insert) and the keep-latest queue's high-water mark, which must
never exceed its size: a slow encoder drops stale frames instead of building latency.
``--every-frame`` sets the keyframe thresholds to 0 (every frame encoded and inserted: the worst case).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--model", default="mirage-tiny")
    parser.add_argument("--every-frame", action="store_true", help="keyframe thresholds 0: encode every frame")
    parser.add_argument("--domain-id", type=int, default=57)
    args = parser.parse_args()

    import torch
    from rclpy.parameter import Parameter

    from mirage.camera import scale_intrinsics
    from mirage_ros.node import MirageNode
    from mirage_ros.node_graph import LocalGraph
    from mirage_ros.synthetic_camera import SyntheticCamera
    from mirage_ros.synthetic_rig import RigConfig, RigFrame, SyntheticRig

    small = SyntheticRig(RigConfig(height=120, width=160, num_frames=30, trajectory="orbit"))
    sy, sx = args.height // 120, args.width // 160
    frames = []
    for i in range(len(small)):
        f = small.frame(i)
        frames.append(RigFrame(i, f.rgb.repeat(sy, 0).repeat(sx, 1), f.depth.repeat(sy, 0).repeat(sx, 1),
                               scale_intrinsics(f.intrinsics, (120, 160), (args.height, args.width)),
                               f.cam_to_world, f.world_to_body))

    class Upsampled:  # the rig's interface, serving the upsampled frames
        config = RigConfig(height=args.height, width=args.width, num_frames=len(frames))

        def __len__(self):
            return len(frames)

        def frame(self, i):
            return frames[i % len(frames)]

        def body_to_camera(self):
            return small.body_to_camera()

    params = [Parameter("model", value=args.model), Parameter("input_qos", value="sensor_data")]
    if args.every_frame:
        params += [Parameter("keyframe_translation", value=0.0), Parameter("keyframe_rotation_deg", value=0.0)]
    with LocalGraph(domain_id=args.domain_id) as graph:
        node = graph.add(MirageNode(context=graph.context, parameter_overrides=params))
        camera = SyntheticCamera(rig=Upsampled(), autostart=False, context=graph.context)
        graph.add(camera.node)
        graph.wait_until(lambda: camera.rgb_pub.get_subscription_count() >= 1, 20.0, "the node's subscriptions")
        # warm up the encoder so the first insert does not count one-off costs
        camera.publish_frame(0)
        graph.wait_until(lambda: node.ingestor.stats.keyframes >= 1, 60.0, "the first keyframe")
        node.worker.wait_idle(10.0)
        s0 = dict(node._received)
        emitted0, proc0, key0 = node.sync.emitted, node.ingestor.stats.frames_in, node.ingestor.stats.keyframes
        lat0 = len(node.ingestor.stats.latencies)
        node.queue.high_water = 0
        dropped0 = node.queue.dropped
        period = 1.0 / args.rate
        published, late = 0, 0
        t_start = time.monotonic()
        next_t = t_start
        while time.monotonic() - t_start < args.seconds:
            camera.publish_frame(published + 1)
            published += 1
            next_t += period
            slack = next_t - time.monotonic()
            if slack > 0:
                time.sleep(slack)
            else:
                late += 1
        elapsed = time.monotonic() - t_start
        time.sleep(0.5)
        node.worker.wait_idle(30.0)
        st = node.ingestor.stats
        received = {k: node._received[k] - s0[k] for k in s0}
        synced = node.sync.emitted - emitted0
        processed = st.frames_in - proc0
        inserted = st.keyframes - key0
        lat = np.asarray(st.latencies[lat0:]) * 1e3
        high_water, dropped = node.queue.high_water, node.queue.dropped - dropped0
        memory_points = len(node.holder.memory)
        model_name = node.model_name

    print(f"mirage node ingest, {args.width}x{args.height} rgb8 + 16UC1 depth at {args.rate:g} Hz for {elapsed:.1f} s, "
          f"model {model_name} on CPU, torch threads {torch.get_num_threads()}, "
          f"{'every frame a keyframe' if args.every_frame else 'default keyframe thresholds'}")
    print(f"  published       {published / elapsed:7.1f} Hz  ({published} sets; publisher late {late} times)")
    print(f"  received rgb    {received['rgb'] / elapsed:7.1f} Hz  depth {received['depth'] / elapsed:.1f} Hz  "
          f"info {received['info'] / elapsed:.1f} Hz")
    print(f"  paired (sync)   {synced / elapsed:7.1f} Hz  ({synced / max(published, 1):.0%} of published)")
    print(f"  processed       {processed / elapsed:7.1f} Hz  (queue dropped {dropped} stale sets)")
    print(f"  inserted        {inserted / elapsed:7.1f} Hz  ({inserted} keyframes, memory {memory_points} points)")
    if lat.size:
        print(f"  input -> memory latency: p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
              f"max {lat.max():.1f} ms over {lat.size} inserts")
    print(f"  queue high water {high_water} (size {node.params.ingest_queue_size}): "
          f"{'never grew' if high_water <= node.params.ingest_queue_size else 'GREW'}")
    return 0 if high_water <= node.params.ingest_queue_size else 1


if __name__ == "__main__":
    raise SystemExit(main())
