"""A synthetic RGB-D camera on a robot body moving through a :mod:`mirage.scenes` scene (no ROS).

Shared by the synthetic camera node, the bag writer and the demo, so all three see the very same
frames: the scene renders along a trajectory; each frame carries the sensor arrays exactly as they go on
the wire (rgb8, depth as 16UC1 millimetres or 32FC1 metres), the intrinsics and the transforms
world -> body (moving) and body -> camera optical frame (static, REP 103 axes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mirage.camera import invert_pose
from mirage.media import to_uint8

__all__ = ["RigConfig", "RigFrame", "SyntheticRig", "BODY_TO_OPTICAL", "encode_depth"]

# Camera optical frame (x right, y down, z forward) expressed in a REP 103 body frame (x forward, y left, z up),
# mounted 0.1 m ahead of and 0.2 m above the body origin.
BODY_TO_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.1],
     [-1.0, 0.0, 0.0, 0.0],
     [0.0, -1.0, 0.0, 0.2],
     [0.0, 0.0, 0.0, 1.0]]
)


def encode_depth(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    """Metres (non-finite / <= 0 invalid) -> the wire array: uint16 millimetres (0 invalid) or float32 metres."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if encoding == "32FC1":
        return np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, np.float32("nan")).astype(np.float32)
    if encoding == "16UC1":
        mm = np.round(np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0)
        return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)
    raise ValueError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")


@dataclass(frozen=True)
class RigConfig:
    scene_seed: int = 0
    num_objects: int = 6
    height: int = 120
    width: int = 160
    trajectory: str = "orbit"      # a Scene.trajectory kind: forward, turn, orbit, loop
    num_frames: int = 40           # frames in one pass of the trajectory (then it repeats)
    depth_encoding: str = "16UC1"  # 16UC1 (mm) | 32FC1 (m)
    world_frame: str = "odom"
    body_frame: str = "base_link"  # empty: publish world -> camera directly
    camera_frame: str = "camera_color_optical_frame"


@dataclass
class RigFrame:
    index: int
    rgb: np.ndarray            # (H, W, 3) uint8
    depth: np.ndarray          # (H, W) uint16 mm or float32 m, as on the wire
    intrinsics: torch.Tensor   # (3, 3) mirage convention (pixel centres at +0.5)
    cam_to_world: np.ndarray   # (4, 4) camera optical frame in the world frame
    world_to_body: np.ndarray  # (4, 4) pose of the body frame in the world frame (the /tf transform)


class SyntheticRig:
    """Renders (and caches) one pass of a trajectory through a random scene; ``frame(i)`` wraps around."""

    def __init__(self, config: RigConfig = RigConfig()):
        from mirage.scenes import Scene  # imported here: the rig is optional for the node

        if config.height <= 0 or config.width <= 0:
            raise ValueError(f"image size must be positive, got {config.height}x{config.width}")
        if config.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {config.num_frames}")
        encode_depth(np.zeros((1, 1)), config.depth_encoding)  # validates the encoding
        self.config = config
        self.scene = Scene.random(seed=config.scene_seed, num_objects=config.num_objects)
        self.intrinsics = self.scene.default_intrinsics(config.height, config.width)
        self.trajectory = self.scene.trajectory(config.trajectory, config.num_frames).float()  # (T, 4, 4)
        self._cache: dict[int, RigFrame] = {}

    def __len__(self) -> int:
        return self.config.num_frames

    def body_to_camera(self) -> np.ndarray:
        return BODY_TO_OPTICAL.copy() if self.config.body_frame else np.eye(4)

    def frame(self, index: int) -> RigFrame:
        i = int(index) % self.config.num_frames
        if i not in self._cache:
            c = self.config
            c2w = self.trajectory[i]
            f = self.scene.render(self.intrinsics, c2w, c.height, c.width)
            rgb = np.ascontiguousarray(to_uint8(f.rgb))
            c2w_np = c2w.double().numpy()
            world_to_body = c2w_np @ invert_pose(torch.from_numpy(self.body_to_camera())).numpy()
            self._cache[i] = RigFrame(i, rgb, encode_depth(f.depth.numpy(), c.depth_encoding),
                                      self.intrinsics.clone(), c2w_np, world_to_body)
        return self._cache[i]

    def render_views(self, cam_to_world: torch.Tensor, height: int, width: int,
                     intrinsics: torch.Tensor | None = None) -> np.ndarray:
        """Ground-truth rgb (T, H, W, 3) uint8 at arbitrary camera poses (T, 4, 4) (for side-by-sides)."""
        K = intrinsics if intrinsics is not None else self.scene.default_intrinsics(height, width)
        out = []
        for c2w in cam_to_world:
            f = self.scene.render(K, c2w.float(), height, width)
            out.append(to_uint8(f.rgb))
        return np.stack(out)
