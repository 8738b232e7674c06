"""End-to-end rollout cost: latent memory vs the RGB point-cloud cache vs no memory, one run, same loop.

    python bench/rollout.py                     # CPU: tiny model (random weights), 128x192, 4 chunks
    python bench/rollout.py --device cuda       # GPU: Wan2.2-TI2V-5B shapes, random weights, 704x1280, bf16
    python bench/rollout.py --frames 17 --steps 4 --height 64 --width 96   # quick
    python bench/rollout.py --plot               # + 8-chunk series -> docs/images/rollout_efficiency_cpu.png
    python bench/rollout.py --plot --model mirage-tiny   # the shipped model at its own size (64x96)

Every variant runs :meth:`MirageWorldModel.rollout` on the same procedural room (``mirage.scenes``), the same
trajectory, seed and number of denoising steps:

* latent memory: ``LatentSpatialMemory`` read at latent resolution (one z-buffer pass per chunk), updated
  with each chunk's denoised latents back-projected at their frames' poses (``--memory-latents reencoded``:
  the decoded frames re-encoded as target-type latents instead);
* RGB cache: ``mirage.memory.RGBPointCloudMemory``: every chunk rasterises each
  target view at pixel resolution and VAE-encodes it (paper Eq. 2; ``encode_images``, target-type latents);
  updates store pixels;
* no memory: the same model without any readout or update (side branch skipped).

Each variant runs ``--repeats`` times, interleaved; the run with the median total is reported.
Depth of generated frames is the scene's ground truth, rendered before timing (an estimator would cost
the same in both memory variants). Times are seconds per generated frame, split by phase; peak memory is
``torch.cuda.max_memory_allocated`` per variant on a GPU (on CPU only the whole process's peak RSS is
printed). Prints a markdown table and ratios vs the RGB cache.

``--plot [PATH]`` (paper Figure 5): the same rollouts run ``--plot-chunks`` chunks (default 8) and record, after
every chunk, the wall time of that chunk per new frame, the time of that chunk's memory readouts per new frame
and the cache size (``memory.stats()["bytes"]``); each point is the median over the repeats. Writes a PNG
(matplotlib, the ``plot`` extra) of the three against the rollout length in chunks for the three variants, and the
series beside it as JSON
(default ``docs/images/rollout_efficiency_cpu.png``, ``..._gpu.png`` for the 5B shapes).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

from mirage.perception.depth import GivenDepth
from mirage.pipeline import PHASES, MirageWorldModel

VARIANTS = ("latent memory", "RGB cache", "no memory")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--model", default=None, help="a world model (built-in name, mirage-tiny, or a directory) at its "
                   "own image size unless --height/--width; default: random weights, tiny on CPU, 5B shapes on GPU")
    p.add_argument("--frames", type=int, default=None, help="frames per rollout (1 + s m for the model's temporal "
                   "stride s, 4 here); default 4 chunks")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's 20)")
    p.add_argument("--height", type=int, default=None, help="image height (default 128 CPU, 704 GPU)")
    p.add_argument("--width", type=int, default=None, help="image width (default 192 CPU, 1280 GPU)")
    p.add_argument("--chunks", type=int, default=None, help="chunks per rollout without --frames (4 CPU, 2 GPU)")
    p.add_argument("--scene-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=None, help="timed rollouts per variant, median reported "
                   "(3 CPU, 1 GPU: a 5B rollout takes about a minute)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: leave as is)")
    p.add_argument("--memory-latents", choices=("denoised", "reencoded"), default="denoised",
                   help="what a chunk writes to the latent memory (WorldModelConfig.memory_latents)")
    p.add_argument("--plot", nargs="?", const="", default=None, metavar="PATH",
                   help="also write the per-chunk plot (PNG) and its series (JSON); default path "
                        "docs/images/rollout_efficiency_<cpu|gpu>.png")
    p.add_argument("--plot-chunks", type=int, default=8, help="chunks per rollout with --plot (default 8)")
    return p.parse_args(argv)


def build_model(args, device: torch.device) -> MirageWorldModel:
    if args.model:
        size = {k: v for k, v in (("height", args.height), ("width", args.width)) if v}
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return MirageWorldModel.from_pretrained(args.model, device=device, torch_dtype=dtype,
                                                memory_latents=args.memory_latents, **size)
    if device.type == "cuda":
        overrides = dict(height=args.height or 704, width=args.width or 1280, memory_latents=args.memory_latents)
        return MirageWorldModel.from_pretrained("wan22_5b-random", device=device, torch_dtype=torch.bfloat16,
                                                **overrides)
    return MirageWorldModel.from_pretrained("tiny", height=args.height or 128, width=args.width or 192,
                                            memory_latents=args.memory_latents)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_variant(model, variant: str, K, c2w, depth, first, args, device):
    from mirage.memory import RGBPointCloudMemory

    memory, mode = None, "full"
    if variant == "latent memory":
        memory = model.new_memory(voxel_size=None)
    elif variant == "RGB cache":
        memory = RGBPointCloudMemory(model.encode_images, model.latent_channels, device=device)
    else:
        mode = "no_memory"
    if memory is not None:
        model.observe(memory, first, depth[0], K, c2w[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    series = []  # per finished chunk: (frames done, seconds elapsed, cache bytes, seconds in memory reads so far)
    read_seconds = [0.0]
    if memory is not None:  # time every readout (the RGB cache's rasterise + encode, the latent z-buffer)
        read = memory.read_batch

        def timed_read(*a, **k):
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            sync()
            t = time.perf_counter()
            out = read(*a, **k)
            sync()
            read_seconds[0] += time.perf_counter() - t
            return out

        memory.read_batch = timed_read

    def progress(p):
        if p.chunks_done > len(series):  # reported once per chunk, after its memory update
            series.append((p.frames_done, p.seconds_elapsed, memory.stats()["bytes"] if memory is not None else 0,
                           read_seconds[0]))

    result = model.rollout(memory, K, c2w, first_frame=first, seed=args.seed, num_inference_steps=args.steps,
                           mode=mode, progress=progress)
    cache_bytes = memory.stats()["bytes"] if memory is not None else 0
    return result, cache_bytes, peak_mib(device), chunk_series(series)


def chunk_series(series) -> dict[str, list[float]]:
    """[(frames done, seconds elapsed, cache bytes, read seconds so far)] per chunk -> {"seconds_per_frame": chunk
    k's seconds per new frame, "cache_mib": the cache after chunk k, "read_ms_per_frame": chunk k's memory readout
    milliseconds per new frame}. Chunk 1 includes seeding the memory with the first frame."""
    out = {"seconds_per_frame": [], "cache_mib": [], "read_ms_per_frame": []}
    frames0, t0, r0 = 1, 0.0, 0.0
    for frames, elapsed, cache, read in series:
        new = max(frames - frames0, 1)
        out["seconds_per_frame"].append((elapsed - t0) / new)
        out["cache_mib"].append(cache / 2**20)
        out["read_ms_per_frame"].append(1000 * (read - r0) / new)
        frames0, t0, r0 = frames, elapsed, read
    return out


def median_series(runs: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Point-wise median of several runs' series."""
    import statistics

    return {key: [statistics.median(values) for values in zip(*(r[key] for r in runs))] for key in runs[0]}


