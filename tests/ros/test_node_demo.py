"""The one-command ROS demo, shrunk: camera -> node -> goal -> PNG, MP4, PLY, side-by-side, summary."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_demo_writes_every_output(tmp_path):
    import imageio.v2 as imageio

    from mirage.memory.io import read_ply
    from mirage_ros.demo_client import add_arguments, main

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    domain = int(os.environ.get("ROS_DOMAIN_ID") or 0) or 1 + (os.getpid() + 7) % 100
    args = parser.parse_args(["--out", str(tmp_path / "demo"), "--frames", "8", "--height", "48", "--width", "64",
                              "--imagine-frames", "5", "--rate", "20", "--param", "steps:=1",
                              "--domain-id", str(domain)])
    assert main(args) == 0
    out = tmp_path / "demo"
    assert len(list((out / "imagined").glob("*.png"))) == 5 == len(list((out / "ground_truth").glob("*.png")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "mirage-tiny"  # the shipped weights are the embedded default
    h, w = summary["image_size"]
    frame = imageio.imread(out / "imagined" / "0000.png")
    assert frame.shape == (h, w, 3)
    video = imageio.mimread(out / "side_by_side.mp4")
    assert len(video) == 5 and video[0].shape[1] == 2 * video[0].shape[0] * w // h  # imagined | truth
    xyz, rgb = read_ply(out / "memory.ply")
    assert len(xyz) == summary["memory_points"] > 0 and np.isfinite(xyz).all()
    assert summary["frames_on_topic"] == 5 and summary["keyframes"] >= 1
    assert len(read_ply(out / "cloud.ply")[0]) > 0
