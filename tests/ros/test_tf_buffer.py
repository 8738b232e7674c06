"""mirage_ros.tf_buffer: chained lookups, interpolation (lerp + slerp), static frames, errors, blocking waits."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mirage_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    FrameLookupError,
    TransformBuffer,
    TransformError,
    to_nanoseconds,
)

S = 1_000_000_000  # ns per second
IDENTITY_Q = (0.0, 0.0, 0.0, 1.0)


def yaw(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_quat()


def matrix(t, q) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()
    T[:3, 3] = t
    return T


@pytest.fixture
def robot() -> TransformBuffer:
    """odom -> base_link (moving) -> camera_link -> camera_optical (static), odom -> lidar (static)."""
    buf = TransformBuffer(cache_time=10.0)
    buf.set_transform("odom", "base_link", 1 * S, (0.0, 0.0, 0.0), yaw(0))
    buf.set_transform("odom", "base_link", 2 * S, (2.0, 0.0, 0.0), yaw(90))
    buf.set_transform("base_link", "camera_link", 0, (0.1, 0.0, 0.5), IDENTITY_Q, static=True)
    optical = Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_quat()  # REP 103 optical frame
    buf.set_transform("camera_link", "camera_optical", 0, (0.0, 0.0, 0.0), optical, static=True)
    buf.set_transform("odom", "lidar", 0, (0.0, 1.0, 0.0), IDENTITY_Q, static=True)
    return buf


def test_chain_through_static_and_dynamic_edges(robot):
    result = robot.lookup_transform("odom", "camera_optical", 2 * S)
    expected = (matrix((2.0, 0, 0), yaw(90)) @ matrix((0.1, 0, 0.5), IDENTITY_Q)
                @ matrix((0, 0, 0), Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_quat()))
    np.testing.assert_allclose(result.matrix, expected, atol=1e-12)
    # optical z (forward) is base_link x, which after a 90 degree yaw points along odom +y
    np.testing.assert_allclose(result.matrix[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)
    assert result.stamp_ns == 2 * S and result.target_frame == "odom" and result.source_frame == "camera_optical"


def test_lookup_across_branches_goes_through_common_ancestor(robot):
    result = robot.lookup_transform("lidar", "camera_link", 1 * S)
    # at t=1 s base_link is at the origin; camera_link is at (0.1, 0, 0.5) in odom, lidar at (0, 1, 0)
    np.testing.assert_allclose(result.translation, [0.1, -1.0, 0.5], atol=1e-12)
    inverse = robot.lookup_transform("camera_link", "lidar", 1 * S)
    np.testing.assert_allclose(inverse.matrix @ result.matrix, np.eye(4), atol=1e-12)


def test_interpolation_lerps_translation_and_slerps_rotation(robot):
    result = robot.lookup_transform("odom", "base_link", int(1.25 * S))
    np.testing.assert_allclose(result.translation, [0.5, 0.0, 0.0], atol=1e-12)
    angle = Rotation.from_matrix(result.matrix[:3, :3]).as_euler("xyz", degrees=True)
    np.testing.assert_allclose(angle, [0.0, 0.0, 22.5], atol=1e-9)  # slerp: constant angular rate


def test_slerp_takes_the_short_way_round():
    buf = TransformBuffer()
    buf.set_transform("map", "robot", 0, (0, 0, 0), yaw(170))
    buf.set_transform("map", "robot", 2 * S, (0, 0, 0), yaw(-170))
    mid = buf.lookup_transform("map", "robot", 1 * S)
    angle = Rotation.from_matrix(mid.matrix[:3, :3]).as_euler("xyz", degrees=True)[2]
    assert abs(abs(angle) - 180.0) < 1e-6  # through 180, not through 0


def test_time_zero_is_latest_common_time(robot):
    robot.set_transform("odom", "other", 1.5, (0.0, 0.0, 0.0), IDENTITY_Q)  # float seconds
    latest = robot.lookup_transform("base_link", "other", 0)
    assert latest.stamp_ns == int(1.5 * S)  # base_link goes to 2 s, other only to 1.5 s
    only_base = robot.lookup_transform("odom", "camera_optical", 0)
    assert only_base.stamp_ns == 2 * S
    static_only = robot.lookup_transform("odom", "lidar", 0)
    assert static_only.stamp_ns == 0


def test_static_transforms_hold_at_any_time(robot):
    for t in (0, 5 * S, 10**18):
        np.testing.assert_allclose(robot.lookup_transform("base_link", "camera_link", t).translation, [0.1, 0, 0.5])


def test_unknown_and_disconnected_frames(robot):
    with pytest.raises(FrameLookupError, match="'nowhere' does not exist"):
        robot.lookup_transform("odom", "nowhere", 0)
    assert issubclass(FrameLookupError, LookupError) and issubclass(FrameLookupError, TransformError)
    robot.set_transform("map", "beacon", 0, (0, 0, 0), IDENTITY_Q, static=True)
    with pytest.raises(ConnectivityError, match="not connected"):
        robot.lookup_transform("beacon", "camera_link", 0)
    assert not robot.can_transform("beacon", "camera_link")
    assert robot.can_transform("odom", "camera_link")


def test_extrapolation_error_reports_available_range(robot):
    with pytest.raises(ExtrapolationError) as info:
        robot.lookup_transform("odom", "camera_optical", 3 * S)
    assert (info.value.earliest_ns, info.value.latest_ns, info.value.requested_ns) == (1 * S, 2 * S, 3 * S)
    assert "[1.000000000, 2.000000000]" in str(info.value)
    with pytest.raises(ExtrapolationError):
        robot.lookup_transform("odom", "base_link", int(0.5 * S))


def test_cache_is_bounded_in_time():
    buf = TransformBuffer(cache_time=1.0)
    for i in range(30):
        buf.set_transform("odom", "base", int(i * 0.1 * S), (i, 0, 0), IDENTITY_Q)
    with pytest.raises(ExtrapolationError) as info:
        buf.lookup_transform("odom", "base", 0.5)
    assert info.value.earliest_ns == int(1.9 * S)  # 2.9 s newest - 1 s
    buf.set_transform("odom", "base", 0.2, (0, 0, 0), IDENTITY_Q)  # too old for the cache: dropped
    assert buf.lookup_transform("odom", "base", 2.9).translation[0] == pytest.approx(29.0)
    with pytest.raises(ExtrapolationError):
        buf.lookup_transform("odom", "base", 0.2)


def test_out_of_order_inserts_are_sorted():
    buf = TransformBuffer()
    buf.set_transform("a", "b", 3 * S, (3, 0, 0), IDENTITY_Q)
    buf.set_transform("a", "b", 1 * S, (1, 0, 0), IDENTITY_Q)
    buf.set_transform("a", "b", 2 * S, (5, 0, 0), IDENTITY_Q)
    assert buf.lookup_transform("a", "b", 1.5).translation[0] == pytest.approx(3.0)


def test_bad_input_raises_and_leaves_buffer_unchanged(robot):
    before = robot.lookup_transform("odom", "camera_optical", 0).matrix
    with pytest.raises(ValueError, match="non-unit quaternion"):
        robot.set_transform("odom", "base_link", 3 * S, (0, 0, 0), (0, 0, 0, 2))
    with pytest.raises(ValueError, match="loop"):
        robot.set_transform("camera_optical", "odom", 0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="itself"):
        robot.set_transform("odom", "/odom", 0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="static parent"):
        robot.set_transform("base_link", "camera_link", 0, (0, 0, 0), IDENTITY_Q)
    with pytest.raises(ValueError, match="finite"):
        robot.set_transform("odom", "base_link", 3 * S, (math.nan, 0, 0), IDENTITY_Q)
    np.testing.assert_array_equal(robot.lookup_transform("odom", "camera_optical", 0).matrix, before)


def test_tf_message_input_and_leading_slash():
    def stamped(parent, child, sec, x, q=IDENTITY_Q):
        return NS(header=NS(frame_id=parent, stamp=NS(sec=sec, nanosec=0)), child_frame_id=child,
                  transform=NS(translation=NS(x=x, y=0.0, z=0.0), rotation=NS(x=q[0], y=q[1], z=q[2], w=q[3])))

    buf = TransformBuffer()
    stored = buf.set_tf_message(NS(transforms=[stamped("/odom", "base", 1, 1.0), stamped("odom", "base", 2, 3.0),
                                               stamped("odom", "bad", 1, 0.0, q=(0, 0, 0, 0))]))
    assert stored == 2 and buf.rejected == 1 and "non-unit" in buf.last_rejection
    assert buf.lookup_transform("odom", "base", 1.5).translation[0] == pytest.approx(2.0)
    assert buf.parent_of("base") == "odom"


def test_blocking_lookup_waits_for_transform(robot):
    def publish_later():
        time.sleep(0.15)
        robot.set_transform("odom", "base_link", 3 * S, (4.0, 0.0, 0.0), yaw(90))

    thread = threading.Thread(target=publish_later)
    thread.start()
    started = time.monotonic()
    result = robot.lookup_transform("odom", "base_link", 3 * S, timeout=5.0)
    thread.join()
    assert result.translation[0] == pytest.approx(4.0)
    assert time.monotonic() - started < 4.0  # woken by the insert, not by the timeout


def test_blocking_lookup_times_out_with_the_underlying_error(robot):
    started = time.monotonic()
    with pytest.raises(ExtrapolationError):
        robot.lookup_transform("odom", "base_link", 9 * S, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    with pytest.raises(FrameLookupError):
        robot.lookup_transform("odom", "ghost", 0, timeout=0.05)


def test_time_inputs():
    assert to_nanoseconds(NS(sec=2, nanosec=3)) == 2 * S + 3
    assert to_nanoseconds(NS(nanoseconds=11)) == 11
    assert to_nanoseconds(1.5) == int(1.5 * S)
    with pytest.raises(ValueError):
        to_nanoseconds(float("nan"))
    with pytest.raises(ValueError):
        TransformBuffer(cache_time=0)


# ------------------------------------------------------------------------------------------------ ROS
# `ros2 topic info -v /tf` on real ROS 2 systems (and tf2_msgs' golden-hash tests) report this type hash.
TF_MESSAGE_TYPE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"


@pytest.mark.ros
def test_tf2_msgs_type_hash_matches_real_ros():
    from ament_index_python.packages import get_package_share_directory

    description = Path(get_package_share_directory("tf2_msgs")) / "msg" / "TFMessage.json"
    hashes = {h["type_name"]: h["hash_string"] for h in json.loads(description.read_text())["type_hashes"]}
    assert hashes["tf2_msgs/msg/TFMessage"] == TF_MESSAGE_TYPE_HASH


@pytest.mark.ros
def test_listener_fills_buffer_from_tf_and_latched_tf_static(ros_context):
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from mirage_ros.tf_buffer import attach_tf_listener

    def stamped(parent, child, sec, x):
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = parent, child
        msg.header.stamp.sec = sec
        msg.transform.translation.x = x
        msg.transform.rotation.w = 1.0
        return msg

    talker = rclpy.create_node("tf_talker", context=ros_context)
    listener = rclpy.create_node("tf_listener", context=ros_context)
    static_pub = talker.create_publisher(TFMessage, "/tf_static", QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    tf_pub = talker.create_publisher(TFMessage, "/tf", 10)
    static_pub.publish(TFMessage(transforms=[stamped("base", "camera", 0, 0.5)]))  # before anyone listens
    buf = TransformBuffer()
    attach_tf_listener(listener, buf)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(talker)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not buf.can_transform("odom", "camera", 1 * S):
            tf_pub.publish(TFMessage(transforms=[stamped("odom", "base", 1, 2.0)]))
            executor.spin_once(timeout_sec=0.05)
        result = buf.lookup_transform("odom", "camera", 1 * S)
        assert result.translation[0] == pytest.approx(2.5)
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()
