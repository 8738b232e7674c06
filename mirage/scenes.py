"""Procedural RGB-D scenes that mirage owns: textured rooms with boxes and spheres, ray cast analytically.

Tests, the demo, training data and benchmarks all draw their frames from here, so every frame comes with
exact depth, exact cameras and ground-truth dynamic masks.

World frame: metres, z up. The room spans ``[-Lx/2, Lx/2] x [-Ly/2, Ly/2] x [0, Lz]``. Objects stand in a
band of width ``clearance`` along the walls, and camera trajectories stay in the *free region*, the room
shrunk by that band, so cameras never enter an object or a wall. An optional window in one wall lets rays
escape to a sky: depth ``inf`` there, colour a function of the ray direction only.

Colour is a function of the surface point alone (procedural pattern + smooth noise + Lambert shading with
fixed lights), never of the viewing direction, so two views of a static point agree exactly up to
floating-point error. Textures of objects live in the object's own frame and move with it.

Camera conventions (OpenCV optical c2w, pixel centres at +0.5, z-depth) are those of :mod:`mirage.camera`.

Example::

    scene = Scene.random(seed=0, num_dynamic=2)
    poses = scene.trajectory("loop", 33)                       # (33, 4, 4) c2w
    K = scene.default_intrinsics(256, 448)                     # (3, 3)
    clip = scene.render_batch(K, poses, 256, 448, times=torch.arange(33) / 8.0)
    clip.rgb, clip.depth, clip.dynamic                         # (33, 3, H, W), (33, H, W), (33, H, W)
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
import torch

from mirage.camera import (
    backproject,
    intrinsics_from_fov,
    look_at,
    pixel_centers,
    validate_intrinsics,
    validate_pose,
)

__all__ = [
    "PATTERNS",
    "TRAJECTORIES",
    "Material",
    "Motion",
    "Box",
    "Sphere",
    "Window",
    "Frame",
    "RayHits",
    "Scene",
]

PATTERNS = ("plain", "checker", "stripes", "tiles", "dots")
TRAJECTORIES = ("forward", "turn", "orbit", "loop")
SKY = -1                     # surface id of rays that leave the room through the window
_NUM_ROOM_FACES = 6          # surface ids 0..5: x-, x+, y-, y+, floor (z-), ceiling (z+)
_NUM_WAVES = 4               # sinusoids per random material in the smooth colour noise
_EPS = 1e-6
_RAYS_PER_CHUNK = 1 << 20     # render_batch casts at most about this many rays at once
# Texture coordinates of a face perpendicular to axis a are the other two coordinates (walls: along, up).
_OTHER_AXES = ((1, 2), (0, 2), (0, 1))
_WALLS = {"x-": 0, "x+": 1, "y-": 2, "y+": 3}


# --------------------------------------------------------------------------------------------------
# Scene description (plain dataclasses; Scene packs them into tensors)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Material:
    """Procedural surface texture, evaluated at texture coordinates (s, t) in metres on the surface.

    ``pattern`` mixes ``base`` and ``accent``: "checker", "stripes" (accent on the first ``line`` of each
    cell), "tiles" (running-bond tiles with accent grout of width ``line``), "dots" (accent discs of radius
    ``line``) or "plain". ``scale`` is the cell size in metres, ``angle`` rotates the pattern (radians).
    ``cell_jitter`` varies the brightness per cell; ``noise`` adds smooth colour variation
    ``noise * tint * mean_k sin(2 pi (kx s + ky t) + phase)`` with ``waves = ((kx, ky, phase), ...)``.
    """

    base: tuple[float, float, float] = (0.7, 0.7, 0.7)
    accent: tuple[float, float, float] = (0.35, 0.35, 0.35)
    pattern: str = "plain"
    scale: float = 0.5
    angle: float = 0.0
    line: float = 0.1
    cell_jitter: float = 0.0
    noise: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    waves: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"Material.pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"Material.scale must be a positive number of metres, got {self.scale}")
        if not 0.0 <= self.line <= 1.0:
            raise ValueError(f"Material.line must be in [0, 1] (a fraction of a cell), got {self.line}")
        for name in ("base", "accent", "tint"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"Material.{name} must be 3 numbers (RGB), got {getattr(self, name)}")
        if any(len(w) != 3 for w in self.waves):
            raise ValueError(f"Material.waves must be (kx, ky, phase) triples, got {self.waves}")

    @classmethod
    def random(cls, generator: torch.Generator, patterns: Sequence[str] = PATTERNS) -> Material:
        """A random material; ``patterns`` restricts the pattern kinds drawn from."""
        u = _Uniform(generator)
        pattern = patterns[u.integer(len(patterns))]
        base = tuple(u(0.2, 0.9) for _ in range(3))
        # Accents differ from the base by a clearly visible amount so patterns are never invisible.
        accent = tuple(min(max(b + u.sign() * u(0.25, 0.5), 0.05), 0.95) for b in base)
        line = {"tiles": u(0.04, 0.12), "stripes": u(0.3, 0.6), "dots": u(0.15, 0.35)}.get(pattern, 0.1)
        waves = tuple(_random_wave(u) for _ in range(_NUM_WAVES))
        return cls(
            base=base, accent=accent, pattern=pattern, scale=u(0.2, 0.9), angle=u(-0.4, 0.4) * u.integer(2),
            line=line, cell_jitter=0.0 if pattern == "plain" else u(0.05, 0.25), noise=u(0.04, 0.15),
            tint=tuple(u(0.3, 1.0) for _ in range(3)), waves=waves,
        )


def _random_wave(u: _Uniform) -> tuple[float, float, float]:
    freq, direction = u(0.15, 2.0), u(0.0, 2.0 * math.pi)
    return (freq * math.cos(direction), freq * math.sin(direction), u(0.0, 2.0 * math.pi))


@dataclass(frozen=True)
class Motion:
    """Periodic motion of an object's centre about its rest centre, as a function of time in seconds.

    "linear": ``offset = vector * sin(2 pi t / period + phase)`` (back and forth, at most |vector|);
    "circular": ``offset = radius * (cos(w t + phase), sin(w t + phase), 0)`` with ``w = 2 pi / period``.
    """

    kind: str = "linear"
    vector: tuple[float, float, float] = (0.5, 0.0, 0.0)
    radius: float = 0.3
    period: float = 4.0
    phase: float = 0.0

    def __post_init__(self):
        if self.kind not in ("linear", "circular"):
            raise ValueError(f"Motion.kind must be 'linear' or 'circular', got {self.kind!r}")
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"Motion.period must be positive seconds, got {self.period}")
        if len(self.vector) != 3:
            raise ValueError(f"Motion.vector must be 3 numbers, got {self.vector}")

    @property
    def extent(self) -> float:
        """Largest distance of the centre from its rest position."""
        return math.hypot(*self.vector) if self.kind == "linear" else abs(self.radius)

    def offset(self, times: torch.Tensor) -> torch.Tensor:
        """(*times.shape, 3) displacement from the rest centre at ``times`` seconds."""
        angle = (2.0 * math.pi / self.period) * times + self.phase
        if self.kind == "linear":
            return torch.sin(angle)[..., None] * torch.tensor(self.vector, dtype=times.dtype, device=times.device)
        zero = torch.zeros_like(angle)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle), zero], dim=-1)


@dataclass(frozen=True)
class Box:
    """Box with half extents ``half_size`` about ``center``, rotated by ``yaw`` (radians) about world z."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw: float = 0.0
    material: Material = field(default_factory=Material)
    motion: Motion | None = None

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.half_size[0], self.half_size[1])


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    material: Material = field(default_factory=Material)
    motion: Motion | None = None

    @property
    def footprint_radius(self) -> float:
        return self.radius


