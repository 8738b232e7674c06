"""Latent spatial memory vs the RGB point-cloud baseline: read / insert time and bytes vs stored frames.

    python bench/memory.py                      # CPU: 10, 100, 1000 frames; full-size Wan2.2 VAE encode once
    python bench/memory.py --device cuda --vae-repeats 5
    python bench/memory.py --frames 10 100 --vae tiny   # quick

Per stored frame the latent memory holds one point per latent cell (44x80 at 704x1280, 48 channels, bf16);
the RGB baseline holds one point per pixel (704x1280). Reading the latent memory is one z-buffer at
44x80; reading the RGB cache for a video model is a z-buffer at 704x1280 plus a VAE encode of the
rendered image (the paper's Eq. 2). Frames are synthetic: random depth (1-5 m) seen from cameras
jittered around the read camera, so most stored points project into the read view (a worst case
for the z-buffer). No voxel dedup unless --voxel-size, so stored points grow exactly with frames.
The latent rows also time the z-buffer alone against its readable torch twin
(mirage.ops._zbuffer_reference, the baseline every fast z-buffer is compared with; --no-reference skips it).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from mirage.camera import intrinsics_from_fov, look_at, scale_intrinsics
from mirage.memory import LatentSpatialMemory, RGBPointCloudMemory
from mirage.ops import _zbuffer_reference as zbuffer_reference
from mirage.ops import zbuffer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, nargs="+", default=[10, 100, 1000], help="stored frames per row")
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median reported)")
    p.add_argument("--voxel-size", type=float, default=0.0, help="dedup voxel for the latent memory (0: off)")
    p.add_argument("--vae", choices=["full", "tiny", "none"], default="full",
                   help="encoder for the RGB baseline: Wan2.2-sized AutoencoderKLWan with random weights, a tiny "
                        "one, or none")
    p.add_argument("--vae-repeats", type=int, default=None,
                   help="timed VAE encodes (default 1 on CPU, where one full-size encode takes minutes; 5 on CUDA)")
    p.add_argument("--rgb-max-points", type=float, default=1e7,
                   help="largest RGB cache actually built; beyond it, rasterise time is extrapolated linearly "
                        "from the largest measured size and bytes are computed per point")
    p.add_argument("--no-reference", action="store_true",
                   help="skip timing the torch reference z-buffer (slow at 1000 frames on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in milliseconds (the minimum goes to LAST_MIN for the log lines)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    LAST_MIN[0] = min(times)
    return statistics.median(times)


LAST_MIN = [float("nan")]


def synthetic_frames(start: int, count: int, H: int, W: int, h: int, w: int, channels: int, seed: int,
                     device: torch.device, with_rgb: bool = True):
    """Frames start..start+count-1: latents (T, C, h, w) bf16, depth (T, H, W) piecewise-constant per cell plus
    per-pixel noise, rgb (T, 3, H, W), cam_to_world (T, 4, 4) jittered around the identity camera."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + start)
    latents = torch.randn(count, channels, h, w, generator=g).to(torch.bfloat16)
    cell_depth = 1.0 + 4.0 * torch.rand(count, h, w, generator=g)
    depth = cell_depth.repeat_interleave(H // h, 1).repeat_interleave(W // w, 2)
    depth = depth + 0.01 * torch.rand(count, H, W, generator=g)
    rgb = torch.rand(count, 3, H, W, generator=g) if with_rgb else None
    poses = []
    for _ in range(count):
        eye = (torch.rand(3, generator=g) - 0.5) * torch.tensor([0.6, 0.2, 0.6])
        look = torch.tensor([0.0, 0.0, 3.0]) + (torch.rand(3, generator=g) - 0.5) * torch.tensor([1.0, 0.5, 0.0])
        target = eye + look
        poses.append(look_at(eye, target, up=[0.0, -1.0, 0.0]))
    return (latents.to(device), depth.to(device), None if rgb is None else rgb.to(device),
            torch.stack(poses).to(device))


def build_vae(kind: str, device: torch.device):
    """A (1, 3, H, W) [0, 1] -> (1, 48, H/16, W/16) encoder callable, and its description."""
    if kind == "none":
        return None, "none"
    from diffusers import AutoencoderKLWan

    shape = dict(z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                 scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True])
    if kind == "full":
        vae = AutoencoderKLWan(base_dim=160, decoder_base_dim=256, **shape)
    else:
        vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, **shape)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = vae.to(device, dtype).eval()
    params = sum(p.numel() for p in vae.encoder.parameters()) / 1e6

    @torch.inference_mode()
    def encode(images: torch.Tensor) -> torch.Tensor:
        video = (images * 2 - 1).to(dtype)[:, :, None]  # (1, 3, 1, H, W) in [-1, 1]
        return vae.encode(video).latent_dist.mode()[:, :, 0].float()

    return encode, f"AutoencoderKLWan {kind} ({params:.0f}M encoder params, {str(dtype).replace('torch.', '')})"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    H, W, C = args.height, args.width, args.channels
    h, w = H // 16, W // 16
    frames = sorted(set(args.frames))
    vae_repeats = args.vae_repeats or (5 if device.type == "cuda" else 1)
    K = intrinsics_from_fov(60.0, H, W).to(device)
    read_pose = torch.eye(4, device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"device {device} ({where}), "
          f"torch {torch.__version__}; image {H}x{W}, latent {h}x{w}x{C} bf16; repeats {args.repeats}", flush=True)

    # ------------------------------------------------------------------ latent memory
    latent_rows = {}
    memory = LatentSpatialMemory(channels=C, voxel_size=args.voxel_size or None, device=device, dtype=torch.bfloat16)
    chunk = 25
    for target in frames:
        while memory.frames_inserted < target:
            n = min(chunk, target - memory.frames_inserted)
            lat, depth, _, poses = synthetic_frames(memory.frames_inserted, n, H, W, h, w, C, args.seed, device,
                                                     with_rgb=False)
            memory.insert_batch(lat, depth, K, poses)
        read_ms = timed(lambda: memory.read(K, read_pose, (H, W), (h, w)), device, args.repeats)
        read_min = LAST_MIN[0]
        batch_poses = read_pose.expand(9, 4, 4).clone()
        read9_ms = timed(lambda: memory.read_batch(K, batch_poses, (H, W), (h, w)), device, args.repeats)
        visible = memory.coverage(K, read_pose[None], (H, W), (h, w)).item()
        # The z-buffer alone (fast path vs the readable torch twin) on the same points and latent camera.
        K_lat = scale_intrinsics(K, (H, W), (h, w))[None]
        zbuf_args = (memory.points, K_lat, read_pose[None], h, w)
        zbuf_ms = timed(lambda: zbuffer.rasterize(*zbuf_args), device, args.repeats)
        ref_ms = float("nan")
        if not args.no_reference:
            ref_ms = timed(lambda: zbuffer_reference.rasterize(*zbuf_args), device, max(1, args.repeats // 2))
        # Insert one more frame (pooling 704x1280 depth to 44x80 + back-projection + append) into an O(1)
        # copy (copy-on-write store), so the row's size stays put.
        lat1, depth1, _, pose1 = synthetic_frames(10**6, 1, H, W, h, w, C, args.seed, device, with_rgb=False)
        insert_ms = timed(lambda: memory.copy().insert(lat1[0], depth1[0], K, pose1[0]), device, args.repeats)
        s = memory.stats()
        latent_rows[target] = dict(points=s["points"], bytes=s["bytes"], read=read_ms, read9=read9_ms,
                                   insert=insert_ms, visible=visible, zbuf=zbuf_ms, ref=ref_ms)
        print(f"latent {target:5d} frames: {s['points']:,} points, {s['bytes'] / 1e6:.1f} MB, "
              f"read {read_ms:.2f} ms (min {read_min:.2f}), "
              f"9 views {read9_ms:.2f} ms, insert {insert_ms:.2f} ms, visible {visible:.0%}; z-buffer {zbuf_ms:.2f} ms "
              f"vs torch reference {ref_ms:.2f} ms ({ref_ms / zbuf_ms:.1f}x)", flush=True)
    del memory

    # ------------------------------------------------------------------ RGB baseline
    per_frame = H * W
    cap = int(args.rgb_max_points)
    measurable = [f for f in frames if f * per_frame <= cap] or [max(1, cap // per_frame)]
    cache = RGBPointCloudMemory(device=device)  # rasterise only here; the VAE encode is timed once below
    rgb_measured = {}
    for target in sorted(set(measurable)):
        while cache.frames_inserted < target:
            _, depth, rgb, poses = synthetic_frames(cache.frames_inserted, 1, H, W, h, w, C, args.seed, device)
            cache.insert(rgb[0], depth[0], K, poses[0])
        raster_ms = timed(lambda: cache.render(K, read_pose, (H, W)), device, args.repeats)
        raster_min = LAST_MIN[0]
        rgb_measured[target] = dict(points=len(cache), bytes=cache.stats()["bytes"], raster=raster_ms)
        print(f"rgb    {target:5d} frames: {len(cache):,} points, {cache.stats()['bytes'] / 1e6:.1f} MB, "
              f"rasterise {raster_ms:.1f} ms (min {raster_min:.1f})", flush=True)
    bytes_per_point = cache.stats()["bytes"] / max(len(cache), 1)
    last_render = cache.render(K, read_pose, (H, W))[0]
    del cache

    encode, vae_desc = build_vae(args.vae, device)
    encode_ms = float("nan")
    if encode is not None:
        print(f"timing {vae_desc} encode of one {H}x{W} frame x{vae_repeats} ...", flush=True)
        warmup = 1 if device.type == "cuda" else 0  # a CPU encode takes minutes; the first one is the number
        encode_ms = timed(lambda: encode(last_render[None]), device, vae_repeats, warmup=warmup)
        print(f"VAE encode {encode_ms:.1f} ms", flush=True)

    # ------------------------------------------------------------------ table
    biggest = max(rgb_measured)
    print()
    print("| stored frames | latent points | latent MB | latent read ms (1 view / 9 views) | latent insert ms "
          "| z-buffer ms (fast / torch reference) "
          "| RGB points | RGB MB | RGB rasterise ms | VAE encode ms | RGB read ms (raster + encode) "
          "| read speedup | bytes ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = set()
    for f in frames:
        lr = latent_rows[f]
        if f in rgb_measured:
            rr = rgb_measured[f]
            rgb_points, rgb_bytes, raster, mark = rr["points"], rr["bytes"], rr["raster"], ""
        else:
            rgb_points = f * per_frame
            rgb_bytes = rgb_points * bytes_per_point
            raster = rgb_measured[biggest]["raster"] * rgb_points / rgb_measured[biggest]["points"]
            mark = "~"
            notes.add(f"~ estimated, not measured: an RGB cache of {rgb_points:,} points does not fit the "
                      f"--rgb-max-points {cap:,} budget; bytes = points x {bytes_per_point:.0f} B, rasterise time "
                      f"scaled linearly from {rgb_measured[biggest]['points']:,} points")
        rgb_read = raster + (encode_ms if not math.isnan(encode_ms) else 0.0)
        print(f"| {f} | {lr['points']:,} | {lr['bytes'] / 1e6:.1f} | {lr['read']:.2f} / {lr['read9']:.2f} | "
              f"{lr['insert']:.2f} | {lr['zbuf']:.2f} / {lr['ref']:.2f} | {mark}{rgb_points:,} | {mark}{rgb_bytes / 1e6:.0f} | {mark}{raster:.1f} | "
              f"{encode_ms:.0f} | {mark}{rgb_read:.0f} | {mark}{rgb_read / lr['read']:.0f}x | "
              f"{mark}{rgb_bytes / lr['bytes']:.0f}x |")
    print()
    lr = latent_rows[frames[-1]]
    print(f"bytes per stored frame: latent {lr['bytes'] / frames[-1] / 1e6:.3f} MB, "
          f"RGB {per_frame * bytes_per_point / 1e6:.2f} MB "
          f"({per_frame * bytes_per_point * frames[-1] / lr['bytes']:.0f}x)")
    print("times are medians over --repeats (log lines above also give the minimum); on a shared CPU they are noisy.")
    print(f"read speedup = (RGB rasterise at {H}x{W} + VAE encode) / latent readout at {h}x{w}, one view.")
    if encode is not None:
        print(f"VAE encode: {vae_desc}, random weights, measured {vae_repeats}x once and reused in every row "
              "(its cost does not depend on the cache size).")
    for n in sorted(notes):
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
