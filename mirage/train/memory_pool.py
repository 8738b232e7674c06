"""A pool of memory-task rooms on disk, rendered once and encoded once, and the training windows drawn from it.

Rendering a memory task (:func:`mirage.data.memory_task.make_memory_task`) costs 0.2-0.5 s per room at 64x96 on
one CPU core, so training never renders: the pool is built in two resumable passes, one safetensors file per room.

1. :func:`render_pool`: room ``i`` of a split (``MemoryTaskDataset`` item ``i``: a fresh procedural room, the
   earlier pass that seeds the memory and the 33-frame out-and-back target clip) -> ``raw/<name>.safetensors``
   (RGB as uint8, depth float32, cameras, per-frame needs-memory shares). No model involved.
2. :func:`encode_pool`: every raw room -> ``latents-<fingerprint>/<name>.safetensors`` with the model's
   :meth:`~mirage.pipeline.MirageWorldModel.encode_images` latents of every earlier and target frame (at temporal
   stride 1 a frame encoded alone is exactly its latent inside a clip, so one encode serves as memory source and
   as flow-matching target). The fingerprint (:func:`mirage.data.encoded_clips.model_fingerprint`) hashes the
   autoencoder's weights, so latents of another autoencoder are never reused.

:class:`MemoryWindowDataset` turns the encoded pool into training samples (:class:`EncodedClip`): memory = a
random subset of the room's earlier-pass frames (inserted at training time exactly as ``observe`` inserts them),
target = a window of ``window_frames`` consecutive target frames whose first latent is the clean context, as a
rollout chunk sees it. Windows start at one of ``starts`` (default: every start whose window reaches the return,
frames after the turning point, where the memory is needed). Item ``i`` is deterministic in ``(seed, i)``, so a
resumed run sees the same samples at the same steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mirage.data.encoded_clips import EncodedClip, model_fingerprint
from mirage.data.memory_task import MemoryTaskDataset
from mirage.durable import save_safetensors

__all__ = ["render_pool", "render_tum_pool", "encode_pool", "pool_files", "latent_dir", "MemoryWindowDataset",
           "MixedWindowDataset", "load_room"]

_RAW = ("earlier_rgb", "earlier_depth", "earlier_exclude", "earlier_intrinsics", "earlier_cam_to_world",
        "target_rgb", "target_intrinsics", "target_cam_to_world", "frame_needs_memory")
_ENCODED = ("earlier_latents", "earlier_depth", "earlier_exclude", "earlier_intrinsics", "earlier_cam_to_world",
            "target_latents", "target_intrinsics", "target_cam_to_world", "frame_needs_memory")


def load_room(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of one pool file; ValueError when it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types on damaged files
        raise ValueError(f"pool file {path} is unreadable ({exc}); delete it to rebuild") from exc


def _save_task(task, path: Path, split: str) -> None:
    """One memory task -> a raw pool file (RGB as uint8, depth float32, cameras, per-frame needs-memory shares)."""
    e, t = task.earlier, task.target
    to_u8 = lambda rgb: (rgb.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    tensors = {"earlier_rgb": to_u8(e.rgb), "earlier_depth": e.depth.float(),
               "earlier_exclude": task.memory_sources()["exclude"], "earlier_intrinsics": e.intrinsics.float(),
               "earlier_cam_to_world": e.cam_to_world.float(), "target_rgb": to_u8(t.rgb),
               "target_intrinsics": t.intrinsics.float(), "target_cam_to_world": t.cam_to_world.float(),
               "frame_needs_memory": task.frame_needs_memory.float()}
    meta = {"name": task.name, "split": split, "variant": task.variant, "room_seed": str(task.room_seed),
            "accepted": str(task.accepted), "needs_memory": f"{task.needs_memory:.4f}",
            "scored_frames": json.dumps(list(task.scored_frames))}
    save_safetensors(tensors, path, meta)


def render_pool(directory: str | os.PathLike, split: str, num_rooms: int, image_size: Sequence[int] = (64, 96),
                first_room: int = 0, shard: int = 0, num_shards: int = 1, progress: bool = True) -> list[Path]:
    """Render rooms ``first_room .. first_room + num_rooms - 1`` of ``split`` into ``directory/raw/``.

    Resumable (rooms already on disk are skipped) and shardable (this process renders rooms ``i`` with
    ``i % num_shards == shard``). Returns the paths of this shard's rooms."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard must be in [0, {num_shards}), got {shard}")
    tasks = MemoryTaskDataset(num_rooms, image_size, split=split, first_room=first_room)
    raw = Path(directory) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(shard, len(tasks), num_shards), desc=f"rendering {split} rooms", disable=not progress):
        path = raw / f"{tasks.item_name(i)}.safetensors"
        paths.append(path)
        if path.is_file():
            continue
        _save_task(tasks[i], path, split)
    return paths


