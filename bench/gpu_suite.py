"""One GPU suite: the 5B rollout with every speed option on and off, the readout kernel, the VAE, the RGB baseline.

    python bench/gpu_suite.py                      # one H100/H200: Wan2.2-TI2V-5B shapes, random weights, 704x1280
    python bench/gpu_suite.py --tiny               # the same code on CPU, tiny shapes (tests/test_gpu_suite.py)
    python bench/gpu_suite.py --variants baseline "readout kernel" --chunks 2

Writes ``<out-dir>/gpu_suite.json`` and ``<out-dir>/gpu_suite.md`` (default ``outputs/gpu_suite``) and prints the
table. Everything is measured in this one run, baselines included, and ratios are against those:

1. **readout**: the torch z-buffer (``rasterize``) against the Triton kernel (``mirage.ops.zbuffer_triton``, its
   best block size) for 0.1M / 1M / 4M random points in 1 / 9 views of the 44x80 latent grid, with exactness;
2. **VAE**: encode of a 33-frame clip and of one frame alone, decode of a clip, per frame;
3. **rollouts**: ``MirageWorldModel.rollout`` (the reference 33-frame chunks and 20 steps) with the baseline
   (per-token modulation as in diffusers, full 15-block side branch, torch readout, default attention, bf16 eager)
   and each option on: per-frame modulation, side branch over target tokens / over 8 blocks, readout kernel,
   SDPA backends, FP8 GEMMs, regional compile, then all of them together; and the RGB point-cloud baseline
   with the baseline options. Per variant: s/frame, phase split, denoise ms/step, peak GPU memory, warm-up
   (compilation) time, and the PSNR of its frames against the baseline's frames (same seed: the numeric
   effect of the option; "identical" when bit-equal).

The side branch's zero-initialised output projections get small random weights, so the memory changes the
output and the side-branch options show their numeric effect. A variant that fails (e.g. FP8 on CPU) is recorded
with its error; ``--budget-s`` skips variants once the run has used that much time. ``--tiny`` compiles with
torch.compile's "eager" backend (dynamo only: the same regional code path, no code generation) and runs the
kernel under Triton's interpreter.

(About 450 lines: one benchmark driver whose parts share the model, the scene and the baselines.)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch._dynamo

from mirage.camera import intrinsics_from_fov, look_at
from mirage.perception.depth import GivenDepth
from mirage.media import psnr_uint8
from mirage.models.acceleration import accelerate_transformer
from mirage.ops.zbuffer import rasterize as torch_rasterize
from mirage.pipeline import PHASES, MirageWorldModel

# Variants: name -> options. "best_sdpa" / "fp8" in the combined ones resolve to what worked in this run.
EXACT = dict(modulation="per_frame", readout_kernel=True)
VARIANTS = {  # in priority order: --budget-s skips from the end
    "baseline": {},
    "RGB cache (baseline options)": dict(memory="rgb"),
    "per-frame modulation": dict(modulation="per_frame"),
    "readout kernel": dict(readout_kernel=True),
    "side branch: target tokens only": dict(target_only=True),
    "side branch: first half of the blocks": dict(num_blocks="half"),
    "SDPA cuDNN": dict(sdpa_backend="cudnn"),
    "SDPA flash": dict(sdpa_backend="flash"),
    "FP8 GEMMs": dict(fp8=True),
    "regional compile": dict(compile="regional"),
    "all exact + compile + best SDPA": dict(EXACT, compile="regional", sdpa_backend="best"),
    "all + FP8": dict(EXACT, compile="regional", sdpa_backend="best", fp8=True),
    "all + FP8 + side branch targets, half the blocks": dict(EXACT, compile="regional", sdpa_backend="best",
                                                             fp8=True, target_only=True, num_blocks="half"),
    "SDPA efficient": dict(sdpa_backend="efficient"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU, tiny model and sizes (seconds; the test runs this)")
    p.add_argument("--device", default="auto")
    p.add_argument("--chunks", type=int, default=1, help="chunks per rollout (33 frames each on the 5B model)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's 20; 2 with --tiny)")
    p.add_argument("--repeats", type=int, default=1, help="timed rollouts per variant (median)")
    p.add_argument("--variants", nargs="+", default=None, help=f"subset of {list(VARIANTS)} (baseline always runs)")
    p.add_argument("--points", type=float, nargs="+", default=None, help="readout sizes (default 1e5 1e6 4e6)")
    p.add_argument("--views", type=int, nargs="+", default=None, help="readout views (default 1 9; 1 3 tiny)")
    p.add_argument("--budget-s", type=float, default=None, help="skip variants after this many seconds "
                   "(default 420 GPU, 300 tiny)")
    p.add_argument("--out-dir", default="outputs/gpu_suite")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def load_readout_kernel(device: torch.device):
    """(the Triton kernel module, None) or (None, why not). On CPU it must run under Triton's interpreter, which
    is chosen when the module is imported: TRITON_INTERPRET=1 is set for that import only."""
    name = "mirage.ops.zbuffer_triton"
    saved = os.environ.get("TRITON_INTERPRET")
    if name not in sys.modules and device.type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        return None, str(exc)
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved
    if device.type == "cpu" and not module.interpreted():
        return None, "the kernel module was imported compiled; CPU tensors need TRITON_INTERPRET=1 at import"
    return module, None


# ------------------------------------------------------------------------------------------- 1. readout
def readout_points(n: int, views: int, h: int, w: int, seed: int, device):
    """n points in front of the read camera (depth 1-5 m in 1 cm steps: many exact ties), and views cameras
    jittered around it: the 1M-points-into-3,520-cells contention of a grown memory."""
    g = torch.Generator().manual_seed(seed)
    K = intrinsics_from_fov(60.0, h, w)
    z = 1.0 + torch.randint(0, 400, (n,), generator=g).float() / 100
    u, v = torch.rand(n, generator=g) * w, torch.rand(n, generator=g) * h
    points = torch.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], dim=1)
    poses = [torch.eye(4)] + [look_at((torch.rand(3, generator=g) - 0.5) * 0.2, torch.tensor([0.0, 0.0, 3.0]),
                                      up=[0.0, -1.0, 0.0]).float() for _ in range(views - 1)]
    return points.to(device), K.expand(views, 3, 3).contiguous().to(device), torch.stack(poses).to(device)


def bench_readout(args, device, kernel, h=44, w=80):
    rows = []
    blocks = (1024,) if device.type == "cpu" else (256, 1024, 4096)
    repeats = 1 if device.type == "cpu" else 20
    for n in args.points:
        for views in args.views:
            points, K, poses = readout_points(int(n), views, h, w, args.seed, device)
            row = dict(points=int(n), views=views)
            row["torch_ms"] = timed_ms(lambda: torch_rasterize(points, K, poses, h, w), device, repeats)
            if kernel is None:
                row["kernel"] = "skipped: " + args.kernel_reason
            else:
                expected = torch_rasterize(points, K, poses, h, w)
                got = kernel.rasterize(points, K, poses, h, w, block_size=blocks[0])
                row["identical"] = bool(torch.equal(got[0], expected[0]) and
                                        torch.equal(got[1].view(torch.int32), expected[1].view(torch.int32)))
                times = {b: timed_ms(lambda b=b: kernel.rasterize(points, K, poses, h, w, block_size=b), device,
                                     repeats, warmup=1 if device.type == "cuda" else 0) for b in blocks}
                block, row["kernel_ms"] = min(times.items(), key=lambda kv: kv[1])
                row["kernel_block"] = kernel.effective_block_size(block, int(n), h, w)
                row["kernel_ms_by_block"] = times
                row["speedup"] = row["torch_ms"] / row["kernel_ms"]
            rows.append(row)
            print(f"readout {int(n):>9,} points x {views} views: torch {row['torch_ms']:.3f} ms"
                  + (f", kernel {row['kernel_ms']:.3f} ms (block {row['kernel_block']}, {row['speedup']:.1f}x, "
                     f"identical {row['identical']})" if "kernel_ms" in row else f", kernel {row['kernel']}"),
                  flush=True)
    return rows


# ----------------------------------------------------------------------------------------------- 2. VAE
def bench_vae(model, device, clip_frames: int) -> dict:
    H, W = model.image_size
    g = torch.Generator().manual_seed(0)
    clip = (torch.rand(1, 3, clip_frames, H, W, generator=g) * 2 - 1).to(device)
    repeats = 3 if device.type == "cuda" else 1
    bb = model.backbone
    with torch.no_grad():
        latents = bb.encode(clip)
        out = dict(clip_frames=clip_frames,
                   encode_clip_ms=timed_ms(lambda: bb.encode(clip), device, repeats),
                   encode_one_ms=timed_ms(lambda: bb.encode(clip[:, :, :1]), device, repeats),
                   decode_clip_ms=timed_ms(lambda: bb.decode(latents), device, repeats))
    out["encode_ms_per_frame"] = out["encode_clip_ms"] / clip_frames
    out["decode_ms_per_frame"] = out["decode_clip_ms"] / clip_frames
    print(f"VAE {H}x{W}: encode {out['encode_ms_per_frame']:.1f} ms/frame in a {clip_frames}-frame clip, "
          f"{out['encode_one_ms']:.1f} ms for one frame alone; decode {out['decode_ms_per_frame']:.1f} ms/frame",
          flush=True)
    return out


# ------------------------------------------------------------------------------------------ 3. rollouts
@contextlib.contextmanager
def configured(model, options: dict, kernel, compile_options: dict):
    """Apply a variant's options to ``model`` for the duration of the block, then restore the baseline."""
    original = model.transformer
    accel = {k: options[k] for k in ("compile", "sdpa_backend", "fp8") if options.get(k)}
    try:
        if accel:  # acceleration acts in place and can't be undone: on a copy of the transformer
            model.transformer = copy.deepcopy(original)
            accelerate_transformer(model.transformer, compile_options=compile_options, **accel)
        branch = model.transformer.side_branch
        model.transformer.modulation = options.get("modulation", "per_token")
        branch.set_inference_options(target_only=options.get("target_only", False),
                                     num_blocks=(len(branch.hint_blocks) + 1) // 2 if options.get("num_blocks")
                                     else None)
        if options.get("readout_kernel") and kernel is None:
            raise RuntimeError("readout kernel unavailable")
        yield
    finally:
        original.side_branch.set_inference_options()
        original.modulation = "per_token"
        model.transformer = original
        if model.device.type == "cuda":
            torch.cuda.empty_cache()


