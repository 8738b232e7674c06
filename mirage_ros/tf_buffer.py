"""A TF buffer over /tf and /tf_static (tf2_ros is not installable from PyPI).

Transforms are stored per child frame (a TF tree gives each frame one parent): dynamic ones in a time cache
bounded to ``cache_time`` seconds behind the newest stamp, static ones forever. A lookup chains the edges from
both frames up to their common ancestor, interpolating each dynamic edge at the requested time (translation
linearly, rotation by slerp), like tf2's ``BufferCore``. ``time=0`` asks for the latest time all edges share.

Times are int nanoseconds, float seconds, rclpy ``Time`` (``.nanoseconds``) or builtin_interfaces/Time
(read by :func:`mirage_ros.conversions.time.stamp_to_ns`).
``lookup_transform(target, source, t)`` returns ``T_target_source``: it maps points in ``source`` coordinates to
``target`` coordinates; ``lookup_transform("odom", "camera_optical_frame", stamp)`` is the camera's c2w.

Blocking lookups (``timeout > 0``) wait on a condition that every new transform notifies; under rclpy the TF
subscriptions must be able to run meanwhile (a MultiThreadedExecutor, with the waiting callback and the TF
subscriptions in different or reentrant callback groups).
"""

from __future__ import annotations

import bisect
import threading
import time as _time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from mirage_ros.conversions.time import NS_PER_SECOND, ns_to_stamp, stamp_to_ns

__all__ = [
    "TransformError",
    "FrameLookupError",
    "ConnectivityError",
    "ExtrapolationError",
    "StampedTransform",
    "TransformBuffer",
    "attach_tf_listener",
    "to_nanoseconds",
]


class TransformError(Exception):
    """Base class of every TF lookup failure."""


class FrameLookupError(TransformError, LookupError):
    """A frame is unknown to the buffer."""


class ConnectivityError(FrameLookupError):
    """Both frames are known but lie in trees that are not connected."""


class ExtrapolationError(TransformError):
    """The requested time is outside the range the cached transforms cover."""

    def __init__(self, message: str, requested_ns: int, earliest_ns: int, latest_ns: int):
        super().__init__(message)
        self.requested_ns, self.earliest_ns, self.latest_ns = requested_ns, earliest_ns, latest_ns


# The one stamp reader (mirage_ros.conversions.time); kept under this name for the buffer's callers.
to_nanoseconds = stamp_to_ns


def _frame(name: str) -> str:
    name = str(name).lstrip("/")  # tf2 ignores a leading slash
    if not name:
        raise ValueError("frame id must not be empty")
    return name


@dataclass(frozen=True)
class StampedTransform:
    """``matrix`` (4, 4) float64 maps ``source_frame`` coordinates into ``target_frame`` at ``stamp_ns``."""

    target_frame: str
    source_frame: str
    stamp_ns: int
    matrix: np.ndarray

    @property
    def translation(self) -> np.ndarray:
        return self.matrix[:3, 3].copy()

    @property
    def rotation_xyzw(self) -> np.ndarray:
        return Rotation.from_matrix(self.matrix[:3, :3]).as_quat()

    def to_tensor(self):
        """(4, 4) float32 torch tensor (mirage's pose type)."""
        import torch

        return torch.from_numpy(self.matrix.copy()).float()

    def to_msg(self):
        """geometry_msgs/TransformStamped (header.frame_id = target, child_frame_id = source)."""
        from geometry_msgs.msg import TransformStamped

        msg = TransformStamped()
        msg.header.stamp = ns_to_stamp(self.stamp_ns)
        msg.header.frame_id, msg.child_frame_id = self.target_frame, self.source_frame
        t, q = self.translation, self.rotation_xyzw
        msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = map(float, t)
        (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
         msg.transform.rotation.w) = map(float, q)
        return msg