def render_tum_pool(directory: str | os.PathLike, source: str, image_size: Sequence[int] = (64, 96),
                    split: str = "train", camera: str | None = None, progress: bool = True, **task_kwargs
                    ) -> list[Path]:
    """Real training samples into ``directory/raw/``: the memory tasks of :func:`mirage.data.tum.tum_training_tasks`
    on a TUM sequence ``source`` (``DIR`` or ``DIR@START:END``, :func:`mirage.data.tum.parse_tum_source`; give the
    training part only, so that a held-out part stays unseen), one file per window, in the procedural pool's format
    (so :func:`encode_pool` and :class:`MemoryWindowDataset` take them unchanged). ``task_kwargs`` go to
    ``tum_training_tasks``. Windows already on disk are still classified (cheap) but not rewritten."""
    from mirage.data.tum import TUMSequence, parse_tum_source, tum_training_tasks

    root, frames = parse_tum_source(source)
    sequence = TUMSequence(root, camera=camera, frames=frames)
    raw = Path(directory) / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in tqdm(tum_training_tasks(sequence, image_size, **task_kwargs), desc="real windows",
                     disable=not progress):
        path = raw / f"{task.name}.safetensors"
        paths.append(path)
        if not path.is_file():
            _save_task(task, path, split)
    return paths


def latent_dir(directory: str | os.PathLike, world_model) -> Path:
    """``directory/latents-<hash>``: where :func:`encode_pool` puts this model's latents."""
    from mirage.data.encoded_clips import cache_key

    return Path(directory) / cache_key("latents", model_fingerprint(world_model, (0,)))


def pool_files(directory: str | os.PathLike, split: str | None = None) -> list[Path]:
    """The (sorted) safetensors files of a pool folder, optionally only those whose name says ``split``."""
    files = sorted(Path(directory).glob("*.safetensors"))
    if split is not None:
        files = [p for p in files if _metadata(p).get("split") == split]
    return files


def _metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


@torch.no_grad()
def encode_pool(directory: str | os.PathLike, world_model, batch_frames: int = 64, progress: bool = True,
                shard: int = 0, num_shards: int = 1) -> Path:
    """Encode every raw room of ``directory`` with ``world_model`` (temporal stride 1 only; this process takes rooms
    ``i % num_shards == shard``); returns the latent dir. Identical frames (a static room's out-and-back clip shows
    frame ``t`` again as frame ``T-1-t``) are encoded once: at stride 1 the latent depends on the frame alone."""
    if world_model.temporal_stride != 1:
        raise ValueError("the memory-task pool stores per-frame latents, which are the clip latents only at temporal "
                         f"stride 1; this model has stride {world_model.temporal_stride}")
    out = latent_dir(directory, world_model)
    out.mkdir(parents=True, exist_ok=True)

    def encode(rgb_u8):
        unique, inverse = torch.unique(rgb_u8.flatten(1), dim=0, return_inverse=True)
        unique = unique.view(-1, *rgb_u8.shape[1:])
        latents = torch.cat([world_model.encode_images(chunk.float() / 255).float().cpu()
                             for chunk in unique.split(batch_frames)])
        return latents[inverse]

    files = pool_files(Path(directory) / "raw")[shard::num_shards]
    for path in tqdm(files, desc="encoding pool", disable=not progress):
        target = out / path.name
        if target.is_file():
            continue
        raw, meta = load_room(path)
        tensors = {k: raw[k] for k in _ENCODED if k in raw}
        tensors["earlier_latents"] = encode(raw["earlier_rgb"])
        tensors["target_latents"] = encode(raw["target_rgb"])
        save_safetensors(tensors, target, meta)
    return out


