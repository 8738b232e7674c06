"""Synthetic clips from :mod:`mirage.scenes`: exact depth, cameras and dynamic masks, deterministic in a seed.

Item ``i`` renders scene ``seed + i // clips_per_scene`` along trajectory ``trajectories[i % len]`` (its own
trajectory seed), so training and held-out evaluation sets are disjoint ranges of scene seeds.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from mirage.camera import num_latent_frames
from mirage.data.clip import Clip

__all__ = ["SyntheticClipDataset", "EVAL_SEED_OFFSET"]

# Scene seeds at or above this offset are kept for evaluation; training sets start at 0 by default.
EVAL_SEED_OFFSET = 1_000_000


class SyntheticClipDataset(Dataset):
    """Rendered clips of procedural rooms.

    Args:
        num_scenes: number of distinct rooms; clips_per_scene: trajectories per room.
        num_frames: frames per clip (1 + 4k). image_size: (H, W).
        seed: first scene seed. trajectories: kinds cycled over clips ("forward", "turn", "orbit", "loop").
        num_objects, num_dynamic: objects per room and how many of them move (their pixels are flagged in
            ``Clip.dynamic``). fps: frame rate that turns frame numbers into scene time for moving objects.
        trajectory_kwargs: extra keywords for :meth:`Scene.trajectory` (e.g. ``speed``, ``turn_rate``).
    """

    def __init__(self, num_scenes: int = 8, num_frames: int = 9, image_size: Sequence[int] = (64, 96), seed: int = 0,
                 trajectories: Sequence[str] = ("forward", "turn", "orbit"), clips_per_scene: int = 1,
                 num_objects: int = 6, num_dynamic: int = 0, fps: float = 8.0, trajectory_kwargs: dict | None = None):
        from mirage.scenes import TRAJECTORIES

        num_latent_frames(num_frames)
        if num_scenes < 1 or clips_per_scene < 1:
            raise ValueError(f"num_scenes and clips_per_scene must be >= 1, got {num_scenes}, {clips_per_scene}")
        bad = [t for t in trajectories if t not in TRAJECTORIES]
        if not trajectories or bad:
            raise ValueError(f"trajectories must be a non-empty subset of {TRAJECTORIES}, got {list(trajectories)}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.num_scenes, self.clips_per_scene = int(num_scenes), int(clips_per_scene)
        self.num_frames = int(num_frames)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = int(seed)
        self.trajectories = tuple(trajectories)
        self.num_objects, self.num_dynamic = int(num_objects), int(num_dynamic)
        self.fps = float(fps)
        self.trajectory_kwargs = dict(trajectory_kwargs or {})
        self._scene_cache: dict[int, object] = {}

    def __len__(self) -> int:
        return self.num_scenes * self.clips_per_scene

    def _parts(self, index: int) -> tuple[int, str, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        scene_seed = self.seed + index // self.clips_per_scene
        clip = index % self.clips_per_scene
        kind = self.trajectories[(index // self.clips_per_scene + clip) % len(self.trajectories)]
        return scene_seed, kind, clip

    def item_name(self, index: int) -> str:
        scene_seed, kind, clip = self._parts(index)
        return f"scene{scene_seed}-{kind}{clip}-{self.num_frames}f-{self.image_size[0]}x{self.image_size[1]}"

    def scene(self, scene_seed: int):
        from mirage.scenes import Scene

        if scene_seed not in self._scene_cache:
            self._scene_cache = {scene_seed: Scene.random(scene_seed, num_objects=self.num_objects,
                                                          num_dynamic=self.num_dynamic)}
        return self._scene_cache[scene_seed]

    def __getitem__(self, index: int) -> Clip:
        scene_seed, kind, clip = self._parts(index)
        scene = self.scene(scene_seed)
        H, W = self.image_size
        K = scene.default_intrinsics(H, W)
        c2w = scene.trajectory(kind, self.num_frames, seed=clip, **self.trajectory_kwargs)
        times = torch.arange(self.num_frames, dtype=torch.float32) / self.fps
        frames = scene.render_batch(K, c2w, H, W, times=times)
        return Clip(rgb=frames.rgb.float().clamp(0, 1), intrinsics=K.expand(self.num_frames, 3, 3).clone(),
                    cam_to_world=c2w.float(), depth=frames.depth.float(), dynamic=frames.dynamic.bool(),
                    name=self.item_name(index))
