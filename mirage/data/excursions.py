"""Camera paths of the memory task (:mod:`mirage.data.memory_task`): an earlier pass, then an excursion and back.

Pure pose maths on a room's public geometry (``scene.free_region``, ``scene.room_size``, ``scene.objects``);
nothing is rendered here. Conventions are those of :mod:`mirage.camera` (OpenCV c2w, world z up). A camera
is given by a floor position (x, y), a height and a viewing direction (yaw about z from +x, pitch up).

Every target path is **out and back**: ``outgoing`` has ``m`` poses and the clip is
``outgoing[0 .. m-1 .. 0]`` (``2m - 1`` frames), so frame ``T-1-i`` has the pose of frame ``i`` and the clip
ends where it started. Variants (:data:`VARIANTS`):

* ``turn_out_back``: stand still and turn by 100-180 degrees (random side), then turn back.
* ``walk_and_turn``: walk 1-2 m while turning by 90-150 degrees, then come back the same way.
* ``walk_past_occluder``: walk up to 2-3 m along a line parallel to a wall, past one of the room's boxes /
  spheres standing against it, looking at the wall 15-40 degrees ahead and panning 20-50 degrees further
  (parallax uncovers what the object hides, new wall comes into view), then walk back.

The **earlier pass** (:func:`earlier_pass`) walks back along the outgoing positions (offset sideways by
0.3-0.7 m, fading to zero) while sweeping the view by a full turn plus up to 60 degrees, and ends exactly at
the target's first pose: a robot that looked around the place before, from nearby but different viewpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mirage.camera import look_at

__all__ = ["VARIANTS", "ExcursionPath", "plan_excursion", "earlier_pass", "poses_from_path", "out_and_back",
           "view_angles", "smoothstep"]

VARIANTS = ("turn_out_back", "walk_and_turn", "walk_past_occluder")
_MARGIN = 0.1  # metres kept from the free region's edge, so clamped positions never touch an object band


@dataclass
class ExcursionPath:
    """target (T, 4, 4) out-and-back c2w (frame T-1-i == frame i); earlier (N, 4, 4) c2w ending at target[0];
    info: the drawn parameters (degrees, metres, occluder index), for names and reports."""

    target: torch.Tensor
    earlier: torch.Tensor
    variant: str
    info: dict = field(default_factory=dict)


def smoothstep(n: int) -> torch.Tensor:
    """(n,) float64 ease-in-out from 0 to 1 (3s^2 - 2s^3): the camera starts and stops gently."""
    s = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    return s * s * (3.0 - 2.0 * s)


def poses_from_path(xy: torch.Tensor, yaw: torch.Tensor, height: float, pitch: torch.Tensor | float = 0.0
                    ) -> torch.Tensor:
    """(n, 4, 4) float32 c2w at floor positions xy (n, 2) m, height m, yaw (n,) and pitch (n,) or scalar rad."""
    yaw = torch.as_tensor(yaw, dtype=torch.float64)
    pitch = torch.as_tensor(pitch, dtype=torch.float64).expand_as(yaw)
    poses = []
    for (x, y), a, b in zip(xy.double().tolist(), yaw.tolist(), pitch.tolist()):
        eye = (x, y, float(height))
        forward = (math.cos(b) * math.cos(a), math.cos(b) * math.sin(a), math.sin(b))
        poses.append(look_at(eye, tuple(e + f for e, f in zip(eye, forward))))
    return torch.stack(poses)


def view_angles(cam_to_world: torch.Tensor) -> tuple[float, float]:
    """(yaw, pitch) in radians of a (4, 4) c2w's optical axis (its z column)."""
    fx, fy, fz = (float(v) for v in cam_to_world[:3, 2])
    return math.atan2(fy, fx), math.asin(max(-1.0, min(1.0, fz)))


def out_and_back(outgoing: torch.Tensor) -> torch.Tensor:
    """(m, 4, 4) -> (2m - 1, 4, 4): the outgoing poses, then the same poses in reverse (the turn point once)."""
    m = outgoing.shape[0]
    return torch.cat([outgoing, outgoing[:-1].flip(0)]).clone() if m > 1 else outgoing.clone()