class MemoryWindowDataset(Dataset):
    """Training samples from an encoded pool (see the module docstring).

    Args:
        files: encoded pool files (:func:`encode_pool`'s output).
        window_frames: latent frames per window (the model's ``chunk_latent_frames``).
        starts: window starts into the target clip; None -> every start ``s`` with ``s + window_frames - 1`` past
            the turning point (the window ends among the returning frames) and ``s + window_frames <= T``.
        min_sources: fewest earlier-pass frames in a sample's memory (a random subset of size in
            [min_sources, N] is kept, in order).
        seed: item ``i`` uses ``torch.Generator().manual_seed(seed * 1_000_003 + i)``.
    Item ``i`` is room ``i % len(files)``; len = ``len(files) * repeats``.
    """

    def __init__(self, files: Sequence[str | os.PathLike], window_frames: int, starts: Sequence[int] | None = None,
                 min_sources: int = 8, seed: int = 0, repeats: int = 64):
        if not files:
            raise ValueError("the pool holds no encoded room")
        if window_frames < 2:
            raise ValueError(f"window_frames must be >= 2, got {window_frames}")
        self.files = [Path(p) for p in files]
        first, meta = load_room(self.files[0])
        T = int(first["target_latents"].shape[0])
        if window_frames > T:
            raise ValueError(f"window of {window_frames} frames is longer than the {T}-frame target clip")
        if starts is None:
            turn = (T - 1) // 2
            starts = [s for s in range(T - window_frames + 1) if s + window_frames - 1 > turn]
        starts = [int(s) for s in starts]
        if not starts or min(starts) < 0 or max(starts) + window_frames > T:
            raise ValueError(f"window starts {starts} do not fit {window_frames}-frame windows in {T} frames")
        self.window_frames, self.starts, self.num_target_frames = int(window_frames), starts, T
        self.min_sources, self.seed, self.repeats = int(min_sources), int(seed), int(repeats)
        self.image_size = tuple(int(v) for v in first["earlier_depth"].shape[-2:])

    def __len__(self) -> int:
        return len(self.files) * self.repeats

    def __getitem__(self, index: int) -> EncodedClip:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        room, meta = load_room(self.files[index % len(self.files)])
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        s = self.starts[int(torch.randint(len(self.starts), (1,), generator=g))]
        N = int(room["earlier_latents"].shape[0])
        k = int(torch.randint(min(self.min_sources, N), N + 1, (1,), generator=g))
        keep = torch.randperm(N, generator=g)[:k].sort().values
        window = slice(s, s + self.window_frames)
        return EncodedClip(latents=room["target_latents"][window].transpose(0, 1).contiguous(),
                           source_latents=room["earlier_latents"][keep], source_depth=room["earlier_depth"][keep],
                           source_exclude=room["earlier_exclude"][keep],
                           source_intrinsics=room["earlier_intrinsics"][keep],
                           source_cam_to_world=room["earlier_cam_to_world"][keep],
                           intrinsics=room["target_intrinsics"][window],
                           cam_to_world=room["target_cam_to_world"][window],
                           image_size=self.image_size, name=f"{meta.get('name', '')}@{s}")


