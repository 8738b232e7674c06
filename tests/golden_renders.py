"""The golden procedural renders: fixed seeds, fixed trajectories, stored as arrays in tests/data/.

``python tests/golden_renders.py`` rewrites ``tests/data/golden_scene_renders.npz`` (do it only when the rendering
maths changes on purpose, and say so in the commit). The file was first written from the renders whose sha256 the
single-module ``mirage/scenes.py`` produced before its split into the package (torch 2.13.0+cpu, Intel AVX-512,
one thread), so the package still renders what the old module rendered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mirage.scenes import Scene

GOLDEN = Path(__file__).resolve().parent / "data" / "golden_scene_renders.npz"
SEEDS = (0, 1, 2)
HEIGHT, WIDTH = 24, 32


def render_golden() -> dict[str, np.ndarray]:
    """{poses<s>, rgb<s>, depth<s>, dynamic<s>} for each seed: 12 frames of 4 trajectory kinds at 24x32."""
    out = {}
    for seed in SEEDS:
        scene = Scene.random(seed, num_objects=6, num_dynamic=2)
        poses = torch.cat([scene.trajectory(kind, 3, seed=1) for kind in ("forward", "turn", "orbit", "loop")])
        K = scene.default_intrinsics(HEIGHT, WIDTH)
        frames = scene.render_batch(K, poses, HEIGHT, WIDTH, times=torch.arange(12, dtype=torch.float32) / 4)
        out.update({f"poses{seed}": poses.numpy(), f"rgb{seed}": frames.rgb.numpy(),
                    f"depth{seed}": frames.depth.numpy(), f"dynamic{seed}": frames.dynamic.numpy()})
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.savez_compressed(GOLDEN, **render_golden())
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1024:.0f} KiB)")