def new_memory(model, kind: str):
    if kind != "rgb":
        return model.new_memory(voxel_size=None)
    from mirage.memory import RGBPointCloudMemory

    return RGBPointCloudMemory(model.encode_images, model.latent_channels, device=model.device)


def run_rollout(model, scene_data, options, steps, seed):
    K, c2w, depth, first = scene_data
    memory = new_memory(model, options.get("memory", "latent"))
    # the baseline reads through the torch z-buffer; the "readout kernel" options through the Triton kernel
    memory.zbuffer_backend = "triton" if options.get("readout_kernel") else "torch"
    model.observe(memory, first, depth[0], K, c2w[0])
    device = model.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    result = model.rollout(memory, K, c2w, first_frame=first, seed=seed, num_inference_steps=steps)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return result, peak, memory.stats()["bytes"]


def bench_rollouts(args, model, scene_data, kernel, device) -> dict:
    steps = args.steps or model.config.num_inference_steps
    chunks = args.chunks
    generated = scene_data[1].shape[0] - 1
    # GPU: graph breaks (e.g. in an attention backend) are tolerated and counted rather than fatal
    compile_options = {"backend": "eager"} if args.tiny else {"fullgraph": False}
    names = ["baseline"] + [v for v in (args.variants or VARIANTS) if v != "baseline"]
    rows, baseline_frames = {}, None
    for name in names:
        options = dict(VARIANTS[name])
        if options.get("sdpa_backend") == "best":
            options["sdpa_backend"] = best_sdpa(rows)
        dropped = []
        if options.get("fp8") and "error" in rows.get("FP8 GEMMs", {}):
            options.pop("fp8")  # FP8 failed alone: the combination runs without it
            dropped.append("fp8 (failed alone)")
        if time.perf_counter() - args.start > args.budget_s:
            rows[name] = dict(options=options, error=f"skipped: over the --budget-s {args.budget_s:.0f} s")
            continue
        row = dict(options=options, dropped=dropped, warmup_s=0.0)
        warmup = name == "baseline" or any(options.get(k) for k in ("compile", "sdpa_backend", "fp8",
                                                                    "readout_kernel", "memory"))
        breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
        try:
            with configured(model, options, kernel, compile_options):
                if warmup:  # first calls: compilation, kernel selection, allocator growth
                    t0 = time.perf_counter()
                    run_rollout(model, scene_data, options, 1, args.seed)
                    row["warmup_s"] = time.perf_counter() - t0
                runs = [run_rollout(model, scene_data, options, steps, args.seed) for _ in range(args.repeats)]
            row["graph_breaks"] = sum(torch._dynamo.utils.counters["graph_break"].values()) - breaks
            result, peak, cache_bytes = sorted(runs, key=lambda r: r[0].seconds_per_frame)[len(runs) // 2]
        except Exception as exc:  # noqa: BLE001 - recorded, the suite goes on
            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
            rows[name] = row
            print(f"rollout {name}: FAILED {row['error']}", flush=True)
            continue
        row.update(s_per_frame=result.seconds_per_frame, peak_mib=peak, cache_mib=cache_bytes / 2**20,
                   phases_ms_per_frame={p: 1e3 * result.timings.get(p, 0.0) / generated for p in PHASES},
                   denoise_ms_per_step=1e3 * result.timings.get("denoise", 0.0) / (chunks * steps))
        if name == "baseline":
            baseline_frames = result.frames
        if baseline_frames is not None:
            row["identical_to_baseline"] = bool(np.array_equal(result.frames, baseline_frames))
            row["psnr_vs_baseline_db"] = psnr_uint8(result.frames, baseline_frames)
            row["max_level_diff_vs_baseline"] = int(np.abs(result.frames.astype(np.int16)
                                                           - baseline_frames.astype(np.int16)).max())
        rows[name] = row
        print(f"rollout {name}: {row['s_per_frame']:.4f} s/frame, denoise {row['denoise_ms_per_step']:.1f} ms/step, "
              f"warm-up {row['warmup_s']:.1f} s, PSNR vs baseline {row.get('psnr_vs_baseline_db', float('nan')):.1f} "
              "dB" + (" (identical)" if row.get("identical_to_baseline") else ""), flush=True)
    base = rows["baseline"].get("s_per_frame")
    for row in rows.values():
        if base and "s_per_frame" in row:
            row["speedup_vs_baseline"] = base / row["s_per_frame"]
    return rows


def best_sdpa(rows: dict) -> str | None:
    timed = {rows[n]["options"]["sdpa_backend"]: rows[n]["s_per_frame"] for n in rows
             if n.startswith("SDPA") and "s_per_frame" in rows[n]}
    default = rows.get("baseline", {}).get("s_per_frame", math.inf)
    best = min(timed.items(), key=lambda kv: kv[1], default=(None, math.inf))
    return best[0] if best[1] < default else None


# --------------------------------------------------------------------------------------------- driver
def build(args, device):
    if args.tiny:  # two hint blocks, so "half the blocks" is a real option
        model = MirageWorldModel.from_pretrained("tiny", injection_layers=[0, 1])
    else:
        model = MirageWorldModel.from_pretrained("wan22_5b-random", device=device, torch_dtype=torch.bfloat16,
                                                 height=704, width=1280)
    g = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():  # a live side branch: its skips change the output, so its options show an effect
        for block in model.transformer.side_branch.hint_blocks:
            for proj in (block.proj_in, block.proj_out):
                if proj is not None:
                    proj.weight.copy_(torch.randn(proj.weight.shape, generator=g) * 0.02 / math.sqrt(proj.in_features))
    from mirage.scenes import Scene

    H, W = model.image_size
    stride = model.temporal_stride
    new_per_chunk = stride * (model.chunk_latent_frames - model.config.context_latent_frames)
    T = 1 + stride * (model.chunk_latent_frames - 1) + (args.chunks - 1) * new_per_chunk
    scene = Scene.random(args.seed, num_objects=6)
    K = scene.default_intrinsics(H, W)
    c2w = scene.trajectory("forward", T)
    frames = scene.render_batch(K.to(device), c2w.to(device), H, W)
    depth = frames.depth.cpu()
    model.depth_provider = GivenDepth(depth)
    model.transformer.modulation = "per_token"
    return model, (K, c2w, depth, frames.rgb[0].cpu())


def main(argv=None) -> int:
    args = parse_args(argv)
    args.start = time.perf_counter()
    device = torch.device("cpu" if args.tiny else ("cuda" if args.device == "auto" and torch.cuda.is_available()
                                                   else args.device if args.device != "auto" else "cpu"))
    if device.type != "cuda" and not args.tiny:
        print("No CUDA device: the 5B suite needs a GPU; run with --tiny for the CPU version of the same code.")
        return 0
    args.points = args.points or ([256, 1024] if args.tiny else [1e5, 1e6, 4e6])
    args.views = args.views or ([1, 3] if args.tiny else [1, 9])
    args.steps = args.steps or (2 if args.tiny else None)
    args.budget_s = args.budget_s or (300.0 if args.tiny else 420.0)
    unknown = [v for v in (args.variants or []) if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    report = dict(device=where, torch=torch.__version__, tiny=args.tiny, args={k: v for k, v in vars(args).items()
                                                                              if k != "start"})
    print(f"gpu_suite on {where}, torch {torch.__version__}", flush=True)

    kernel, args.kernel_reason = load_readout_kernel(device)
    report["readout"] = bench_readout(args, device, kernel)
    model, scene_data = build(args, device)
    H, W = model.image_size
    report["model"] = dict(name=repr(model.backbone), image=f"{H}x{W}", chunk_frames=model.chunk_frames,
                           frames=int(scene_data[1].shape[0]), steps=args.steps or model.config.num_inference_steps,
                           hint_blocks=len(model.transformer.side_branch.hint_blocks))
    report["vae"] = bench_vae(model, device, model.chunk_frames)
    report["rollouts"] = bench_rollouts(args, model, scene_data, kernel, device)
    report["elapsed_s"] = time.perf_counter() - args.start

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_suite.json").write_text(json.dumps(report, indent=2, default=str))
    table = markdown(report)
    (out / "gpu_suite.md").write_text(table)
    print("\n" + table)
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} in {report['elapsed_s']:.0f} s")
    return 0


def markdown(report: dict) -> str:
    m = report["model"]
    lines = [f"GPU suite on {report['device']} (torch {report['torch']}): {m['name']}, {m['image']}, "
             f"{m['frames']} frames in chunks of {m['chunk_frames']}, {m['steps']} steps, {m['hint_blocks']} hint "
             f"blocks; random weights.", "",
             "| variant | s / frame | x baseline | " + " | ".join(f"{p} ms/frame" for p in PHASES) +
             " | denoise ms/step | peak MiB | warm-up s | PSNR vs baseline (dB) |",
             "|---" * (len(PHASES) + 7) + "|"]
    for name, r in report["rollouts"].items():
        if "s_per_frame" not in r:
            lines.append(f"| {name} | {r.get('error', 'not measured')} |" + " |" * (len(PHASES) + 5))
            continue
        psnr = ("identical" if r.get("identical_to_baseline") else
                f"{r['psnr_vs_baseline_db']:.1f}" if "psnr_vs_baseline_db" in r else "-")
        lines.append(f"| {name} | {r['s_per_frame']:.4f} | {r.get('speedup_vs_baseline', float('nan')):.2f} | "
                     + " | ".join(f"{r['phases_ms_per_frame'][p]:.1f}" for p in PHASES)
                     + f" | {r['denoise_ms_per_step']:.1f} | "
                     f"{'-' if math.isnan(r['peak_mib']) else round(r['peak_mib'])} | {r['warmup_s']:.1f} | {psnr} |")
    rollouts = report["rollouts"]
    latent, rgb = rollouts.get("baseline", {}), rollouts.get("RGB cache (baseline options)", {})
    if "s_per_frame" in latent and "s_per_frame" in rgb:
        def memory_ms(r):
            return r["phases_ms_per_frame"]["memory_read"] + r["phases_ms_per_frame"]["memory_update"]
        lines += ["", f"- latent memory vs RGB cache (same options): {rgb['s_per_frame'] / latent['s_per_frame']:.2f}x "
                  f"per frame end to end; memory read + update {memory_ms(rgb) / max(memory_ms(latent), 1e-9):.1f}x; "
                  f"cache {rgb['cache_mib']:.2f} vs {latent['cache_mib']:.2f} MiB"]
        fastest = min((r for r in rollouts.values() if "s_per_frame" in r), key=lambda r: r["s_per_frame"])
        lines.append(f"- fastest variant vs RGB cache: {rgb['s_per_frame'] / fastest['s_per_frame']:.2f}x per frame")
    lines += ["", "| readout points | views | torch ms | kernel ms (block) | x torch | identical |",
              "|---:|---:|---:|---:|---:|---|"]
    for r in report["readout"]:
        kernel = (f"{r['kernel_ms']:.3f} ({r['kernel_block']}) | {r['speedup']:.1f} | {r['identical']}"
                  if "kernel_ms" in r else f"{r['kernel']} | - | -")
        lines.append(f"| {r['points']:,} | {r['views']} | {r['torch_ms']:.3f} | {kernel} |")
    if report["tiny"]:
        lines.append("\n(--tiny on CPU: the kernel runs under Triton's interpreter, so its times measure Python, "
                     "not the kernel; only the exactness column means something.)")
    v = report["vae"]
    lines += ["", f"VAE per frame: encode {v['encode_ms_per_frame']:.1f} ms (in a {v['clip_frames']}-frame clip; "
              f"one frame alone {v['encode_one_ms']:.1f} ms), decode {v['decode_ms_per_frame']:.1f} ms.",
              f"Run time {report['elapsed_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
