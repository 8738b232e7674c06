"""``mirage eval``: novel-view and closed-loop evaluation of the memory methods on held-out synthetic scenes.

Example::

    mirage eval --model mirage-tiny --methods latent rgb_cache none reprojection --scenes 8 --frames medium \\
        --output runs/eval
    mirage eval --model mirage-tiny --protocol memory --methods latent,shuffled,empty,none,rgb_cache \\
        --scenes 6 --output runs/eval-memory

    mirage eval --model mirage-tiny --protocol memory --variants all --scenes 6 --output runs/eval-ablations

``--protocol loop`` (default) is the out-and-back protocol seeded with the first frame; ``--protocol memory``
evaluates held-out memory tasks (:mod:`mirage.data.memory_task`: memory from an earlier pass, 33-frame
excursions out of view, metrics on the returning frames that need memory, conditioning frame excluded).

``--data tum:DIR`` runs the memory protocol on a TUM RGB-D sequence (:func:`mirage.data.tum.tum_memory_tasks`):
the memory from frames of the sequence's first part, ``--scenes`` later windows of ``--frames`` frames (every
``--frame-stride``-th) chosen where most of what they show is outside their first frame's view but in the memory::

    mirage eval --model mirage-tiny --data tum:/data/rgbd_dataset_freiburg1_rpy --scenes 4 --frame-stride 2 \
        --output runs/eval-tum

``tum:DIR@START:END`` restricts memory and windows to the sequence's frames ``START .. END - 1`` (a held-out part,
e.g. ``@415:`` for the part mirage-tiny's real-data fine-tune never saw); ``--memory-fraction`` is then a share of
that part.

``--variants`` runs the ablations of :mod:`mirage.eval.variants` (the full method and each variant, on the same
clips and seeds; without ``--methods`` only those rows). Every row is also scored for 3D and photometric
consistency (:mod:`mirage.eval.consistency`; ``--no-consistency`` skips it).
"""

from __future__ import annotations

import argparse
import logging
import sys

