"""Camera paths through a scene's free region: walk forward, turn in place, orbit, and out-and-back loops.

Every path is (num_frames, 4, 4) OpenCV c2w float32 (:func:`mirage.camera.look_at`), stays inside the
free region (the room shrunk by the objects' band, so it never enters an object or a wall), and its random
defaults come from a generator seeded by the scene's seed and the ``seed`` keyword, never the global RNG.
"""

from __future__ import annotations

import inspect
import math
import torch

from mirage.camera import look_at
from mirage.scenes.elements import SceneLayout, Uniform

__all__ = ["TRAJECTORIES", "camera_path"]

TRAJECTORIES = ("forward", "turn", "orbit", "loop")


def camera_path(scene: SceneLayout, kind: str, num_frames: int, **kw) -> torch.Tensor:
    """Camera path (num_frames, 4, 4) c2w float32 inside the free region, collision-free.

    kind:
      "forward": walk straight (speed m/frame=0.05, yaw_deg=random, start=(x, y) or a random line through
                 the central half of the free region, sway_deg=0 amplitude of a slow yaw sway);
      "turn": rotate in place (turn_rate deg/frame=3, position=free-region centre, yaw_deg=random);
      "orbit": circle the room centre (radius=0.8 * free half-size, speed=0.05, look="inward"|"outward",
               angle_deg=random);
      "loop": go out along ``path`` (any of the above, default "forward") and come back the same way, so
              frame T-1-i has the pose of frame i; other keywords go to ``path``.
    Common keywords: height (m, 1.5), pitch_deg (0, positive looks up), seed (0; mixed with the
    scene's seed for the random defaults). The forward / orbit step shrinks if the path would not
    fit in the free region.
    """
    if kind not in TRAJECTORIES:
        raise ValueError(f"trajectory kind must be one of {TRAJECTORIES}, got {kind!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if kind == "loop":
        path = kw.pop("path", "forward")
        if path not in ("forward", "turn", "orbit"):
            raise ValueError(f"loop path must be 'forward', 'turn' or 'orbit', got {path!r}")
        outward = camera_path(scene, path, (num_frames - 1) // 2 + 1, **kw)
        index = torch.tensor([min(i, num_frames - 1 - i) for i in range(num_frames)])
        return outward[index].clone()
    builder = {"forward": _forward, "turn": _turn, "orbit": _orbit}[kind]
    accepted = set(inspect.signature(builder).parameters) - {"scene", "num_frames"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise ValueError(f"unknown keyword(s) {unknown} for trajectory {kind!r}; accepted: {sorted(accepted)}")
    return builder(scene, num_frames, **kw)


def _forward(scene, num_frames, speed=0.05, yaw_deg=None, start=None, sway_deg=0.0, height=1.5,
             pitch_deg=0.0, seed=0):
    u = _trajectory_rng(scene, seed, 1)
    _check_positive(speed=speed)
    yaw = math.radians(yaw_deg) if yaw_deg is not None else u(0.0, 2.0 * math.pi)
    direction = (math.cos(yaw), math.sin(yaw))
    x0, y0, x1, y1 = scene.free_region
    if start is not None:
        start = tuple(float(p) for p in start)
        if len(start) != 2 or not (x0 <= start[0] <= x1 and y0 <= start[1] <= y1):
            raise ValueError(f"start {start} must be (x, y) inside the free region {scene.free_region}")
        anchor, lowest = start, 0.0
    else:
        # A random line through the central half of the free region.
        anchor = (u(0.75 * x0 + 0.25 * x1, 0.25 * x0 + 0.75 * x1), u(0.75 * y0 + 0.25 * y1, 0.25 * y0 + 0.75 * y1))
        lowest = None
    # Where the line anchor + s * direction enters and leaves the free region (2-D slab test).
    enter, leave = -math.inf, math.inf
    for a, lo, hi, c in ((anchor[0], x0, x1, direction[0]), (anchor[1], y0, y1, direction[1])):
        if abs(c) > 1e-12:
            s0, s1 = sorted(((lo - a) / c, (hi - a) / c))
            enter, leave = max(enter, s0), min(leave, s1)
    enter = enter if lowest is None else lowest
    length = min(speed * (num_frames - 1), leave - enter)
    first = enter if lowest is not None else u(enter, leave - length)
    step = length / max(num_frames - 1, 1)
    xy = [(anchor[0] + (first + step * i) * direction[0], anchor[1] + (first + step * i) * direction[1])
          for i in range(num_frames)]
    sway = [math.radians(sway_deg) * math.sin(2 * math.pi * i / 40.0) for i in range(num_frames)]
    return _poses(scene, xy, [yaw + w for w in sway], height, pitch_deg)


def _turn(scene, num_frames, turn_rate=3.0, position=None, yaw_deg=None, height=1.5, pitch_deg=0.0, seed=0):
    u = _trajectory_rng(scene, seed, 2)
    yaw0 = math.radians(yaw_deg) if yaw_deg is not None else u(0.0, 2.0 * math.pi)
    x0, y0, x1, y1 = scene.free_region
    position = ((x0 + x1) / 2, (y0 + y1) / 2) if position is None else tuple(float(p) for p in position)
    if len(position) != 2 or not (x0 <= position[0] <= x1 and y0 <= position[1] <= y1):
        raise ValueError(f"position {position} must be (x, y) inside the free region {scene.free_region}")
    yaws = [yaw0 + math.radians(turn_rate) * i for i in range(num_frames)]
    return _poses(scene, [position] * num_frames, yaws, height, pitch_deg)


def _orbit(scene, num_frames, radius=None, speed=0.05, look="inward", angle_deg=None, height=1.5,
           pitch_deg=0.0, seed=0):
    u = _trajectory_rng(scene, seed, 3)
    x0, y0, x1, y1 = scene.free_region
    max_radius = min(x1 - x0, y1 - y0) / 2
    radius = 0.8 * max_radius if radius is None else float(radius)
    if not 0 < radius <= max_radius:
        raise ValueError(f"orbit radius must be in (0, {max_radius:.3f}] to stay in the free region, got {radius}")
    if look not in ("inward", "outward"):
        raise ValueError(f"look must be 'inward' or 'outward', got {look!r}")
    _check_positive(speed=speed)
    angle0 = math.radians(angle_deg) if angle_deg is not None else u(0.0, 2.0 * math.pi)
    step = min(speed / radius, 2 * math.pi / max(num_frames - 1, 1))
    angles = [angle0 + step * i for i in range(num_frames)]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xy = [(cx + radius * math.cos(a), cy + radius * math.sin(a)) for a in angles]
    yaws = [a + (math.pi if look == "inward" else 0.0) for a in angles]
    return _poses(scene, xy, yaws, height, pitch_deg)


def _poses(scene, xy, yaws, height, pitch_deg) -> torch.Tensor:
    lz = scene.room_size[2]
    if not 0.2 <= height <= lz - 0.2:
        raise ValueError(f"camera height must be in [0.2, {lz - 0.2:.2f}] m for this room, got {height}")
    if not -85.0 <= pitch_deg <= 85.0:
        raise ValueError(f"pitch_deg must be in [-85, 85], got {pitch_deg}")
    pitch = math.radians(pitch_deg)
    poses = []
    for (x, y), yaw in zip(xy, yaws):
        forward = (math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch))
        eye = (x, y, float(height))
        poses.append(look_at(eye, tuple(e + f for e, f in zip(eye, forward))))
    return torch.stack(poses)


def _trajectory_rng(scene: SceneLayout, seed: int, salt: int) -> Uniform:
    return Uniform(torch.Generator().manual_seed((scene.seed * 1_000_003 + int(seed) * 101 + salt) % 2**63))


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")

