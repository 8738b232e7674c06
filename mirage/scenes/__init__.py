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

Layout: :mod:`~mirage.scenes.elements` (materials, motions, boxes, spheres, window),
:mod:`~mirage.scenes.scene` (:class:`Scene`: validation, rendering, cameras), :mod:`~mirage.scenes.raycast`
(first hits), :mod:`~mirage.scenes.shading` (surface and sky colour), :mod:`~mirage.scenes.trajectories`
(camera paths), :mod:`~mirage.scenes.placement` (random contents), :mod:`~mirage.scenes.outputs`
(:class:`Frame`, :class:`RayHits`).
"""

from mirage.scenes.elements import PATTERNS, SKY, Box, Material, Motion, Sphere, Window
from mirage.scenes.outputs import Frame, RayHits
from mirage.scenes.scene import Scene
from mirage.scenes.trajectories import TRAJECTORIES

__all__ = [
    "PATTERNS",
    "TRAJECTORIES",
    "SKY",
    "Material",
    "Motion",
    "Box",
    "Sphere",
    "Window",
    "Frame",
    "RayHits",
    "Scene",
]