from mirage.eval.closed_loop import FRAME_PRESETS, PROTOCOLS
from mirage.eval.methods import ALL_METHODS, MEMORY_METHODS, METHODS

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny", help="world model: built-in name or trained directory")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="loop",
                        help="loop: out-and-back from the first frame; memory: earlier pass + excursions out of view")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"any of {', '.join(ALL_METHODS)} (space or comma separated); default: "
                             f"{' '.join(METHODS)} (loop), {' '.join(MEMORY_METHODS)} (memory)")
    parser.add_argument("--scenes", type=int, default=4, help="held-out synthetic scenes (default 4)")
    parser.add_argument("--frames", default=None,
                        help="out-and-back length: small (9), medium (17), large (33) or an odd 1 + 4k number "
                             "(default: medium for loop, large for memory)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="ablation rows beside the full method: all, or any of "
                             "rgb_point_cloud pixel_lift no_dynamic_filter single_stage depth_readout depth_mono "
                             "depth_noise (space or comma separated)")
    parser.add_argument("--excursions", nargs="+", default=None,
                        help="memory protocol: excursion kinds (default: all of turn_out_back walk_and_turn "
                             "walk_past_occluder)")
    parser.add_argument("--single-stage-model", help="variant single_stage: a model trained with side branch and "
                                                     "LoRA together from the start (skipped when absent)")
    parser.add_argument("--depth-model", help="variant depth_mono: a local Depth Anything directory (else "
                                              "$MIRAGE_DEPTH_MODEL; skipped when absent)")
    parser.add_argument("--depth-noise", type=float, nargs="+", default=[0.05, 0.2],
                        help="variant depth_noise: sigmas of the per-latent-cell log-normal depth noise")
    parser.add_argument("--no-consistency", action="store_true", help="skip the 3D / photometric consistency scores")
    parser.add_argument("--consistency-detector", choices=("sift", "orb"), default="sift")
    parser.add_argument("--earlier-frames", type=int, default=16, help="memory protocol: frames of the earlier pass")
    parser.add_argument("--min-needs-memory", type=float, default=None,
                        help="memory protocol: resample a path whose returning frames need memory less than this")
    parser.add_argument("--data", default="synthetic", metavar="synthetic|re10k|tum:DIR[@START:END]",
                        help="held-out synthetic scenes (default), RealEstate10K-format clips (novel view only), or "
                             "a TUM RGB-D sequence directory (tum:DIR, the memory protocol on real frames: memory "
                             "from the first part, --scenes later windows that look back at seen places; @START:END: "
                             "only the frames START..END-1, e.g. a held-out part)")
    parser.add_argument("--data-root", help="RealEstate10K-format folder (--data re10k)")
    parser.add_argument("--frame-stride", type=int, default=1, help="re10k, tum: take every n-th frame")
    parser.add_argument("--memory-fraction", type=float, default=0.5,
                        help="tum: share of the sequence (or of its @START:END part, from its start) the memory "
                             "frames come from")
    parser.add_argument("--tum-camera", default=None,
                        help="tum: calibration (fr1, fr2, fr3, ros_default; default: from the directory name)")
    parser.add_argument("--paths", nargs="+", default=["forward", "turn", "orbit"], help="outgoing path kinds")
    parser.add_argument("--num-dynamic", type=int, default=None,
                        help="moving objects per scene (default 0; 1 when the variants include no_dynamic_filter)")
    parser.add_argument("--scene-seed", type=int, help="first scene seed (default: the held-out range)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, help="override the model's image height")
    parser.add_argument("--width", type=int, help="override the model's image width")
    parser.add_argument("--estimated-depth", action="store_true",
                        help="depth of generated frames from the model's depth provider instead of ground truth")
    parser.add_argument("--lpips-dir", help="local LPIPS weights (else $MIRAGE_LPIPS_DIR; skipped when absent)")
    parser.add_argument("--no-videos", action="store_true")
    parser.add_argument("--output", required=True, help="directory for results.md, results.json, videos/")
    parser.add_argument("--no-progress", action="store_true")


def _frames(text: str) -> int:
    if text in FRAME_PRESETS:
        return FRAME_PRESETS[text]
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--frames must be one of {list(FRAME_PRESETS)} or a number, got {text!r}") from None
    if n < 5 or (n - 1) % 4 or n % 2 == 0:
        raise ValueError(f"--frames must be 1 + 4k with k >= 1 (odd, out-and-back), got {n}")
    return n


def _split_variants(args) -> tuple[list[str], list[str]]:
    """(ablation names, excursion kinds): excursion kinds given to --variants (its meaning before the ablations)
    still work, with a warning."""
    from mirage.data.excursions import VARIANTS as EXCURSIONS

    given = [v for text in (args.variants or []) for v in text.split(",") if v]
    old = [v for v in given if v in EXCURSIONS]
    if old:
        print(f"mirage eval: --variants {' '.join(old)}: excursion kinds moved to --excursions", file=sys.stderr)
    return [v for v in given if v not in EXCURSIONS], (args.excursions or []) + old


def _methods(args, ablations: bool = False) -> list[str]:
    if args.methods is None:
        if ablations:
            return []
        return list(MEMORY_METHODS if args.protocol == "memory" else METHODS)
    names = [m for text in args.methods for m in text.split(",") if m]
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown or not names:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(ALL_METHODS)}")
    return names


def _memory_tasks(args, frames: int, image_size, seed0: int, excursions=None) -> list:
    from mirage.eval.closed_loop import memory_evaluation_tasks

    kw = {} if args.min_needs_memory is None else {"min_needs_memory": args.min_needs_memory}
    return memory_evaluation_tasks(args.scenes, image_size, frames, seed=seed0, variants=excursions or None,
                                   earlier_frames=args.earlier_frames, num_dynamic=args.num_dynamic, **kw)


def _data_source(text: str) -> tuple[str, str | None]:
    """``--data`` -> (kind, directory): synthetic, re10k, or tum with its directory."""
    if text in ("synthetic", "re10k"):
        return text, None
    if text.startswith("tum:") and len(text) > 4:
        return "tum", text[4:]
    raise ValueError(f"--data must be synthetic, re10k or tum:DIR[@START:END] (a TUM RGB-D sequence directory), "
                     f"got {text!r}")


def _tum_tasks(args, directory: str, frames: int, image_size) -> tuple[list, str]:
    from mirage.data.tum import TUMSequence, parse_tum_source, tum_memory_tasks

    root, part = parse_tum_source(directory)
    sequence = TUMSequence(root, camera=args.tum_camera, frames=part)
    kw = {} if args.min_needs_memory is None else {"min_needs_memory": args.min_needs_memory}
    tasks = tum_memory_tasks(sequence, image_size, args.scenes, frames, args.frame_stride, args.memory_fraction,
                             args.earlier_frames, **kw)
    skipped = "; ".join(f"{n} {why}" for why, n in sequence.skipped.items()) or "none"
    first = sequence.first_frame
    frames_text = "" if part is None else f" {first}..{first + len(sequence) - 1}"
    source = (f"TUM RGB-D {sequence.name} ({len(sequence)} associated frames{frames_text}, camera "
              f"{sequence.camera.name}"
              f"{', undistorted' if sequence.undistort else ''}; left out: {skipped}); memory from "
              f"{tasks[0].earlier.num_frames} frames of the first {args.memory_fraction:g}; windows starting at frames "
              f"{[t.room_seed for t in tasks]}, stride {args.frame_stride}")
    return tasks, source