class _Draw:
    """Uniform draws from one seeded generator (the task's only source of randomness)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(int(seed) % 2**63)

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def sign(self) -> float:
        return 1.0 if self(0.0, 1.0) < 0.5 else -1.0

    def integer(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.generator))


def _inner_region(scene) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = scene.free_region
    return (x0 + _MARGIN, y0 + _MARGIN, x1 - _MARGIN, y1 - _MARGIN)


def _clamp_xy(xy: torch.Tensor, region) -> torch.Tensor:
    x0, y0, x1, y1 = region
    return torch.stack([xy[:, 0].clamp(x0, x1), xy[:, 1].clamp(y0, y1)], dim=1)


def _room_left(point, direction, region) -> float:
    """How far (m) from ``point`` along the unit 2-D ``direction`` before leaving ``region`` (slab test)."""
    x0, y0, x1, y1 = region
    left = math.inf
    for p, d, lo, hi in ((point[0], direction[0], x0, x1), (point[1], direction[1], y0, y1)):
        if d > 1e-12:
            left = min(left, (hi - p) / d)
        elif d < -1e-12:
            left = min(left, (lo - p) / d)
    return max(left, 0.0)


def _random_point(draw: _Draw, region) -> tuple[float, float]:
    x0, y0, x1, y1 = region
    return (draw(x0, x1), draw(y0, y1))


def _turn_out_back(scene, m: int, draw: _Draw, height: float, pitch: float):
    region = _inner_region(scene)
    xy = torch.tensor([_random_point(draw, region)], dtype=torch.float64).expand(m, 2)
    yaw0, turn = draw(0.0, 2 * math.pi), draw.sign() * math.radians(draw(100.0, 180.0))
    yaw = yaw0 + turn * smoothstep(m)
    return poses_from_path(xy, yaw, height, pitch), {"turn_deg": round(math.degrees(turn), 1)}


def _walk_and_turn(scene, m: int, draw: _Draw, height: float, pitch: float):
    region = _inner_region(scene)
    for _ in range(20):  # a start and heading with at least 1 m of room ahead
        start, heading = _random_point(draw, region), draw(0.0, 2 * math.pi)
        room = _room_left(start, (math.cos(heading), math.sin(heading)), region)
        if room >= 1.0:
            break
    walk = min(draw(1.0, 2.0), room)
    s = smoothstep(m)
    xy = torch.stack([start[0] + walk * s * math.cos(heading), start[1] + walk * s * math.sin(heading)], dim=1)
    turn = draw.sign() * math.radians(draw(90.0, 150.0))
    yaw = heading + draw(-0.3, 0.3) + turn * s
    poses = poses_from_path(_clamp_xy(xy, region), yaw, height, pitch)
    return poses, {"turn_deg": round(math.degrees(turn), 1), "walk_m": round(walk, 2)}


def _walk_past_occluder(scene, m: int, draw: _Draw, height: float, pitch: float, num_objects: int):
    region = _inner_region(scene)
    x0, y0, x1, y1 = region
    candidates = [i for i, o in enumerate(scene.objects[:num_objects]) if o.motion is None] or \
        list(range(min(num_objects, len(scene.objects))))
    if not candidates:  # an empty room: nothing to walk past; a walk with a turn still leaves the view
        return _walk_and_turn(scene, m, draw, height, pitch)
    index = candidates[draw.integer(len(candidates))]
    cx, cy = (float(v) for v in scene.objects[index].center[:2])
    lx, ly = scene.room_size[0] / 2, scene.room_size[1] / 2
    # The wall the object stands against; the camera walks along a line parallel to it, in the free region.
    gaps = {(1.0, 0.0): cx + lx, (-1.0, 0.0): lx - cx, (0.0, 1.0): cy + ly, (0.0, -1.0): ly - cy}
    normal = min(gaps, key=gaps.get)  # from that wall into the room
    along_x = normal[0] == 0.0        # the line runs along x (a y-wall) or along y (an x-wall)
    perp_c, along_c = (cy, cx) if along_x else (cx, cy)
    perp_lo, perp_hi, along_lo, along_hi = (y0, y1, x0, x1) if along_x else (x0, x1, y0, y1)
    n = normal[1] if along_x else normal[0]
    edge = perp_lo if n > 0 else perp_hi
    line = min(max(edge + n * draw(0.0, 0.6), perp_lo), perp_hi)
    distance = abs(line - perp_c)
    # Look at the wall, turned by theta towards the walking direction; start with the object in view, ahead.
    direction = draw.sign()
    theta = math.radians(draw(15.0, 40.0))
    start = along_c - direction * (distance * math.tan(theta) + draw(0.0, 0.5))
    length = min(draw(2.0, 3.0), along_hi - along_lo)
    # Keep the whole walk inside the free region (the object may then start further ahead in the view).
    start = min(max(start, along_lo), along_hi - length) if direction > 0 else \
        max(min(start, along_hi), along_lo + length)
    s = smoothstep(m)
    a = start + direction * length * s
    line_t = torch.full_like(a, line)
    xy = torch.stack([a, line_t], dim=1) if along_x else torch.stack([line_t, a], dim=1)
    facing = math.atan2(-normal[1], -normal[0])  # towards the wall
    # Rotating from "facing" towards +tangent: +90 degrees when the tangent is the wall direction rotated left.
    tangent = (1.0, 0.0) if along_x else (0.0, 1.0)
    left = (-math.sin(facing), math.cos(facing))
    side = direction * (1.0 if tangent[0] * left[0] + tangent[1] * left[1] > 0 else -1.0)
    pan = math.radians(draw(20.0, 50.0))
    yaw = facing + side * (theta + pan * s)
    poses = poses_from_path(xy, yaw, height, pitch)
    return poses, {"occluder": index, "walk_m": round(length, 2),
                   "view_deg": round(math.degrees(theta), 1), "pan_deg": round(math.degrees(pan), 1)}


def plan_excursion(scene, variant: str, num_frames: int, earlier_frames: int, seed: int, num_objects: int = 6
                   ) -> ExcursionPath:
    """Draw one target path of ``num_frames`` (odd, >= 5) and its earlier pass of ``earlier_frames`` (>= 2) poses.

    Deterministic in (scene, variant, num_frames, earlier_frames, seed). ``num_objects``: how many of
    ``scene.objects`` are the room's boxes / spheres (the rest are wall paintings), i.e. occluder candidates.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if num_frames < 5 or num_frames % 2 == 0:
        raise ValueError(f"an out-and-back target needs an odd number of frames >= 5, got {num_frames}")
    if earlier_frames < 2:
        raise ValueError(f"the earlier pass needs at least 2 frames, got {earlier_frames}")
    draw = _Draw(seed)
    lz = scene.room_size[2]
    height = min(draw(1.2, 1.8), lz - 0.3)
    pitch = math.radians(draw(-10.0, 5.0))
    m = (num_frames + 1) // 2
    if variant == "turn_out_back":
        outgoing, info = _turn_out_back(scene, m, draw, height, pitch)
    elif variant == "walk_and_turn":
        outgoing, info = _walk_and_turn(scene, m, draw, height, pitch)
    else:
        outgoing, info = _walk_past_occluder(scene, m, draw, height, pitch, num_objects)
    earlier = earlier_pass(scene, outgoing, earlier_frames, draw)
    return ExcursionPath(target=out_and_back(outgoing), earlier=earlier, variant=variant,
                         info={**info, "height_m": round(height, 2)})


