"""Latent caching: encode every training clip once, keep the latents on disk (safetensors), train from them.

An :class:`EncodedClip` holds what one training sample needs and nothing that must be re-encoded:

* the clip's latents as the VAE encodes the whole clip (the flow-matching target ``x0``);
* the memory sources: pixel frames encoded alone (what :meth:`MirageWorldModel.observe` stores at
  inference), their depth, exclusion masks and cameras;
* the camera of every latent frame (:func:`mirage.camera.latent_frame_indices` at the model's temporal stride)
  for readouts and rays.

:class:`LatentCache` writes one ``<key>.safetensors`` file per clip. The key hashes the clip's name with
everything that changes the latents (model name, VAE config, image size, frames, memory sources), so a
cache can never serve latents of another model or clip layout. Files are written atomically (temp file +
rename): an interrupted build leaves no half file, and the next build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mirage.camera import latent_frame_indices, valid_depth_mask
from mirage.data.clip import Clip
from mirage.durable import save_safetensors

__all__ = ["EncodedClip", "encode_clip", "LatentCache", "CachedLatentDataset", "cache_key"]

_TENSOR_FIELDS = ("latents", "source_latents", "source_depth", "source_exclude", "source_intrinsics",
                  "source_cam_to_world", "intrinsics", "cam_to_world")


@dataclass
class EncodedClip:
    """One training sample in latent form (see the module docstring).

    latents: (48, F, h, w) clip latents (normalised). source_latents: (S, 48, h, w) single-frame latents of
    the memory sources; source_depth: (S, H, W) metres; source_exclude: (S, H, W) bool;
    source_intrinsics: (S, 3, 3) at (H, W); source_cam_to_world: (S, 4, 4).
    intrinsics: (F, 3, 3) at (H, W) and cam_to_world: (F, 4, 4), one camera per latent frame.
    """

    latents: torch.Tensor
    source_latents: torch.Tensor
    source_depth: torch.Tensor
    source_exclude: torch.Tensor
    source_intrinsics: torch.Tensor
    source_cam_to_world: torch.Tensor
    intrinsics: torch.Tensor
    cam_to_world: torch.Tensor
    image_size: tuple[int, int]
    name: str = ""

    @property
    def num_latent_frames(self) -> int:
        return int(self.latents.shape[1])

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach().cpu().contiguous() for k in _TENSOR_FIELDS}


def _check_sources(clip: Clip, memory_frames: Sequence[int]) -> list[int]:
    frames = [int(i) for i in memory_frames]
    if not frames or min(frames) < 0 or max(frames) >= clip.num_frames:
        raise ValueError(f"memory_frames {frames} out of range for clip {clip.name!r} of {clip.num_frames} frames")
    if clip.depth is None:
        raise ValueError(f"clip {clip.name!r} has no depth: the memory cannot be built")
    return frames


@torch.no_grad()
def encode_clip(world_model, clip: Clip, memory_frames: Sequence[int] = (0,)) -> EncodedClip:
    """Encode a clip with ``world_model``'s VAE (clip latents + single-frame latents of the memory sources).

    The exclusion mask of a source frame is its dynamic mask (if any) or'ed with invalid depth, the same
    cells the world model keeps out of the memory at inference.
    """
    if tuple(clip.image_size) != tuple(world_model.image_size):
        raise ValueError(f"clip {clip.name!r} is {clip.image_size}, the model works at {world_model.image_size}")
    sources = _check_sources(clip, memory_frames)
    video = (clip.rgb.to(world_model.device, torch.float32) * 2 - 1).transpose(0, 1)[None]  # (1, 3, T, H, W)
    latents = world_model.backbone.encode(video)[0].float().cpu()
    source_latents = world_model.encode_images(clip.rgb[sources]).float().cpu()
    depth = clip.depth[sources].float()
    exclude = ~valid_depth_mask(depth)
    if clip.dynamic is not None:
        exclude |= clip.dynamic[sources]
    rep = latent_frame_indices(clip.num_frames, world_model.temporal_stride)
    return EncodedClip(latents=latents, source_latents=source_latents, source_depth=depth, source_exclude=exclude,
                       source_intrinsics=clip.intrinsics[sources].float(),
                       source_cam_to_world=clip.cam_to_world[sources].float(),
                       intrinsics=clip.intrinsics[rep].float(), cam_to_world=clip.cam_to_world[rep].float(),
                       image_size=clip.image_size, name=clip.name)


def cache_key(name: str, fingerprint: dict) -> str:
    """File stem for a clip: readable prefix + hash of the name and every setting that changes the latents."""
    digest = hashlib.sha256(json.dumps({"name": name, **fingerprint}, sort_keys=True, default=str).encode())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:48]
    return f"{safe}-{digest.hexdigest()[:16]}"


def model_fingerprint(world_model, memory_frames: Sequence[int]) -> dict:
    """Everything about the model and sampling that changes cached latents."""
    vae = world_model.backbone.vae
    weights = hashlib.sha256()
    for key, value in sorted(vae.state_dict().items()):  # weights, so a retrained VAE never reuses old latents
        weights.update(key.encode())
        weights.update(value.detach().float().cpu().numpy().tobytes()[:4096])
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}  # not paths / versions
    return {"vae_config": config, "vae": weights.hexdigest(),
            "image_size": list(world_model.image_size), "memory_frames": [int(i) for i in memory_frames]}


class LatentCache:
    """A directory of encoded clips, one safetensors file each (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, encoded: EncodedClip) -> None:
        meta = {"name": encoded.name, "image_size": json.dumps(list(encoded.image_size))}
        save_safetensors(encoded.to_tensors(), self.path(key), meta)

    def load(self, key: str) -> EncodedClip:
        path = self.path(key)
        if not path.is_file():
            raise ValueError(f"no cached clip {key} in {self.directory}")
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                meta = f.metadata() or {}
        except Exception as exc:  # safetensors raises its own error types on damaged files
            raise ValueError(f"cached clip {path} is unreadable ({exc}); delete it to re-encode") from exc
        missing = [k for k in _TENSOR_FIELDS if k not in tensors]
        if missing:
            raise ValueError(f"cached clip {path} lacks {missing}; delete it to re-encode")
        return EncodedClip(**tensors, image_size=tuple(json.loads(meta.get("image_size", "[0, 0]"))),
                           name=meta.get("name", key))

    def build(self, dataset: Dataset, world_model, memory_frames: Sequence[int] = (0,), progress: bool = True,
              callback: Callable[[int, int], None] | None = None) -> list[str]:
        """Encode every item of a Clip dataset that is not cached yet; returns the keys in dataset order.

        The dataset must expose ``item_name(i)`` (the clip name without loading it) so cached items are
        skipped without decoding any image.
        """
        if not hasattr(dataset, "item_name"):
            raise ValueError(f"{type(dataset).__name__} has no item_name(i); it cannot be cached")
        fingerprint = model_fingerprint(world_model, memory_frames)
        keys = []
        bar = tqdm(range(len(dataset)), desc="encoding latents", disable=not progress)
        for i in bar:
            key = cache_key(dataset.item_name(i), fingerprint)
            if key not in self:
                clip = dataset[i]
                self.save(key, encode_clip(world_model, clip, memory_frames))
            keys.append(key)
            if callback is not None:
                callback(i + 1, len(dataset))
        return keys


class CachedLatentDataset(Dataset):
    """Items of a :class:`LatentCache` by key; item ``i`` is an :class:`EncodedClip`."""

    def __init__(self, cache: LatentCache, keys: Sequence[str]):
        missing = [k for k in keys if k not in cache]
        if missing:
            raise ValueError(f"{len(missing)} keys are not in the cache {cache.directory}, e.g. {missing[:3]}")
        self.cache = cache
        self.keys = list(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> EncodedClip:
        return self.cache.load(self.keys[index])
