"""The scene: an axis-aligned room with textured walls, boxes, spheres and an optional window to the sky.

:class:`Scene` validates and holds the description (:mod:`~mirage.scenes.elements`), renders views
(:meth:`Scene.render_batch`, through :mod:`~mirage.scenes.raycast`), and builds camera paths
(:meth:`Scene.trajectory`, :mod:`~mirage.scenes.trajectories`); :meth:`Scene.random` draws a room
(:mod:`~mirage.scenes.placement`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from mirage.camera import backproject, batch_intrinsics, intrinsics_from_fov, pixel_centers, validate_pose
from mirage.scenes.elements import NUM_ROOM_FACES, Box, Material, Sphere, Window
from mirage.scenes.outputs import Frame, RayHits
from mirage.scenes.placement import random_contents
from mirage.scenes.raycast import first_hits, pack_scene
from mirage.scenes.trajectories import camera_path

__all__ = ["Scene"]

_RAYS_PER_CHUNK = 1 << 20     # render_batch casts at most about this many rays at once


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
        surfaces = tuple(surfaces) if surfaces is not None else (Material(),) * NUM_ROOM_FACES
        if len(surfaces) != NUM_ROOM_FACES:
            raise ValueError(f"surfaces must hold {NUM_ROOM_FACES} materials (x-, x+, y-, y+, floor, ceiling)")
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
        return cls(**random_contents(seed, num_objects=num_objects, num_dynamic=num_dynamic, room_size=room_size,
                                     window=window, clearance=clearance, num_paintings=num_paintings))

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
        num = cam_to_world.shape[0]
        intrinsics = batch_intrinsics(intrinsics, num, "intrinsics")
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
        materials = self.surfaces + tuple(obj.material for obj in self.objects)
        return first_hits(self._packed(device), self.window, materials, o, d, t, batch)

    # ---------------------------------------------------------------------------------------- cameras
    def trajectory(self, kind: str, num_frames: int, **kw) -> torch.Tensor:
        """Camera path (num_frames, 4, 4) c2w float32 inside the free region, collision-free; ``kind`` and the
        keywords are documented at :func:`mirage.scenes.trajectories.camera_path`."""
        return camera_path(self, kind, num_frames, **kw)

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
            self._device_cache[key] = pack_scene(self, device)
        return self._device_cache[key]

    def __repr__(self) -> str:
        return (f"Scene(room_size={tuple(round(x, 2) for x in self.room_size)}, objects={len(self.objects)}, "
                f"dynamic={len(self.dynamic_objects)}, window={self.window is not None}, seed={self.seed})")


def _check_size(height, width) -> None:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