def write_plot(path: Path, series: dict[str, dict[str, list[float]]], title: str) -> Path:
    """PNG: seconds per frame and cache MiB against the rollout length (chunks), one line per variant."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(f"--plot needs matplotlib: pip install 'mirage[plot]' ({exc})") from None
    fig, (ax_t, ax_r, ax_m) = plt.subplots(1, 3, figsize=(14, 3.8))
    styles = {"latent memory": ("tab:blue", "o"), "RGB cache": ("tab:red", "s"), "no memory": ("tab:grey", "^")}
    for variant, s in series.items():
        chunks = list(range(1, len(s["seconds_per_frame"]) + 1))
        colour, marker = styles.get(variant, (None, "x"))
        ax_t.plot(chunks, s["seconds_per_frame"], marker=marker, color=colour, label=variant)
        ax_r.plot(chunks, s["read_ms_per_frame"], marker=marker, color=colour, label=variant)
        ax_m.plot(chunks, s["cache_mib"], marker=marker, color=colour, label=variant)
    ax_t.set(xlabel="rollout length (chunks)", ylabel="seconds per generated frame (that chunk)")
    ax_r.set(xlabel="rollout length (chunks)", ylabel="memory readout, ms per generated frame")
    ax_m.set(xlabel="rollout length (chunks)", ylabel="cache size (MiB)")
    ax_r.set_ylim(bottom=0)
    for ax in (ax_t, ax_r, ax_m):
        ax.grid(alpha=0.3)
        ax.set_xticks(chunks)
    ax_t.set_ylim(bottom=0)
    ax_m.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: the 5B benchmark needs a GPU; run without --device cuda for the tiny CPU one.")
        return 0
    if device.type == "cpu":
        print("No CUDA: tiny configuration on CPU (the full 5B configuration at 704x1280 runs with --device cuda).")

    from mirage.scenes import Scene

    gpu = device.type == "cuda"
    if args.plot is not None:
        if args.plot_chunks < 1:
            raise SystemExit(f"--plot-chunks must be >= 1, got {args.plot_chunks}")
        args.chunks = args.plot_chunks
    args.chunks = args.chunks or (2 if gpu else 4)
    args.repeats = args.repeats or (1 if gpu else 3)

    t0 = time.perf_counter()
    model = build_model(args, device)
    H, W = model.image_size
    s, window = model.temporal_stride, model.chunk_latent_frames
    new_per_chunk = s * (window - model.config.context_latent_frames)
    T = args.frames or 1 + s * (window - 1) + (args.chunks - 1) * new_per_chunk
    scene = Scene.random(args.scene_seed, num_objects=6)
    K = scene.default_intrinsics(H, W)
    c2w = scene.trajectory("forward", T)
    frames = scene.render_batch(K.to(device), c2w.to(device), H, W)  # renders where the tensors live
    depth = frames.depth.cpu()
    first = frames.rgb[0].cpu()
    steps = args.steps or model.config.num_inference_steps
    print(f"model: {model.backbone!r}; {H}x{W}, {T} frames in chunks of {model.chunk_frames}, {steps} steps, "
          f"memory latents {model.config.memory_latents} "
          f"(set up in {time.perf_counter() - t0:.1f} s)")

    model.depth_provider = GivenDepth(depth)
    warm_T = 1 + s * (window - 1)
    for variant in VARIANTS:  # warm-up: first calls allocate and (on GPU) pick kernels
        run_variant(model, variant, K, c2w[:warm_T], depth, first, argparse.Namespace(**{**vars(args), "steps": 1}),
                    device)

    runs = {variant: [] for variant in VARIANTS}
    for repeat in range(args.repeats):  # interleaved, so load changes on a shared machine hit all variants
        for variant in VARIANTS:
            out = run_variant(model, variant, K, c2w, depth, first, args, device)
            runs[variant].append(out)
            print(f"  run {repeat + 1}/{args.repeats} {variant}: {out[0].seconds_per_frame:.4f} s/frame",
                  file=sys.stderr)
    # the run with the median total time stands for each variant (its phases add up to its total)
    rows = {v: sorted(r, key=lambda o: o[0].seconds_per_frame)[len(r) // 2] for v, r in runs.items()}

    generated = T - 1
    print()
    print("| variant | s / frame | " + " | ".join(f"{p} (ms/frame)" for p in PHASES) +
          " | cache (MiB) | peak GPU (MiB) |")
    print("|" + " --- |" * (len(PHASES) + 4))
    for variant, (result, cache_bytes, peak, _) in rows.items():
        phases = " | ".join(f"{1000 * result.timings[p] / generated:.2f}" for p in PHASES)
        print(f"| {variant} | {result.seconds_per_frame:.4f} | {phases} | {cache_bytes / 2**20:.2f} | "
              f"{f'{peak:.0f}' if gpu else '-'} |")
    if not gpu:
        print(f"\n(CPU: no per-variant peak; the whole process peaked at {peak_mib(device):.0f} MiB RSS)")

    rgb, latent = rows["RGB cache"][0], rows["latent memory"][0]

    def memory_cost(r):
        return r.timings["memory_read"] + r.timings["memory_update"]

    print()
    print(f"- end to end: latent memory is {rgb.seconds_per_frame / latent.seconds_per_frame:.2f}x faster per "
          f"frame than the RGB cache ({rgb.seconds_per_frame:.4f} vs {latent.seconds_per_frame:.4f} s/frame)")
    print(f"- memory read: {rgb.timings['memory_read'] / max(latent.timings['memory_read'], 1e-9):.1f}x faster; "
          f"read + update: {memory_cost(rgb) / max(memory_cost(latent), 1e-9):.1f}x faster")
    print(f"- cache size: {rows['RGB cache'][1] / max(rows['latent memory'][1], 1):.1f}x smaller")
    nomem = rows["no memory"][0]
    print(f"- overhead of the latent memory over no memory: "
          f"{100 * (latent.seconds_per_frame / nomem.seconds_per_frame - 1):.1f}% per frame")
    if args.plot is not None:
        series = {v: median_series([r[3] for r in runs[v]]) for v in VARIANTS}
        print("\n| chunk | " + " | ".join(f"{v} s/frame | read ms/frame | MiB" for v in VARIANTS) + " |")
        print("|" + " --- |" * (1 + 3 * len(VARIANTS)))
        for k in range(len(series[VARIANTS[0]]["seconds_per_frame"])):
            cells = " | ".join(f"{series[v]['seconds_per_frame'][k]:.4f} | {series[v]['read_ms_per_frame'][k]:.2f} | "
                               f"{series[v]['cache_mib'][k]:.2f}" for v in VARIANTS)
            print(f"| {k + 1} | {cells} |")
        path = Path(args.plot or f"docs/images/rollout_efficiency_{'gpu' if gpu else 'cpu'}.png")
        threads = torch.get_num_threads()
        on = torch.cuda.get_device_name(device) if gpu else f"CPU, {threads} thread{'s' if threads != 1 else ''}"
        name = args.model or ("Wan2.2-TI2V-5B shapes (random weights)" if gpu else "tiny model (random weights)")
        where = f"{name}, {on}"
        title = f"{where}: {H}x{W}, {model.chunk_frames}-frame chunks, {steps} steps, median of {args.repeats} runs"
        write_plot(path, series, title)
        meta = {"title": title, "frames": T, "chunks": args.chunks, "steps": steps, "image_size": [H, W],
                "repeats": args.repeats, "device": str(device), "series": series}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(f"\nplot written to {path} (series: {path.with_suffix('.json')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
