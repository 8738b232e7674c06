#!/usr/bin/env python3
"""Make the small TUM RGB-D slice committed under tests/data/ from a full sequence (reproducible).

    python scripts/make_tum_slice.py /work/data/tum/rgbd_dataset_freiburg1_rpy tests/data/tum_fr1_rpy_slice \
        --first 100 --count 36 --step 4 --scale 4

Takes ``count`` rgb/depth pairs, associated as the benchmark does (:func:`mirage.data.tum.associate`), every
``step``-th pair from pair ``first``, shrinks them by ``scale`` (colour: area average; depth: nearest, values
untouched, so 0 stays "no reading" and 5000 units stay a metre) and writes them in the TUM layout: rgb/, depth/
(16-bit PNG), rgb.txt and depth.txt with the original stamps, and the ground-truth lines from 0.1 s before the
first frame to 0.1 s after the last. The images stay distorted (as recorded); the loader undistorts them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from mirage.data.tum import associate, read_tum_list

HEADER = "# {what}\n# file: '{bag}.bag' (slice: {note})\n# timestamp {columns}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a full TUM sequence directory")
    parser.add_argument("out", type=Path, help="slice directory to create")
    parser.add_argument("--first", type=int, default=100, help="first associated pair")
    parser.add_argument("--count", type=int, default=36)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--scale", type=int, default=4, help="shrink factor (640x480 / 4 = 160x120)")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; remove it first", file=sys.stderr)
        return 2
    rgb_stamps, rgb_rows = read_tum_list(args.source / "rgb.txt", 2)
    depth_stamps, depth_rows = read_tum_list(args.source / "depth.txt", 2)
    pairs = associate(rgb_stamps, depth_stamps)[args.first::args.step][: args.count]
    if len(pairs) < args.count:
        print(f"only {len(pairs)} pairs from pair {args.first} with step {args.step}", file=sys.stderr)
        return 2
    for sub in ("rgb", "depth"):
        (args.out / sub).mkdir(parents=True)
    note = f"pairs {args.first}::{args.step}, {args.count} frames, 1/{args.scale} size"
    bag = args.source.resolve().name
    rgb_lines = [HEADER.format(what="color images", bag=bag, note=note, columns="filename")]
    depth_lines = [HEADER.format(what="depth maps", bag=bag, note=note, columns="filename")]
    for i, j in pairs:
        rgb = cv2.imread(str(args.source / rgb_rows[i][0]), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(args.source / depth_rows[j][0]), cv2.IMREAD_UNCHANGED)
        h, w = rgb.shape[0] // args.scale, rgb.shape[1] // args.scale
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        assert depth.dtype == np.uint16
        rgb_name, depth_name = f"rgb/{rgb_stamps[i]:.6f}.png", f"depth/{depth_stamps[j]:.6f}.png"
        cv2.imwrite(str(args.out / rgb_name), rgb, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        cv2.imwrite(str(args.out / depth_name), depth, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        rgb_lines.append(f"{rgb_stamps[i]:.6f} {rgb_name}\n")
        depth_lines.append(f"{depth_stamps[j]:.6f} {depth_name}\n")
    t0, t1 = rgb_stamps[pairs[0][0]] - 0.1, rgb_stamps[pairs[-1][0]] + 0.1
    gt = [line for line in (args.source / "groundtruth.txt").read_text().splitlines(keepends=True)
          if line.startswith("#") or (line.split() and t0 <= float(line.split()[0]) <= t1)]
    (args.out / "rgb.txt").write_text("".join(rgb_lines))
    (args.out / "depth.txt").write_text("".join(depth_lines))
    (args.out / "groundtruth.txt").write_text("".join(gt))
    print(f"wrote {len(pairs)} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
