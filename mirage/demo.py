"""``mirage demo``: the latent memory on a synthetic scene, no model weights needed.

Renders a procedural room along a camera path, encodes every other frame with the exactly invertible
:class:`~mirage.autoencoders.PatchifyAutoencoder` (stride 16, like Wan2.2's VAE), inserts them into a
:class:`~mirage.memory.LatentSpatialMemory` (moving objects excluded), reads the memory at the held-out
frames in between, decodes, and writes:

* ``view_XX.png``: memory readout | ground-truth render | visibility mask, side by side;
* ``memory.ply``: the memory as a coloured point cloud (colour = mean of each stored 16x16 patch);
* ``memory.safetensors``: the memory itself (``LatentSpatialMemory.load``).

and prints the PSNR of the readout in the visible cells.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from mirage.autoencoders import PatchifyAutoencoder
from mirage.camera import latent_size
from mirage.metrics import psnr
from mirage.media import to_uint8, write_png
from mirage.memory import LatentSpatialMemory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--height", type=int, default=192, help="image height, a multiple of 16")
    parser.add_argument("--width", type=int, default=256, help="image width, a multiple of 16")
    parser.add_argument("--frames", type=int, default=9, help="frames on the path; even ones are inserted, "
                                                              "odd ones are held out and read back")
    parser.add_argument("--trajectory", default="orbit", choices=["forward", "turn", "orbit", "loop"])
    parser.add_argument("--speed", type=float, default=0.08, help="metres per frame (forward / orbit)")
    parser.add_argument("--num-dynamic", type=int, default=1, help="moving objects (excluded from the memory)")
    parser.add_argument("--voxel-size", type=float, default=0.02, help="dedup voxel in metres (<= 0: off)")
    parser.add_argument("--device", default="cpu")


def _patch_mean_colors(stride: int):
    def colorize(features: torch.Tensor) -> torch.Tensor:  # (N, 3 * stride^2) -> (N, 3)
        return features.float().reshape(-1, 3, stride * stride).mean(-1).clamp(0, 1)
    return colorize


def _masked_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR (dB) of images a, b (3, H, W) over the pixels where mask (H, W) is True; NaN on an empty mask."""
    if not mask.any():
        return float("nan")
    return psnr(a[:, mask][..., None], b[:, mask][..., None]).item()  # the masked pixels as a (3, M, 1) image


def run(args: argparse.Namespace) -> dict:
    from mirage.scenes import Scene

    H, W = args.height, args.width
    h, w = latent_size(H, W)
    if args.frames < 2:
        raise ValueError("--frames must be at least 2 (one inserted, one held out)")
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    steps = tqdm(total=5, desc="mirage demo", unit="step")

    steps.set_postfix_str("render")
    scene = Scene.random(seed=args.seed, num_dynamic=args.num_dynamic)
    K = scene.default_intrinsics(H, W)
    kw = {"speed": args.speed} if args.trajectory in ("forward", "orbit") else {}
    poses = scene.trajectory(args.trajectory, args.frames, **kw)
    times = torch.arange(args.frames, dtype=torch.float32) * 0.25
    frames = scene.render_batch(K, poses, H, W, times=times)
    inserted = torch.arange(0, args.frames, 2)
    held_out = torch.arange(1, args.frames, 2)
    steps.update()

    steps.set_postfix_str("encode + insert")
    ae = PatchifyAutoencoder(16)
    memory = LatentSpatialMemory(channels=ae.latent_channels, voxel_size=args.voxel_size if args.voxel_size > 0
                                 else None, device=device)
    latents = ae.encode(frames.rgb[inserted])
    written = memory.insert_batch(latents, frames.depth[inserted], K, poses[inserted], frames.dynamic[inserted])
    steps.update()

    steps.set_postfix_str("read")
    t0 = time.perf_counter()
    readout = memory.read_batch(K, poses[held_out], (H, W), (h, w))
    read_ms = (time.perf_counter() - t0) * 1e3
    decoded = ae.decode(readout.features.float().cpu())
    steps.update()

    steps.set_postfix_str("write images")
    results = []
    for i, t in enumerate(held_out.tolist()):
        visible = readout.mask[i].cpu().repeat_interleave(16, 0).repeat_interleave(16, 1)
        value = _masked_psnr(decoded[i], frames.rgb[t], visible)
        mask_img = visible[None].expand(3, H, W).float()
        panel = torch.cat([decoded[i], frames.rgb[t], mask_img], dim=2)
        write_png(os.path.join(args.out, f"view_{t:02d}.png"), to_uint8(panel))
        results.append((t, float(readout.mask[i].float().mean()), value))
    steps.update()

    steps.set_postfix_str("write memory")
    memory.export_ply(os.path.join(args.out, "memory.ply"), colorize=_patch_mean_colors(16))
    memory.save(os.path.join(args.out, "memory.safetensors"))
    steps.update()
    steps.close()

    stats = memory.stats()
    print(f"inserted frames {inserted.tolist()} ({written} cells written, {stats['points']} points, "
          f"{stats['bytes'] / 1e6:.2f} MB); read {len(held_out)} views in {read_ms:.1f} ms")
    print("held-out view | visible cells | PSNR in visible cells (dB)")
    for t, vis, value in results:
        print(f"{t:13d} | {vis:13.0%} | {value:.2f}")
    mean = float(np.nanmean([r[2] for r in results]))
    print(f"mean PSNR {mean:.2f} dB (patchify latents move as rigid 16x16 blocks, so this is a geometry check, "
          "not image quality)")
    print(f"wrote {os.path.abspath(args.out)}")
    return {"psnr": mean, "views": results, "stats": stats}


def main(args: argparse.Namespace) -> int:
    try:
        run(args)
    except ValueError as exc:
        print(f"mirage demo: {exc}")
        return 2
    return 0