class MixedWindowDataset(Dataset):
    """Two window datasets mixed: item ``i`` is, with probability ``fraction`` (drawn from
    ``torch.Generator().manual_seed(seed * 1_000_003 + i + 1)``, so deterministic and resumable), an item of
    ``secondary`` (an index drawn from the same generator), else ``primary[i]``. len = ``len(primary)``.
    mirage-tiny's real-data fine-tune: primary = the procedural pool, secondary = real windows
    (``mirage train --data memory-pool --pool P --real-pool Q --real-fraction 0.3``)."""

    def __init__(self, primary: Dataset, secondary: Dataset, fraction: float, seed: int = 0):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"the mixing fraction must be in [0, 1], got {fraction}")
        if len(primary) == 0 or len(secondary) == 0:
            raise ValueError("both datasets of a mix need items")
        self.primary, self.secondary, self.fraction, self.seed = primary, secondary, float(fraction), int(seed)

    def __len__(self) -> int:
        return len(self.primary)

    def source(self, index: int) -> tuple[str, int]:
        """("primary" | "secondary", the index into it) of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index) + 1)
        if float(torch.rand((), generator=g)) < self.fraction:
            return "secondary", int(torch.randint(len(self.secondary), (1,), generator=g))
        return "primary", int(index)

    def __getitem__(self, index: int) -> EncodedClip:
        which, i = self.source(index)
        return (self.secondary if which == "secondary" else self.primary)[i]


def main(argv=None) -> int:
    """``python -m mirage.train.memory_pool render|encode ...`` (the pool steps of mirage-tiny's train.sh)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mirage.train.memory_pool")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render memory-task rooms into POOL/raw (resumable, shardable)")
    r.add_argument("pool")
    r.add_argument("--split", choices=("train", "heldout"), default="train")
    r.add_argument("--rooms", type=int, required=True)
    r.add_argument("--height", type=int, default=64)
    r.add_argument("--width", type=int, default=96)
    r.add_argument("--shard", type=int, default=0)
    r.add_argument("--num-shards", type=int, default=1)
    t = sub.add_parser("render-tum", help="real training windows of a TUM sequence (part) into POOL/raw")
    t.add_argument("pool")
    t.add_argument("--tum", required=True, metavar="DIR[@START:END]",
                   help="the sequence, or its training part (e.g. DIR@0:415: frames 0..414)")
    t.add_argument("--height", type=int, default=64)
    t.add_argument("--width", type=int, default=96)
    t.add_argument("--frames", type=int, default=33, help="frames per target window (1 + 4k)")
    t.add_argument("--frame-strides", type=int, nargs="+", default=[1, 2])
    t.add_argument("--memory-frames", type=int, default=16)
    t.add_argument("--min-history", type=int, default=64, help="frames before the first window (its memory)")
    t.add_argument("--step", type=int, default=8, help="frames between window starts")
    t.add_argument("--tum-camera", default=None)
    e = sub.add_parser("encode", help="encode POOL/raw with a world model's autoencoder into POOL/latents-<hash>")
    e.add_argument("pool")
    e.add_argument("--model", required=True, help="world model directory (its autoencoder encodes)")
    e.add_argument("--shard", type=int, default=0)
    e.add_argument("--num-shards", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.command == "render":
        paths = render_pool(args.pool, args.split, args.rooms, (args.height, args.width), shard=args.shard,
                            num_shards=args.num_shards)
        print(f"{len(paths)} {args.split} rooms in {Path(args.pool) / 'raw'}")
    elif args.command == "render-tum":
        paths = render_tum_pool(args.pool, args.tum, (args.height, args.width), camera=args.tum_camera,
                                num_frames=args.frames, frame_strides=args.frame_strides,
                                memory_frames=args.memory_frames, min_history=args.min_history, step=args.step)
        print(f"{len(paths)} real windows in {Path(args.pool) / 'raw'}")
    else:
        from mirage.pipeline import MirageWorldModel

        out = encode_pool(args.pool, MirageWorldModel.from_pretrained(args.model), shard=args.shard,
                          num_shards=args.num_shards)
        print(f"{len(pool_files(out))} encoded rooms in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
