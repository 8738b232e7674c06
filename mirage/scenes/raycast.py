"""Ray casting against the room, boxes and spheres, in pure torch: first hit, surface id, colour.

Rays have a batch shape (…); vectors carry a trailing 3. Distances are ray parameters in units of the
direction's length (``inf`` through the window). :func:`first_hits` is the whole cast in two passes
(nearest surface per ray, then geometry and colour of each surface on the rays it owns); the small
functions above it are the per-primitive tests it is made of.
"""

from __future__ import annotations

import math
import torch

from mirage.scenes.elements import NUM_ROOM_FACES, SKY, WALLS, Box, Material, SceneLayout, Window
from mirage.scenes.outputs import RayHits
from mirage.scenes.shading import shade, sky_color

__all__ = ["pack_scene", "first_hits", "room_exit", "box_distance", "sphere_distance"]

_EPS = 1e-6
# Texture coordinates of a face perpendicular to axis a are the other two coordinates (walls: along, up).
_OTHER_AXES = ((1, 2), (0, 2), (0, 1))


def _safe(d: torch.Tensor) -> torch.Tensor:
    """Directions with no exactly-zero component, so slab divisions never give 0 * inf."""
    return d.masked_fill(d == 0, 1e-30)


def room_exit(o, d, bounds, window: Window | None):
    """Where rays from inside the room leave it: distance (…) and surface id (…); sky through the window."""
    d = _safe(d)
    per_axis = (torch.where(d > 0, bounds[1], bounds[0]) - o) / d
    distance, axis = per_axis.min(dim=-1)
    surface = 2 * axis + (torch.gather(d, -1, axis[..., None])[..., 0] > 0).long()
    if window is not None:
        wall = WALLS[window.wall]
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


def box_distance(o, d, center, rotation, half):
    """Distance along d to a box (rotation: local -> world (3, 3)); inf where missed."""
    q = (o - center) @ rotation                      # world -> box frame (row vectors)
    inv = 1.0 / _safe(d @ rotation)
    t1, t2 = (-half - q) * inv, (half - q) * inv
    near = torch.minimum(t1, t2).amax(dim=-1)
    far = torch.maximum(t1, t2).amin(dim=-1)
    distance = torch.where(near > _EPS, near, far)   # a ray starting inside sees the far wall
    return torch.where((near <= far) & (far > _EPS), distance, math.inf)


def sphere_distance(o, d, center, radius: float):
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


def pack_scene(scene: SceneLayout, device: torch.device) -> dict:
    """Scene constants as tensors on ``device``: per-object centre, rotation / half sizes or radius and a
    bounding radius for culling, dynamic flags by surface id + 1, room bounds, lights and sky colours."""
    objects = []
    for obj in scene.objects:
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
    flags = [False] * (1 + NUM_ROOM_FACES) + [obj.motion is not None for obj in scene.objects]
    return {
        "objects": objects,
        "is_dynamic": torch.tensor(flags, dtype=torch.bool, device=device),   # indexed by surface + 1
        "bounds": scene.bounds.to(device),
        "light": scene.light_direction.to(device),
        "lamp": torch.tensor([0.0, 0.0, scene.room_size[2] - 0.05], device=device),
        "sky": torch.tensor(scene.sky_colors, dtype=torch.float32, device=device),
    }


def first_hits(packed: dict, window: Window | None, materials: tuple[Material, ...], o: torch.Tensor,
               d: torch.Tensor, t: torch.Tensor, batch: torch.Size) -> RayHits:
    """First hits of rays ``o + s * d`` (s > 0) at times ``t``; o (…, 3), d (…, 3) and t (…) float32 broadcast
    to ``batch`` and are already checked (finite, non-zero directions, origins inside the room).

    packed: :func:`pack_scene` on the rays' device; materials: the six room faces', then each object's.
    """
    # Pass 1: distances only, nearest surface per ray. Objects are inside the room, so they win ties.
    distance, surface = room_exit(o, d, packed["bounds"], window)
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
            dist = box_distance(o_r, d_r, center, obj["rotation"], obj["half"])
        else:
            dist = sphere_distance(o_r, d_r, center, obj["radius"])
        closer = dist < distance[rays]
        distance[rays] = torch.where(closer, dist, distance[rays])
        surface[rays] = torch.where(closer, NUM_ROOM_FACES + index, surface[rays])
    # Pass 2: geometry and colour of each surface on the rays it owns.
    rgb = torch.empty_like(d_flat)
    sky_rays = (surface == SKY).nonzero()[:, 0]
    rgb[sky_rays] = sky_color(d_flat[sky_rays], packed["sky"])
    for index, material in enumerate(materials):
        rays = (surface == index).nonzero()[:, 0]
        if rays.numel() == 0:
            continue
        points = o_flat[rays] + distance[rays, None] * d_flat[rays]
        if index < NUM_ROOM_FACES:
            normal, st = _room_face_geometry(index, points)
        else:
            obj = packed["objects"][index - NUM_ROOM_FACES]
            center = _center_at(obj, t_flat[rays])
            if obj["is_box"]:
                normal, st = _box_geometry(points, center, obj["rotation"], obj["half"])
            else:
                normal, st = _sphere_geometry(points, center, obj["radius"])
        rgb[rays] = shade(material, index, st, normal, points, packed["light"], packed["lamp"])
    dynamic = packed["is_dynamic"][surface + 1]
    return RayHits(distance=distance.reshape(batch), rgb=rgb.clamp(0.0, 1.0).reshape(*batch, 3),
                   dynamic=dynamic.reshape(batch), surface=surface.reshape(batch))