def _re10k_clips(args, frames: int, image_size) -> list:
    from mirage.data.re10k import RealEstate10KDataset

    if not args.data_root:
        raise ValueError("--data re10k needs --data-root")
    dataset = RealEstate10KDataset(args.data_root, num_frames=frames, image_size=image_size,
                                   frame_stride=args.frame_stride)
    if len(dataset) == 0:
        raise ValueError(f"no usable clip in {args.data_root}")
    return [dataset[i] for i in range(min(len(dataset), args.scenes))]


def main(args) -> int:
    from mirage.data.synthetic import EVAL_SEED_OFFSET
    from mirage.eval.closed_loop import evaluation_clips
    from mirage.eval.evaluate import evaluate
    from mirage.eval.consistency import CONSISTENCY_HIGHER_IS_BETTER, CONSISTENCY_METRICS
    from mirage.eval.report import markdown_table
    from mirage.eval.variants import load_variant_resources, variant_specs
    from mirage.train.export import load_world_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        data, data_dir = _data_source(args.data)
        if data == "tum":
            args.protocol = "memory"  # real frames: memory from the sequence's first part, later windows
        ablations, excursions = _split_variants(args)
        specs = variant_specs(ablations, args.depth_noise) if ablations else []
        methods = _methods(args, ablations=bool(specs))
        if args.num_dynamic is None:
            args.num_dynamic = 1 if any(not s.dynamic_filter for s in specs) else 0
        frames = _frames(args.frames or ("large" if args.protocol == "memory" else "medium"))
        if args.protocol == "memory" and data == "re10k":
            raise ValueError("--protocol memory runs on synthetic rooms or a TUM sequence (it needs an earlier pass)")
        sizes = {k: getattr(args, k) for k in ("height", "width") if getattr(args, k) is not None}
        world_model = load_world_model(args.model, **sizes)
        specs, resources, skipped = load_variant_resources(specs, world_model, args.single_stage_model,
                                                           args.depth_model)
        for name, reason in skipped.items():
            print(f"mirage eval: variant {name} skipped: {reason}", file=sys.stderr)
        seed0 = EVAL_SEED_OFFSET if args.scene_seed is None else args.scene_seed
        if data == "tum":
            clips, source = _tum_tasks(args, data_dir, frames, world_model.image_size)
        elif args.protocol == "memory":
            clips = _memory_tasks(args, frames, world_model.image_size, seed0, excursions)
            source = f"memory tasks in synthetic room seeds {seed0}..{seed0 + args.scenes - 1}"
        elif data == "re10k":
            clips = _re10k_clips(args, frames, world_model.image_size)
            source = f"re10k {args.data_root} ({len(clips)} clips)"
        else:
            clips = evaluation_clips(args.scenes, frames, world_model.image_size, seed=seed0, paths=args.paths,
                                     num_dynamic=args.num_dynamic)
            source = f"synthetic scene seeds {seed0}..{seed0 + args.scenes - 1}"
        settings = {"model": str(args.model), "protocol": args.protocol, "data": source,
                    "moving objects per scene": args.num_dynamic}
        if args.single_stage_model:
            settings["single-stage model"] = args.single_stage_model
        out = evaluate(world_model, clips, args.output, methods, num_inference_steps=args.steps, seed=args.seed,
                       gt_depth=not args.estimated_depth, lpips_dir=args.lpips_dir, videos=not args.no_videos,
                       settings=settings, progress=not args.no_progress, variants=specs, variant_resources=resources,
                       skipped_variants=skipped, consistency=not args.no_consistency,
                       consistency_detector=args.consistency_detector)
    except (ValueError, FileNotFoundError) as exc:
        print(f"mirage eval: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(out["table"], out["notes"]))
    if out["consistency"] is not None:
        print(markdown_table(out["consistency"], out["consistency_notes"], CONSISTENCY_METRICS,
                             CONSISTENCY_HIGHER_IS_BETTER))
    print(f"written to {args.output}/results.md, results.json" + ("" if args.no_videos else ", videos/"))
    return 0