@dataclass(frozen=True)
class Window:
    """Opening in wall ``wall`` ("x-", "x+", "y-", "y+"): ``u`` spans the wall's horizontal coordinate
    (y for x-walls, x for y-walls) and ``z`` the height, both (low, high) in metres."""

    wall: str
    u: tuple[float, float]
    z: tuple[float, float]

    def __post_init__(self):
        if self.wall not in _WALLS:
            raise ValueError(f"Window.wall must be one of {tuple(_WALLS)}, got {self.wall!r}")
        if not (self.u[0] < self.u[1] and self.z[0] < self.z[1]):
            raise ValueError(f"Window ranges must be (low, high) with low < high, got u={self.u} z={self.z}")


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------
@dataclass
class Frame:
    """One rendered view; :meth:`Scene.render_batch` returns the same fields with a leading T.

    rgb (3, H, W) float32 in [0, 1]; depth (H, W) float32 z-depth in metres, ``inf`` on sky;
    dynamic (H, W) bool, True where the first hit is a moving object; intrinsics (3, 3) at (H, W);
    cam_to_world (4, 4).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    dynamic: torch.Tensor
    intrinsics: torch.Tensor
    cam_to_world: torch.Tensor

    def __len__(self) -> int:
        if self.rgb.ndim != 4:
            raise TypeError("len() of a single Frame; only batched frames (leading T) have a length")
        return self.rgb.shape[0]

    def __getitem__(self, index) -> Frame:
        """Index or slice the leading T of a batched frame."""
        if self.rgb.ndim != 4:
            raise TypeError("only batched frames (leading T) can be indexed")
        return Frame(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def to(self, device) -> Frame:
        return Frame(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def sky(self) -> torch.Tensor:
        """(…, H, W) bool: rays that hit nothing (depth inf)."""
        return torch.isinf(self.depth)


@dataclass
class RayHits:
    """First hits of a bundle of rays (…) from :meth:`Scene.cast_rays`.

    distance (…): ray parameter of the hit in units of the direction's length (inf on sky);
    rgb (…, 3) in [0, 1]; dynamic (…) bool; surface (…) long: -1 sky, 0..5 room faces
    (x-, x+, y-, y+, floor, ceiling), 6 + k object k of :attr:`Scene.objects`.
    """

    distance: torch.Tensor
    rgb: torch.Tensor
    dynamic: torch.Tensor
    surface: torch.Tensor


# --------------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------------
class Scene:
    """An axis-aligned room with textured walls, objects and an optional window.

    Args:
        room_size: (Lx, Ly, Lz) metres.
        surfaces: six materials for x-, x+, y-, y+ walls, floor, ceiling.
        objects: boxes and spheres; those with a ``motion`` are dynamic.
        window: optional opening to the sky.
        clearance: width of the band along the walls kept for objects; cameras stay out of it.
        light_direction: direction towards the directional light (world frame, any length).
        sky: (horizon, zenith) RGB colours of the sky gradient.
        seed: seeds the random choices of :meth:`trajectory`.
    """

    def __init__(
        self,
        room_size: Sequence[float] = (8.0, 6.0, 3.0),
        surfaces: Sequence[Material] | None = None,
        objects: Sequence[Box | Sphere] = (),
        window: Window | None = None,
        clearance: float = 1.5,
        light_direction: Sequence[float] = (0.35, 0.25, 1.0),
        sky: tuple[Sequence[float], Sequence[float]] = ((0.85, 0.9, 0.95), (0.35, 0.55, 0.9)),
        seed: int = 0,
    ):
        room = tuple(float(x) for x in room_size)
        if len(room) != 3 or not all(math.isfinite(x) and x > 0 for x in room):
            raise ValueError(f"room_size must be three positive metres (Lx, Ly, Lz), got {room_size}")
        if not 0.0 <= clearance < min(room[0], room[1]) / 2.0:
            raise ValueError(f"clearance {clearance} leaves no free region in a {room[0]} x {room[1]} room")
        surfaces = tuple(surfaces) if surfaces is not None else (Material(),) * _NUM_ROOM_FACES
        if len(surfaces) != _NUM_ROOM_FACES:
            raise ValueError(f"surfaces must hold {_NUM_ROOM_FACES} materials (x-, x+, y-, y+, floor, ceiling)")
        for obj in objects:
            if not isinstance(obj, (Box, Sphere)):
                raise ValueError(f"objects must be Box or Sphere, got {type(obj).__name__}")
            if isinstance(obj, Sphere) and not obj.radius > 0:
                raise ValueError(f"Sphere.radius must be positive, got {obj.radius}")
            if isinstance(obj, Box) and not all(h > 0 for h in obj.half_size):
                raise ValueError(f"Box.half_size must be positive, got {obj.half_size}")
        light = torch.tensor([float(x) for x in light_direction], dtype=torch.float32)
        if light.shape != (3,) or not torch.isfinite(light).all() or light.norm() < 1e-9:
            raise ValueError(f"light_direction must be a non-zero 3-vector, got {light_direction}")
        self.room_size = room
        self.surfaces = surfaces
        self.objects = tuple(objects)
        self.window = window
        self.clearance = float(clearance)
        self.light_direction = light / light.norm()
        self.sky_colors = (tuple(float(x) for x in sky[0]), tuple(float(x) for x in sky[1]))
        self.seed = int(seed)
        self._device_cache: dict[str, dict] = {}

    # ---------------------------------------------------------------------------------------- build
    @classmethod
    def random(
        cls,
        seed: int,
        num_objects: int = 6,
        num_dynamic: int = 0,
        room_size: Sequence[float] | None = None,
        window: bool = True,
        clearance: float = 1.5,
        num_paintings: int = 3,
    ) -> Scene:
        """A random room (deterministic in ``seed``): textured surfaces, ``num_objects`` boxes and spheres
        along the walls, the first ``num_dynamic`` of them moving, ``num_paintings`` flat static panels hung
        on the walls (appended to :attr:`objects` after the others), and (``window``) an opening to the sky."""
        if num_objects < 0 or not 0 <= num_dynamic <= num_objects:
            raise ValueError(f"need 0 <= num_dynamic <= num_objects, got {num_dynamic} and {num_objects}")
        if num_paintings < 0:
            raise ValueError(f"num_paintings must be >= 0, got {num_paintings}")
        generator = torch.Generator().manual_seed(int(seed))
        u = _Uniform(generator)
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
        return cls((lx, ly, lz), surfaces, objects, opening, clearance, light, seed=seed)

    # ---------------------------------------------------------------------------------------- geometry
    @property
    def bounds(self) -> torch.Tensor:
        """(2, 3) float32: room min and max corners."""
        lx, ly, lz = self.room_size
        return torch.tensor([[-lx / 2, -ly / 2, 0.0], [lx / 2, ly / 2, lz]])

    @property
    def free_region(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) of the floor area kept free of objects; trajectories stay in it."""
        hx, hy = self.room_size[0] / 2 - self.clearance, self.room_size[1] / 2 - self.clearance
        return (-hx, -hy, hx, hy)

    @property
    def dynamic_objects(self) -> tuple[int, ...]:
        """Indices into :attr:`objects` of the moving ones."""
        return tuple(i for i, o in enumerate(self.objects) if o.motion is not None)

    def object_center(self, index: int, time: float | torch.Tensor = 0.0) -> torch.Tensor:
        """(…, 3) float32 centre of object ``index`` at ``time`` (seconds, any shape)."""
        if not -len(self.objects) <= index < len(self.objects):
            raise ValueError(f"object index {index} out of range for {len(self.objects)} objects")
        obj = self.objects[index]
        times = torch.as_tensor(time, dtype=torch.float32)
        center = torch.tensor(obj.center, dtype=torch.float32).expand(*times.shape, 3)
        return center + obj.motion.offset(times) if obj.motion is not None else center.clone()

    def default_intrinsics(self, height: int, width: int, fov_x_deg: float = 75.0) -> torch.Tensor:
        """(3, 3) centred pinhole at (height, width) with horizontal field of view ``fov_x_deg``."""
        _check_size(height, width)
        return intrinsics_from_fov(fov_x_deg, int(height), int(width))

    # ---------------------------------------------------------------------------------------- render
    def render(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
               time: float = 0.0) -> Frame:
        """Render one view. intrinsics (3, 3) at (height, width); cam_to_world (4, 4) with its centre inside
        the room; time in seconds. Runs on the device of ``cam_to_world``."""
        if not isinstance(cam_to_world, torch.Tensor) or cam_to_world.shape != (4, 4):
            raise ValueError(f"cam_to_world must be a (4, 4) tensor, got {_shape(cam_to_world)}")
        if not isinstance(intrinsics, torch.Tensor) or intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be a (3, 3) tensor, got {_shape(intrinsics)}")
        if not math.isfinite(float(time)):
            raise ValueError(f"time must be finite, got {time}")
        return self.render_batch(intrinsics, cam_to_world[None], height, width, times=[float(time)])[0]

    def render_batch(self, intrinsics: torch.Tensor, cam_to_world: torch.Tensor, height: int, width: int,
                     times: Sequence[float] | torch.Tensor | None = None) -> Frame:
        """Render T views at once. intrinsics (3, 3) or (T, 3, 3) at (height, width); cam_to_world (T, 4, 4);
        times (T,) seconds (default all 0). Returns a Frame whose fields have a leading T."""
        _check_size(height, width)
        validate_pose(cam_to_world, "cam_to_world")
        if cam_to_world.ndim != 3:
            raise ValueError(f"cam_to_world must have shape (T, 4, 4), got {tuple(cam_to_world.shape)}")
        validate_intrinsics(intrinsics, "intrinsics")
        num = cam_to_world.shape[0]
        if intrinsics.ndim == 2:
            intrinsics = intrinsics.expand(num, 3, 3)
        elif intrinsics.ndim != 3 or intrinsics.shape[0] != num:
            raise ValueError(f"intrinsics must be (3, 3) or ({num}, 3, 3), got {tuple(intrinsics.shape)}")
        device = cam_to_world.device
        times_t = self._times(times, num, device)
        c2w = cam_to_world.to(device=device, dtype=torch.float32)
        K = intrinsics.to(device=device, dtype=torch.float32)
        origins = c2w[:, :3, 3]
        self._check_inside(origins)
        H, W = int(height), int(width)
        uv = pixel_centers(H, W, device=device).reshape(1, H * W, 2)
        rgb, depth, dynamic = [], [], []
        # Views go through in groups of about _RAYS_PER_CHUNK rays to bound peak memory on long clips.
        per_chunk = max(1, _RAYS_PER_CHUNK // (H * W))
        for first in range(0, num, per_chunk):
            views = slice(first, min(first + per_chunk, num))
            count = views.stop - views.start
            # Directions through each pixel with unit camera-z component, so the hit parameter is z-depth.
            ones = torch.ones(count, H * W, device=device)
            directions = backproject(uv.expand(count, H * W, 2), ones, K[views], c2w[views]) - origins[views, None]
            hits = self.cast_rays(origins[views, None], directions, times_t[views, None])
            rgb.append(hits.rgb.reshape(count, H, W, 3).permute(0, 3, 1, 2))
            depth.append(hits.distance.reshape(count, H, W))
            dynamic.append(hits.dynamic.reshape(count, H, W))
        return Frame(rgb=torch.cat(rgb).contiguous(), depth=torch.cat(depth), dynamic=torch.cat(dynamic),
                     intrinsics=K.clone(), cam_to_world=c2w.clone())

    def cast_rays(self, origins: torch.Tensor, directions: torch.Tensor,
                  times: float | torch.Tensor = 0.0) -> RayHits:
        """First hits of rays ``origins + s * directions`` (s > 0) from inside the room.

        origins (…, 3) and directions (…, 3) broadcast together (directions need not be unit); times
        (seconds) broadcasts to the batch shape (…). Everything runs on ``directions.device`` in float32.
        """
        for name, value in (("origins", origins), ("directions", directions)):
            if not isinstance(value, torch.Tensor) or value.ndim < 1 or value.shape[-1] != 3:
                raise ValueError(f"{name} must be a (..., 3) tensor, got {_shape(value)}")
        device = directions.device
        o = origins.to(device=device, dtype=torch.float32)
        d = directions.to(device=device, dtype=torch.float32)
        t = torch.as_tensor(times, dtype=torch.float32).to(device)
        try:
            # numpy's rule is the same and, unlike torch.broadcast_shapes, does not import sympy on first use.
            batch = torch.Size(np.broadcast_shapes(o.shape[:-1], d.shape[:-1], t.shape))
        except ValueError as error:
            raise ValueError(f"origins {tuple(o.shape)}, directions {tuple(d.shape)} and times {tuple(t.shape)} "
                             f"do not broadcast: {error}") from None
        if not (torch.isfinite(o).all() and torch.isfinite(d).all() and torch.isfinite(t).all()):
            raise ValueError("origins, directions and times must be finite")
        if ((d * d).sum(-1) == 0).any():
            raise ValueError("directions must be non-zero")
        self._check_inside(o.reshape(-1, 3), "ray origin")
        packed = self._packed(device)
        # Pass 1: distances only, nearest surface per ray. Objects are inside the room, so they win ties.
        distance, surface = _room_exit(o, d, packed["bounds"], self.window)
        distance, surface = distance.expand(batch).reshape(-1), surface.expand(batch).reshape(-1).clone()
        o_flat, d_flat = o.expand(*batch, 3).reshape(-1, 3), d.expand(*batch, 3).reshape(-1, 3)
        t_flat = t.expand(batch).reshape(-1)
        d_norm2 = (d * d).sum(-1)
        for index, obj in enumerate(packed["objects"]):
            # Cheap cull on the broadcast (un-flattened) rays: keep those passing within the bounding radius.
            q = o - _center_at(obj, t)
            along = (q * d).sum(-1)
            miss2 = (q * q).sum(-1) - along * along / d_norm2
            rays = (miss2 <= obj["bound"] ** 2).expand(batch).reshape(-1).nonzero()[:, 0]
            if rays.numel() == 0:
                continue
            o_r, d_r, center = o_flat[rays], d_flat[rays], _center_at(obj, t_flat[rays])
            if obj["is_box"]:
                dist = _box_distance(o_r, d_r, center, obj["rotation"], obj["half"])
            else:
                dist = _sphere_distance(o_r, d_r, center, obj["radius"])
            closer = dist < distance[rays]
            distance[rays] = torch.where(closer, dist, distance[rays])
            surface[rays] = torch.where(closer, _NUM_ROOM_FACES + index, surface[rays])
        # Pass 2: geometry and colour of each surface on the rays it owns.
        rgb = torch.empty_like(d_flat)
        sky_rays = (surface == SKY).nonzero()[:, 0]
        rgb[sky_rays] = _sky_color(d_flat[sky_rays], packed["sky"])
        materials = self.surfaces + tuple(obj.material for obj in self.objects)
        for index, material in enumerate(materials):
            rays = (surface == index).nonzero()[:, 0]
            if rays.numel() == 0:
                continue
            points = o_flat[rays] + distance[rays, None] * d_flat[rays]
            if index < _NUM_ROOM_FACES:
                normal, st = _room_face_geometry(index, points)
            else:
                obj = packed["objects"][index - _NUM_ROOM_FACES]
                center = _center_at(obj, t_flat[rays])
                if obj["is_box"]:
                    normal, st = _box_geometry(points, center, obj["rotation"], obj["half"])
                else:
                    normal, st = _sphere_geometry(points, center, obj["radius"])
            rgb[rays] = _shade(material, index, st, normal, points, packed["light"], packed["lamp"])
        dynamic = packed["is_dynamic"][surface + 1]
        return RayHits(distance=distance.reshape(batch), rgb=rgb.clamp(0.0, 1.0).reshape(*batch, 3),
                       dynamic=dynamic.reshape(batch), surface=surface.reshape(batch))

    # ---------------------------------------------------------------------------------------- cameras
    def trajectory(self, kind: str, num_frames: int, **kw) -> torch.Tensor:
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
            outward = self.trajectory(path, (num_frames - 1) // 2 + 1, **kw)
            index = torch.tensor([min(i, num_frames - 1 - i) for i in range(num_frames)])
            return outward[index].clone()
        builder = {"forward": self._forward, "turn": self._turn, "orbit": self._orbit}[kind]
        accepted = set(inspect.signature(builder).parameters) - {"num_frames"}
        unknown = sorted(set(kw) - accepted)
        if unknown:
            raise ValueError(f"unknown keyword(s) {unknown} for trajectory {kind!r}; accepted: {sorted(accepted)}")
        return builder(num_frames, **kw)

    def _forward(self, num_frames, speed=0.05, yaw_deg=None, start=None, sway_deg=0.0, height=1.5,
                 pitch_deg=0.0, seed=0):
        u = self._trajectory_rng(seed, 1)
        _check_positive(speed=speed)
        yaw = math.radians(yaw_deg) if yaw_deg is not None else u(0.0, 2.0 * math.pi)
        direction = (math.cos(yaw), math.sin(yaw))
        x0, y0, x1, y1 = self.free_region
        if start is not None:
            start = tuple(float(p) for p in start)
            if len(start) != 2 or not (x0 <= start[0] <= x1 and y0 <= start[1] <= y1):
                raise ValueError(f"start {start} must be (x, y) inside the free region {self.free_region}")
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
        return self._poses(xy, [yaw + w for w in sway], height, pitch_deg)

    def _turn(self, num_frames, turn_rate=3.0, position=None, yaw_deg=None, height=1.5, pitch_deg=0.0, seed=0):
        u = self._trajectory_rng(seed, 2)
        yaw0 = math.radians(yaw_deg) if yaw_deg is not None else u(0.0, 2.0 * math.pi)
        x0, y0, x1, y1 = self.free_region
        position = ((x0 + x1) / 2, (y0 + y1) / 2) if position is None else tuple(float(p) for p in position)
        if len(position) != 2 or not (x0 <= position[0] <= x1 and y0 <= position[1] <= y1):
            raise ValueError(f"position {position} must be (x, y) inside the free region {self.free_region}")
        yaws = [yaw0 + math.radians(turn_rate) * i for i in range(num_frames)]
        return self._poses([position] * num_frames, yaws, height, pitch_deg)

    def _orbit(self, num_frames, radius=None, speed=0.05, look="inward", angle_deg=None, height=1.5,
               pitch_deg=0.0, seed=0):
        u = self._trajectory_rng(seed, 3)
        x0, y0, x1, y1 = self.free_region
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
        return self._poses(xy, yaws, height, pitch_deg)

    def _poses(self, xy, yaws, height, pitch_deg) -> torch.Tensor:
        lz = self.room_size[2]
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

    def _trajectory_rng(self, seed: int, salt: int) -> _Uniform:
        return _Uniform(torch.Generator().manual_seed((self.seed * 1_000_003 + int(seed) * 101 + salt) % 2**63))

    # ---------------------------------------------------------------------------------------- internals
    def _times(self, times, num: int, device) -> torch.Tensor:
        if times is None:
            return torch.zeros(num, device=device)
        times_t = torch.as_tensor(times, dtype=torch.float32).to(device).reshape(-1)
        if times_t.shape[0] != num:
            raise ValueError(f"times must hold one value per view ({num}), got {times_t.shape[0]}")
        if not torch.isfinite(times_t).all():
            raise ValueError("times must be finite")
        return times_t

    def _check_inside(self, origins: torch.Tensor, what: str = "camera") -> None:
        bounds = self.bounds.to(origins.device)
        inside = ((origins > bounds[0] + 1e-4) & (origins < bounds[1] - 1e-4)).all(dim=-1)
        if not inside.all():
            bad = int((~inside).nonzero()[0, 0])
            raise ValueError(f"{what} {bad} at {origins[bad].tolist()} is outside the room {self.bounds.tolist()}")

    def _packed(self, device: torch.device) -> dict:
        """Scene constants as tensors on ``device`` (built once per device)."""
        key = str(device)
        if key not in self._device_cache:
            objects = []
            for obj in self.objects:
                # Bounding radius of the object about its (moving) centre, for ray culling.
                bound = math.sqrt(sum(h * h for h in obj.half_size)) if isinstance(obj, Box) else obj.radius
                entry = {"is_box": isinstance(obj, Box), "motion": obj.motion, "bound": bound * 1.001 + 1e-4,
                         "center": torch.tensor(obj.center, dtype=torch.float32, device=device)}
                if isinstance(obj, Box):
                    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
                    entry["rotation"] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], device=device)
                    entry["half"] = torch.tensor(obj.half_size, dtype=torch.float32, device=device)
                else:
                    entry["radius"] = float(obj.radius)
                objects.append(entry)
            flags = [False] * (1 + _NUM_ROOM_FACES) + [obj.motion is not None for obj in self.objects]
            self._device_cache[key] = {
                "objects": objects,
                "is_dynamic": torch.tensor(flags, dtype=torch.bool, device=device),   # indexed by surface + 1
                "bounds": self.bounds.to(device),
                "light": self.light_direction.to(device),
                "lamp": torch.tensor([0.0, 0.0, self.room_size[2] - 0.05], device=device),
                "sky": torch.tensor(self.sky_colors, dtype=torch.float32, device=device),
            }
        return self._device_cache[key]

    def __repr__(self) -> str:
        return (f"Scene(room_size={tuple(round(x, 2) for x in self.room_size)}, objects={len(self.objects)}, "
                f"dynamic={len(self.dynamic_objects)}, window={self.window is not None}, seed={self.seed})")