@dataclass
class _Edge:
    """The transform parent <- child over time (static: one entry, valid at every time)."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quaternions: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, t: np.ndarray, q: np.ndarray, cache_ns: int) -> None:
        if self.static:
            self.stamps, self.translations, self.quaternions = [stamp_ns], [t], [q]
            return
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:  # same stamp again: the newer message wins
            self.translations[i], self.quaternions[i] = t, q
        else:
            self.stamps.insert(i, stamp_ns)
            self.translations.insert(i, t)
            self.quaternions.insert(i, q)
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - cache_ns)
        if cut:
            del self.stamps[:cut], self.translations[:cut], self.quaternions[:cut]

    def matrix_at(self, stamp_ns: int, child: str) -> np.ndarray:
        """T_parent_child at ``stamp_ns`` (ignored for static edges)."""
        if self.static:
            return _matrix(self.translations[0], self.quaternions[0])
        first, last = self.stamps[0], self.stamps[-1]
        if not first <= stamp_ns <= last:
            raise ExtrapolationError(
                f"lookup of {self.parent} -> {child} at {stamp_ns / NS_PER_SECOND:.9f} s extrapolates: transforms "
                f"cover [{first / NS_PER_SECOND:.9f}, {last / NS_PER_SECOND:.9f}] s", stamp_ns, first, last)
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return _matrix(self.translations[i], self.quaternions[i])
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        alpha = (stamp_ns - t0) / (t1 - t0)
        translation = (1.0 - alpha) * self.translations[i - 1] + alpha * self.translations[i]
        slerp = Slerp([0.0, 1.0], Rotation.from_quat([self.quaternions[i - 1], self.quaternions[i]]))
        return _matrix(translation, slerp([alpha]).as_quat()[0])


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()
    T[:3, 3] = t
    return T


class TransformBuffer:
    """Thread-safe TF cache with chained, interpolated lookups (see the module docstring)."""

    def __init__(self, cache_time: float = 10.0):
        if not cache_time > 0:
            raise ValueError(f"cache_time must be > 0 seconds, got {cache_time}")
        self.cache_ns = stamp_to_ns(float(cache_time))
        self._edges: dict[str, _Edge] = {}
        self._changed = threading.Condition(threading.Lock())
        self.rejected = 0
        self.last_rejection = ""

    # ------------------------------------------------------------------------------------------ input
    def set_transform(self, parent: str, child: str, stamp: Any, translation: Iterable[float],
                      rotation_xyzw: Iterable[float], static: bool = False) -> None:
        """Store T_parent_child at ``stamp``. Raises ValueError on bad input (nothing is stored then)."""
        parent, child = _frame(parent), _frame(child)
        if parent == child:
            raise ValueError(f"transform from frame {child!r} to itself")
        stamp_ns = stamp_to_ns(stamp)
        t = np.asarray(list(translation), dtype=np.float64)
        q = np.asarray(list(rotation_xyzw), dtype=np.float64)
        if t.shape != (3,) or q.shape != (4,) or not (np.isfinite(t).all() and np.isfinite(q).all()):
            raise ValueError(f"transform {parent} -> {child} needs 3 finite translation and 4 finite quaternion "
                             f"values, got {t.tolist()} and {q.tolist()}")
        norm = np.linalg.norm(q)
        if abs(norm - 1.0) > 1e-3:  # tf2 rejects these too; a tiny drift is renormalised
            raise ValueError(f"transform {parent} -> {child} has a non-unit quaternion (|q| = {norm:.6g})")
        q = q / norm
        with self._changed:
            edge = self._edges.get(child)
            if edge is not None and edge.static and not static:
                raise ValueError(f"frame {child!r} already has a static parent {edge.parent!r}; "
                                 "a dynamic transform for it is rejected")
            if edge is None or edge.parent != parent or edge.static != static:
                edge = _Edge(parent=parent, static=static)  # a new parent replaces the old history
            if not static and edge.stamps and stamp_ns < edge.stamps[-1] - self.cache_ns:
                return  # older than the cache keeps (tf2: TF_OLD_DATA); dropped
            if self._creates_cycle(parent, child):
                raise ValueError(f"transform {parent} -> {child} would create a loop in the TF tree")
            edge.insert(stamp_ns, t, q, self.cache_ns)
            self._edges[child] = edge
            self._changed.notify_all()

    def set_transform_msg(self, msg: Any, static: bool = False) -> None:
        """Store a geometry_msgs/TransformStamped (rclpy or rosbags object)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        self.set_transform(msg.header.frame_id, msg.child_frame_id, msg.header.stamp,
                           (tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w), static=static)

    def set_tf_message(self, msg: Any, static: bool = False) -> int:
        """Store every transform of a tf2_msgs/TFMessage. Bad entries are skipped (a listener must not die on one
        bad publisher) and counted in ``rejected``, the reason kept in ``last_rejection``. Returns how many
        were stored."""
        stored = 0
        for transform in msg.transforms:
            try:
                self.set_transform_msg(transform, static=static)
                stored += 1
            except ValueError as exc:
                self.rejected += 1
                self.last_rejection = str(exc)
        return stored

    def clear(self) -> None:
        """Forget every dynamic transform (e.g. on a clock jump back); static ones stay."""
        with self._changed:
            self._edges = {c: e for c, e in self._edges.items() if e.static}

    # ------------------------------------------------------------------------------------------ queries
    def frames(self) -> set[str]:
        with self._changed:
            return set(self._edges) | {e.parent for e in self._edges.values()}

    def parent_of(self, frame: str) -> str | None:
        with self._changed:
            edge = self._edges.get(_frame(frame))
            return edge.parent if edge else None

    def can_transform(self, target_frame: str, source_frame: str, time: Any = 0) -> bool:
        try:
            self.lookup_transform(target_frame, source_frame, time)
            return True
        except TransformError:
            return False

    def lookup_transform(self, target_frame: str, source_frame: str, time: Any = 0,
                         timeout: float = 0.0) -> StampedTransform:
        """T_target_source at ``time`` (0 = latest common time), waiting up to ``timeout`` seconds for it.

        Raises FrameLookupError (unknown frame), ConnectivityError (no common ancestor) or ExtrapolationError
        (time outside the cache), the last one seen when the timeout runs out.
        """
        target, source = _frame(target_frame), _frame(source_frame)
        stamp_ns = stamp_to_ns(time)
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        deadline = _time.monotonic() + timeout
        with self._changed:
            while True:
                try:
                    return self._lookup(target, source, stamp_ns)
                except TransformError:
                    remaining = deadline - _time.monotonic()
                    if remaining <= 0:
                        raise
                    self._changed.wait(remaining)

    # ------------------------------------------------------------------------------------------ internals
    def _creates_cycle(self, parent: str, child: str) -> bool:
        frame, seen = parent, set()
        while frame in self._edges and frame not in seen:
            if frame == child:
                return True
            seen.add(frame)
            frame = self._edges[frame].parent
        return frame == child

    def _chain(self, frame: str) -> list[str]:
        """``frame`` and its ancestors up to the root."""
        chain = [frame]
        while chain[-1] in self._edges:
            chain.append(self._edges[chain[-1]].parent)
        return chain

    def _lookup(self, target: str, source: str, stamp_ns: int) -> StampedTransform:
        known = set(self._edges) | {e.parent for e in self._edges.values()}
        for name in (target, source):
            if name not in known:
                raise FrameLookupError(f"frame {name!r} does not exist in the TF buffer "
                                       f"(known: {sorted(known)[:20]})")
        if target == source:
            return StampedTransform(target, source, stamp_ns, np.eye(4))
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise ConnectivityError(f"frames {target!r} and {source!r} are not connected: their trees have the "
                                    f"roots {up_target[-1]!r} and {up_source[-1]!r}")
        source_edges = up_source[: up_source.index(common)]   # children whose edges lead source -> common
        target_edges = up_target[: up_target.index(common)]
        dynamic = [self._edges[c] for c in source_edges + target_edges if not self._edges[c].static]
        if stamp_ns == 0 and dynamic:
            stamp_ns = min(e.stamps[-1] for e in dynamic)  # latest time every edge covers
        T_common_source = np.eye(4)
        for child in source_edges:  # walk up: T_common_source = T_p_c ... T_c1_source
            T_common_source = self._edges[child].matrix_at(stamp_ns, child) @ T_common_source
        T_common_target = np.eye(4)
        for child in target_edges:
            T_common_target = self._edges[child].matrix_at(stamp_ns, child) @ T_common_target
        R, t = T_common_target[:3, :3], T_common_target[:3, 3]
        T_target_common = np.eye(4)
        T_target_common[:3, :3] = R.T
        T_target_common[:3, 3] = -R.T @ t
        return StampedTransform(target, source, stamp_ns, T_target_common @ T_common_source)


