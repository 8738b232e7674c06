"""How a trajectory is cut into chunks, and how a goal is padded to a whole number of latent frames.

Pixel frames are numbered 0 .. T-1. With temporal stride ``s`` (the model's :attr:`temporal_stride`: 4 for the
Wan2.2 VAE, 1 for a per-frame autoencoder), latent frame ``j`` stands for pixel frame ``s j``
(:func:`mirage.camera.latent_frame_indices`): latent 0 is frame 0 alone, latent ``j >= 1`` the group of frames
``s(j-1)+1 .. s j``, represented by its last frame.

* ``T`` must be ``1 + s m`` (a whole number of latent frames, like every Wan clip), ``m >= 0``;
  :func:`pad_trajectory` pads a goal to that by holding its last pose.
* A chunk is a window of up to ``chunk_latent_frames`` consecutive latent frames (33 pixel frames -> 9 latent
  frames at stride 4). Its first ``c`` latent frames are clean *context*, already known; the rest are
  generated. The first chunk's context is the first frame (``c = 1``); later chunks carry the last
  ``context_latent_frames`` latent frames of what was generated before (re-encoded from pixels as the start of a
  window, so the first of them is a single-frame latent exactly like the VAE's latent 0).
* So with 33-frame chunks and one context latent every chunk adds 32 pixel frames; the last chunk may be
  shorter when ``T - 1`` is not a multiple of that (it just generates fewer latent frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Chunk", "plan_chunks", "padded_length", "pad_trajectory"]


@dataclass(frozen=True)
class Chunk:
    """One window of latent frames. ``start`` is the global latent index of window position 0; positions
    ``0 .. context-1`` are clean context, ``context .. length-1`` are generated; ``temporal_stride`` pixel
    frames per latent frame after the first."""

    index: int
    start: int
    length: int
    context: int
    temporal_stride: int

    @property
    def latent_indices(self) -> range:
        return range(self.start, self.start + self.length)

    @property
    def new_latent_indices(self) -> range:
        return range(self.start + self.context, self.start + self.length)

    @property
    def pixel_frames(self) -> torch.Tensor:
        """(length,) int64: the pixel frame that represents each latent frame of the window (its camera)."""
        return torch.arange(self.start, self.start + self.length) * self.temporal_stride

    @property
    def pixel_offset(self) -> int:
        """Global pixel frame of the window's first decoded frame (decoding gives 1 + s(length-1) frames)."""
        return self.temporal_stride * self.start

    @property
    def new_pixel_frames(self) -> range:
        """Global pixel frames this chunk adds: after the last context latent's frame, up to its last latent's."""
        s = self.temporal_stride
        return range(s * (self.start + self.context - 1) + 1, s * (self.start + self.length - 1) + 1)


def _check_stride(temporal_stride) -> int:
    if isinstance(temporal_stride, bool) or int(temporal_stride) != temporal_stride or temporal_stride < 1:
        raise ValueError(f"temporal_stride must be a positive integer, got {temporal_stride!r}")
    return int(temporal_stride)


def plan_chunks(num_frames: int, chunk_latent_frames: int, context_latent_frames: int = 1, *,
                temporal_stride: int) -> list[Chunk]:
    """Cut ``num_frames`` pixel frames (1 + s m) into chunks; see the module docstring. m = 0 gives no chunk."""
    s = _check_stride(temporal_stride)
    if num_frames < 1:
        raise ValueError(f"a rollout needs at least one frame, got {num_frames}")
    if (num_frames - 1) % s:
        raise ValueError(f"the number of frames must be 1 + {s}m ({', '.join(str(1 + s * m) for m in range(3))}, "
                         f"...) so that it is a whole number of latent frames; got {num_frames}")
    if context_latent_frames < 1 or chunk_latent_frames <= context_latent_frames:
        raise ValueError(f"chunks of {chunk_latent_frames} latent frames cannot carry {context_latent_frames} "
                         "context frames and still generate one")
    total_latents = 1 + (num_frames - 1) // s
    chunks: list[Chunk] = []
    done = 1  # latent 0 is the conditioning frame
    while done < total_latents:
        context = 1 if not chunks else min(context_latent_frames, done)
        length = min(chunk_latent_frames, context + total_latents - done)
        chunks.append(Chunk(index=len(chunks), start=done - context, length=length, context=context,
                            temporal_stride=s))
        done += length - context
    return chunks


def padded_length(num_frames: int, temporal_stride: int) -> int:
    """Smallest 1 + s m >= ``num_frames`` (the model generates whole latent frames)."""
    s = _check_stride(temporal_stride)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return 1 + s * -(-(num_frames - 1) // s)


def pad_trajectory(poses: torch.Tensor, temporal_stride: int) -> torch.Tensor:
    """(T, 4, 4) camera-to-world poses -> (1 + s m, 4, 4), the shortest whole number of latent frames that covers
    them: the last pose is held for the extra frames (a camera that stopped), so trimming the rollout's output
    back to T frames gives exactly the frames asked for. Returns ``poses`` itself when no padding is needed."""
    if not isinstance(poses, torch.Tensor) or poses.ndim != 3 or tuple(poses.shape[-2:]) != (4, 4):
        raise ValueError(f"poses must have shape (T, 4, 4), got {tuple(getattr(poses, 'shape', ()))}")
    T = poses.shape[0]
    length = padded_length(T, temporal_stride)
    if length == T:
        return poses
    return torch.cat([poses, poses[-1:].expand(length - T, 4, 4)])