# --------------------------------------------------------------------------------------------------
# Random placement
# --------------------------------------------------------------------------------------------------
class _Uniform:
    """Draws from a torch.Generator (never the global RNG) as python floats."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def integer(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.generator))

    def sign(self) -> float:
        return 1.0 if self.integer(2) else -1.0


def _random_painting(u: _Uniform, generator: torch.Generator, room, window: Window | None) -> Box | None:
    """A thin textured panel flat against a wall, clear of the window (landmarks for memory tests)."""
    lx, ly, lz = room
    for attempt in range(20):
        wall = u.integer(4)
        length = ly if wall < 2 else lx
        width, height = u(0.4, min(1.4, length / 3)), u(0.4, min(1.0, lz / 3))
        along = u(-length / 2 + width / 2 + 0.1, length / 2 - width / 2 - 0.1)
        bottom = u(0.6, lz - height - 0.3)
        clear = (window is None or _WALLS[window.wall] != wall or along + width / 2 < window.u[0]
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


def _random_object(u: _Uniform, generator: torch.Generator, room, clearance: float, dynamic: bool,
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


# --------------------------------------------------------------------------------------------------
# Ray casting (pure torch). Rays have a batch shape (…); vectors carry a trailing 3.
# --------------------------------------------------------------------------------------------------
def _safe(d: torch.Tensor) -> torch.Tensor:
    """Directions with no exactly-zero component, so slab divisions never give 0 * inf."""
    return d.masked_fill(d == 0, 1e-30)


def _room_exit(o, d, bounds, window: Window | None):
    """Where rays from inside the room leave it: distance (…) and surface id (…); sky through the window."""
    d = _safe(d)
    per_axis = (torch.where(d > 0, bounds[1], bounds[0]) - o) / d
    distance, axis = per_axis.min(dim=-1)
    surface = 2 * axis + (torch.gather(d, -1, axis[..., None])[..., 0] > 0).long()
    if window is not None:
        wall = _WALLS[window.wall]
        points = o + distance[..., None] * d
        along = points[..., 1] if wall < 2 else points[..., 0]
        opening = ((surface == wall) & (along > window.u[0]) & (along < window.u[1])
                   & (points[..., 2] > window.z[0]) & (points[..., 2] < window.z[1]))
        distance = torch.where(opening, math.inf, distance)
        surface = torch.where(opening, SKY, surface)
    return distance, surface


def _center_at(obj: dict, times: torch.Tensor) -> torch.Tensor:
    """(*times.shape, 3) centre of a packed object at ``times`` seconds."""
    if obj["motion"] is None:
        return obj["center"].expand(*times.shape, 3)
    return obj["center"] + obj["motion"].offset(times)


def _box_distance(o, d, center, rotation, half):
    """Distance along d to a box (rotation: local -> world (3, 3)); inf where missed."""
    q = (o - center) @ rotation                      # world -> box frame (row vectors)
    inv = 1.0 / _safe(d @ rotation)
    t1, t2 = (-half - q) * inv, (half - q) * inv
    near = torch.minimum(t1, t2).amax(dim=-1)
    far = torch.maximum(t1, t2).amin(dim=-1)
    distance = torch.where(near > _EPS, near, far)   # a ray starting inside sees the far wall
    return torch.where((near <= far) & (far > _EPS), distance, math.inf)


def _sphere_distance(o, d, center, radius: float):
    q = o - center
    a = (d * d).sum(-1)
    b = (q * d).sum(-1)
    c = (q * q).sum(-1) - radius * radius
    disc = b * b - a * c
    root = torch.sqrt(disc.clamp(min=0.0))
    near, far = (-b - root) / a, (-b + root) / a
    distance = torch.where(near > _EPS, near, far)
    return torch.where((disc >= 0) & (distance > _EPS), distance, math.inf)


def _face_coords(points: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """(N, 2) texture coordinates on faces perpendicular to ``axis`` (N,): the other two coordinates."""
    table = torch.tensor(_OTHER_AXES, device=points.device)[axis]
    return torch.gather(points, -1, table)


def _room_face_geometry(face: int, points):
    """Inward normal and (along, up) / (x, y) texture coordinates of room face ``face`` at points (N, 3)."""
    axis = face // 2
    normal = torch.zeros_like(points)
    normal[:, axis] = 1.0 if face % 2 == 0 else -1.0
    return normal, points[:, list(_OTHER_AXES[axis])]


def _box_geometry(points, center, rotation, half):
    """Outward normal and face texture coordinates (metres from the face's corner, box frame)."""
    local = (points - center) @ rotation
    axis = (local.abs() / half).argmax(dim=-1)
    sign = torch.sign(torch.gather(local, -1, axis[:, None]))
    normal = torch.nn.functional.one_hot(axis, 3).to(points.dtype) * sign
    return normal @ rotation.T, _face_coords(local + half, axis)


def _sphere_geometry(points, center, radius: float):
    """Outward normal and radius * (longitude, latitude) texture coordinates (sphere frame)."""
    normal = (points - center) / radius
    lon = torch.atan2(normal[:, 1], normal[:, 0])
    lat = torch.asin(normal[:, 2].clamp(-1.0, 1.0))
    return normal, torch.stack([radius * lon, radius * lat], dim=-1)


# --------------------------------------------------------------------------------------------------
# Shading (depends on the surface point only, never on the view)
# --------------------------------------------------------------------------------------------------
def _cell_hash(i: torch.Tensor, j: torch.Tensor, salt: int) -> torch.Tensor:
    """Pseudo-random value in [0, 1) per integer cell, a pure function of (i, j, salt)."""
    x = torch.sin(i * 12.9898 + j * 78.233 + salt * 37.719) * 43758.5453
    return x - torch.floor(x)


def _shade(m: Material, salt: int, st, normal, points, light_direction, lamp):
    """Colour (N, 3) of material ``m`` at texture coordinates st (N, 2), normals and points (N, 3)."""
    s, t = st.unbind(-1)
    u, v = s / m.scale, t / m.scale
    if m.angle:
        c, n = math.cos(m.angle), math.sin(m.angle)
        u, v = c * u + n * v, -n * u + c * v
    if m.pattern == "tiles":
        v_cell = torch.floor(v)
        u = u + 0.5 * torch.remainder(v_cell, 2.0)   # running bond: odd rows shift by half a tile
    i, j = torch.floor(u), torch.floor(v)
    fu, fv = u - i, v - j
    if m.pattern == "checker":
        mix = torch.remainder(i + j, 2.0)
    elif m.pattern == "stripes":
        mix = (fu < m.line).float()
    elif m.pattern == "tiles":
        mix = ((fu < m.line) | (fv < m.line)).float()
    elif m.pattern == "dots":
        mix = ((fu - 0.5) ** 2 + (fv - 0.5) ** 2 < m.line ** 2).float()
    else:
        mix = torch.zeros_like(u)
    base = torch.tensor(m.base, device=points.device)
    accent = torch.tensor(m.accent, device=points.device)
    color = base + (accent - base) * mix[:, None]
    if m.cell_jitter:
        color = color * (1.0 + m.cell_jitter * (_cell_hash(i, j, salt) - 0.5))[:, None]
    if m.noise and m.waves:
        wave_sum = sum(torch.sin(2 * math.pi * (kx * s + ky * t) + phase) for kx, ky, phase in m.waves)
        color = color + (m.noise / len(m.waves)) * wave_sum[:, None] * torch.tensor(m.tint, device=points.device)
    to_lamp = lamp - points
    lamp_distance2 = (to_lamp * to_lamp).sum(-1).clamp(min=1e-6)
    lamp_cosine = ((normal * to_lamp).sum(-1) * lamp_distance2.rsqrt()).clamp(min=0.0)
    sun_cosine = (normal @ light_direction).clamp(min=0.0)
    shade = 0.5 + 0.25 * sun_cosine + 0.6 * lamp_cosine / (1.0 + 0.08 * lamp_distance2)
    return color * shade[:, None]


def _sky_color(d: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Sky colour as a function of the ray direction only (points at infinity look the same from anywhere)."""
    unit = d / d.norm(dim=-1, keepdim=True)
    height = unit[..., 2].clamp(0.0, 1.0).sqrt()
    clouds = 0.06 * torch.sin(9.0 * unit[..., 0]) * torch.sin(7.0 * unit[..., 1] + 3.0 * unit[..., 2])
    return torch.lerp(sky[0], sky[1], height[..., None]) + clouds[..., None]


def _check_size(height, width) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