def earlier_pass(scene, outgoing: torch.Tensor, num_frames: int, draw: _Draw, sweep_deg: float = 360.0
                 ) -> torch.Tensor:
    """(num_frames, 4, 4) c2w: walk back along ``outgoing``'s positions (offset sideways, fading out) while
    sweeping the view by ``sweep_deg`` plus up to 60 degrees; the last pose is exactly ``outgoing[0]``."""
    region = _inner_region(scene)
    path = outgoing[:, :2, 3].double().flip(0)  # far end first, the target's start last
    t = torch.linspace(0.0, 1.0, num_frames, dtype=torch.float64)
    position = t * (path.shape[0] - 1)
    lo = position.floor().long().clamp(max=path.shape[0] - 1)
    hi = (lo + 1).clamp(max=path.shape[0] - 1)
    frac = (position - lo.double())[:, None]
    xy = path[lo] * (1 - frac) + path[hi] * frac
    angle = draw(0.0, 2 * math.pi)
    shift = draw(0.3, 0.7) * torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    xy = _clamp_xy(xy + (1 - t)[:, None] * shift, region)
    yaw_end, pitch_end = view_angles(outgoing[0])
    sweep = draw.sign() * math.radians(sweep_deg + draw(0.0, 60.0))
    yaw = yaw_end - sweep * (1 - smoothstep(num_frames))
    pitch = pitch_end * smoothstep(num_frames)
    poses = poses_from_path(xy, yaw, float(outgoing[0, 2, 3]), pitch)
    poses[-1] = outgoing[0]
    return poses