def attach_tf_listener(node: Any, buffer: TransformBuffer, *, tf_topic: str = "/tf",
                       tf_static_topic: str = "/tf_static", qos_depth: int = 100, callback_group: Any = None,
                       on_change: Any = None):
    """Subscribe ``node`` to /tf (volatile) and /tf_static (transient local), feeding ``buffer``.

    QoS follows tf2_ros's listener (reliable, keep last ``qos_depth``). ``on_change()`` runs after every stored
    message (e.g. to retry frames that wait for their pose). Returns the two subscriptions.
    Needs tf2_msgs (the real one, or the fallback that scripts/bootstrap.sh builds where none is installed).
    """
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    try:
        from tf2_msgs.msg import TFMessage
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("tf2_msgs is not importable: install ROS 2's tf2_msgs or run scripts/bootstrap.sh "
                          "(it builds a wire-compatible tf2_msgs) and source scripts/env.sh") from exc

    dynamic_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_depth,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
    static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos_depth,
                            reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    def store(msg, static: bool) -> None:
        if buffer.set_tf_message(msg, static=static) and on_change is not None:
            on_change()

    tf_sub = node.create_subscription(TFMessage, tf_topic, lambda msg: store(msg, False), dynamic_qos,
                                      callback_group=callback_group)
    static_sub = node.create_subscription(TFMessage, tf_static_topic, lambda msg: store(msg, True), static_qos,
                                          callback_group=callback_group)
    return tf_sub, static_sub
