"""Random scene contents: surfaces, objects along the walls (some moving), paintings and a window.

Every draw comes from one ``torch.Generator`` seeded by the scene's seed (never the global RNG) in a fixed
order, so a seed always gives the same room. Objects stand in the band of width ``clearance`` along the
walls, with their footprint and motion inside it, so cameras in the free region never enter one.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from mirage.scenes.elements import WALLS, Box, Material, Motion, Sphere, Uniform, Window

__all__ = ["random_contents"]


def random_contents(seed: int, num_objects: int = 6, num_dynamic: int = 0, room_size: Sequence[float] | None = None,
                    window: bool = True, clearance: float = 1.5, num_paintings: int = 3) -> dict:
    """Keyword arguments of :class:`~mirage.scenes.scene.Scene` for :meth:`Scene.random` (same arguments)."""
    if num_objects < 0 or not 0 <= num_dynamic <= num_objects:
        raise ValueError(f"need 0 <= num_dynamic <= num_objects, got {num_dynamic} and {num_objects}")
    if num_paintings < 0:
        raise ValueError(f"num_paintings must be >= 0, got {num_paintings}")
    generator = torch.Generator().manual_seed(int(seed))
    u = Uniform(generator)
    if room_size is None:
        room_size = (u(6.0, 9.0), u(5.0, 7.5), u(2.6, 3.4))
    lx, ly, lz = (float(x) for x in room_size)
    if not (min(lx, ly) >= 2 * clearance + 1.0 and lz >= 2.4):
        raise ValueError(f"room_size {tuple(room_size)} is too small for random contents: need Lx, Ly >= "
                         f"2 * clearance + 1 = {2 * clearance + 1.0:.2f} m and Lz >= 2.4 m")
    if num_objects and clearance < 0.6:
        raise ValueError(f"clearance must be >= 0.6 m to leave room for objects along the walls, got {clearance}")
    surfaces = (
        *(Material.random(generator, ("plain", "stripes", "tiles", "dots", "checker")) for _ in range(4)),
        Material.random(generator, ("checker", "tiles", "stripes")),
        Material.random(generator, ("plain", "tiles")),
    )
    placed: list[tuple[float, float, float]] = []   # (x, y, footprint + motion) for overlap checks
    objects = [_random_object(u, generator, (lx, ly, lz), clearance, i < num_dynamic, placed)
               for i in range(num_objects)]
    opening = None
    if window:
        wall = ("x-", "x+", "y-", "y+")[u.integer(4)]
        length = ly if wall in ("x-", "x+") else lx
        width = u(1.0, 0.45 * length)
        centre = u(-length / 2 + width / 2 + 0.3, length / 2 - width / 2 - 0.3)
        bottom = u(0.7, 1.2)
        opening = Window(wall, (centre - width / 2, centre + width / 2), (bottom, u(bottom + 0.8, lz - 0.3)))
    paintings = [_random_painting(u, generator, (lx, ly, lz), opening) for _ in range(num_paintings)]
    objects += [painting for painting in paintings if painting is not None]
    light = (u(-0.6, 0.6), u(-0.6, 0.6), 1.0)
    return {"room_size": (lx, ly, lz), "surfaces": surfaces, "objects": objects, "window": opening,
            "clearance": clearance, "light_direction": light, "seed": seed}


def _random_painting(u: Uniform, generator: torch.Generator, room, window: Window | None) -> Box | None:
    """A thin textured panel flat against a wall, clear of the window (landmarks for memory tests)."""
    lx, ly, lz = room
    for attempt in range(20):
        wall = u.integer(4)
        length = ly if wall < 2 else lx
        width, height = u(0.4, min(1.4, length / 3)), u(0.4, min(1.0, lz / 3))
        along = u(-length / 2 + width / 2 + 0.1, length / 2 - width / 2 - 0.1)
        bottom = u(0.6, lz - height - 0.3)
        clear = (window is None or WALLS[window.wall] != wall or along + width / 2 < window.u[0]
                 or along - width / 2 > window.u[1] or bottom > window.z[1] or bottom + height < window.z[0])
        if clear:
            break
    else:
        return None   # every wall spot tried overlaps the window
    thickness = 0.02
    inset = {0: -lx / 2, 1: lx / 2, 2: -ly / 2, 3: ly / 2}[wall]
    inset += thickness if wall in (0, 2) else -thickness
    if wall < 2:
        center, half = (inset, along, bottom + height / 2), (thickness, width / 2, height / 2)
    else:
        center, half = (along, inset, bottom + height / 2), (width / 2, thickness, height / 2)
    material = Material.random(generator, ("stripes", "checker", "dots", "tiles"))
    return Box(center, half, material=material)


def _random_object(u: Uniform, generator: torch.Generator, room, clearance: float, dynamic: bool,
                   placed: list) -> Box | Sphere:
    lx, ly, lz = room
    # Footprint + motion must fit in the band between a wall and the free region, with 5 cm to spare.
    reach_max = clearance / 2 - 0.05
    for attempt in range(50):
        is_box = u.integer(3) > 0
        if is_box:
            half_xy = (u(0.12, 0.45), u(0.12, 0.45))
            scale = min(1.0, 0.85 * reach_max / math.hypot(*half_xy))
            half = (half_xy[0] * scale, half_xy[1] * scale, u(0.15, 0.9))
            footprint = math.hypot(half[0], half[1])
        else:
            radius = u(0.15, min(0.45, 0.85 * reach_max))
            footprint = radius
        amplitude = u(0.15, max(reach_max - footprint, 0.16)) if dynamic else 0.0
        reach = min(footprint + amplitude, reach_max)
        amplitude = reach - footprint if dynamic else 0.0
        wall = u.integer(4)
        depth_into_room = u(reach + 0.05, clearance - reach - 0.05)
        along_half = (ly if wall < 2 else lx) / 2 - reach - 0.05
        along = u(-along_half, along_half)
        if wall < 2:
            x, y = (-lx / 2 + depth_into_room if wall == 0 else lx / 2 - depth_into_room), along
        else:
            x, y = along, (-ly / 2 + depth_into_room if wall == 2 else ly / 2 - depth_into_room)
        if all(math.hypot(x - px, y - py) > reach + pr + 0.05 for px, py, pr in placed) or attempt == 49:
            break
    placed.append((x, y, reach))
    motion = None
    if dynamic:
        # Linear motion runs along the wall, so the object stays in its band.
        tangent = (0.0, 1.0, 0.0) if wall < 2 else (1.0, 0.0, 0.0)
        if u.integer(2):
            motion = Motion("linear", tuple(amplitude * c for c in tangent), period=u(3.0, 8.0),
                            phase=u(0.0, 2 * math.pi))
        else:
            motion = Motion("circular", radius=amplitude, period=u(3.0, 8.0), phase=u(0.0, 2 * math.pi))
    material = Material.random(generator)
    if is_box:
        return Box((x, y, half[2]), half, yaw=u(0.0, math.pi), material=material, motion=motion)
    floating = u.integer(3) == 0
    z = u(radius + 0.3, lz - radius - 0.3) if floating else radius
    return Sphere((x, y, z), radius, material=material, motion=motion)
