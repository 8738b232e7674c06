import warnings

import cv2
import numpy as np
import pytest
import torch

from mirage.camera import invert_pose, look_at
from mirage.data import ClipSkippedWarning, RealEstate10KDataset, parse_camera_file, write_camera_file

H0, W0 = 48, 64  # stored frames (4:3); loaded at 32x32 -> centre crop of 48x48


def _poses(n):
    return torch.stack([look_at((0.1 * i, 0.0, 0.0), (0.1 * i, 0.0, 5.0), up=(0.0, -1.0, 0.0)) for i in range(n)])


def _make_clip(root, name, n=9, depth="npy", masks=True, video=False):
    cams = root / "cameras"
    cams.mkdir(parents=True, exist_ok=True)
    K = torch.tensor([[40.0, 0, 32.0], [0, 40.0, 24.0], [0, 0, 1]]).expand(n, 3, 3)
    stamps = [1000 + 33366 * i for i in range(n)]
    write_camera_file(cams / f"{name}.txt", stamps, K, _poses(n), (H0, W0), url="https://example.com/v")
    frames = []
    for i, ts in enumerate(stamps):
        img = np.zeros((H0, W0, 3), np.uint8)
        img[..., 0] = 20 * i  # red encodes the frame index
        img[:, :8, 1] = 255  # a green band on the left, cropped away by the centre crop
        frames.append(img)
        if not video:
            (root / "frames" / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "frames" / name / f"{ts}.png"), img[..., ::-1])
        if depth:
            (root / "depth" / name).mkdir(parents=True, exist_ok=True)
            d = np.full((H0, W0), 2.0 + i, np.float32)
            if depth == "npy":
                np.save(root / "depth" / name / f"{ts}.npy", d)
            else:
                cv2.imwrite(str(root / "depth" / name / f"{ts}.png"), (d * 1000).astype(np.uint16))
        if masks:
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            m = np.zeros((H0, W0), np.uint8)
            m[:, W0 // 2:] = 255
            cv2.imwrite(str(root / "masks" / name / f"{ts}.png"), m)
    if video:
        (root / "videos").mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(root / "videos" / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W0, H0))
        for img in frames:
            writer.write(img[..., ::-1].copy())
        writer.release()
    return stamps


def test_parse_round_trip(tmp_path):
    stamps = _make_clip(tmp_path, "a")
    track = parse_camera_file(tmp_path / "cameras" / "a.txt")
    assert track.url == "https://example.com/v" and track.timestamps.tolist() == stamps
    assert np.allclose(track.intrinsics_normalized[0], [40 / 64, 40 / 48, 0.5, 0.5])
    assert torch.allclose(track.cam_to_world(), _poses(9), atol=1e-5)
    assert torch.allclose(invert_pose(track.cam_to_world()).double(), torch.from_numpy(track.world_to_camera),
                          atol=1e-5)


def test_loads_hand_made_clip(tmp_path):
    _make_clip(tmp_path, "a")
    ds = RealEstate10KDataset(tmp_path, num_frames=5, image_size=(32, 32), frame_stride=2)
    assert len(ds) == 1
    clip = ds[0]
    assert clip.rgb.shape == (5, 3, 32, 32) and clip.name == "a@0"
    # frame stride 2: frames 0, 2, 4, 6, 8 -> red 0, 40, ..., 160
    assert np.allclose(clip.rgb[:, 0].mean((1, 2)).numpy() * 255, [0, 40, 80, 120, 160], atol=1)
    assert clip.rgb[:, 1].max() == 0  # the green band lies outside the centre crop
    # 48x48 crop of a 64-wide frame, resized to 32: f = 40 * 32/48, principal point at the centre
    assert torch.allclose(clip.intrinsics[0], torch.tensor([[40 * 32 / 48, 0, 16], [0, 40 * 32 / 48, 16], [0, 0, 1]]),
                          atol=1e-4)
    assert torch.allclose(clip.cam_to_world, _poses(9)[::2], atol=1e-5)
    assert torch.allclose(clip.depth[:, 0, 0], torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0]))
    assert clip.dynamic.dtype == torch.bool and clip.dynamic[0, :, :15].sum() == 0 and clip.dynamic[0, :, 17:].all()


def test_windows_png_depth_and_video(tmp_path):
    _make_clip(tmp_path, "v", depth="png", masks=False, video=True)
    ds = RealEstate10KDataset(tmp_path, num_frames=5, image_size=(32, 32), windows_per_clip=3)
    assert len(ds) == 3 and [ds.window(i)[1][0] for i in range(3)] == [0, 2, 4]
    clip = ds[2]
    assert clip.name == "v@4" and clip.dynamic is None
    assert np.allclose(clip.rgb[:, 0].mean((1, 2)).numpy() * 255, [80, 100, 120, 140, 160], atol=4)
    assert torch.allclose(clip.depth[:, 5, 5], torch.tensor([6.0, 7.0, 8.0, 9.0, 10.0]))


def test_depth_provider_used_when_no_depth_files(tmp_path):
    _make_clip(tmp_path, "a", depth=None)
    with pytest.warns(ClipSkippedWarning, match="no depth"):
        assert len(RealEstate10KDataset(tmp_path, num_frames=5, image_size=(32, 32))) == 0
    provider = lambda frames: torch.full((frames.shape[0], *frames.shape[-2:]), 3.0)  # noqa: E731
    clip = RealEstate10KDataset(tmp_path, num_frames=5, image_size=(32, 32), depth_provider=provider)[0]
    assert torch.equal(clip.depth, torch.full((5, 32, 32), 3.0))


def test_truncated_and_corrupt_clips_are_skipped(tmp_path):
    _make_clip(tmp_path, "good")
    _make_clip(tmp_path, "trunc")
    text = (tmp_path / "cameras" / "trunc.txt").read_text()
    (tmp_path / "cameras" / "trunc.txt").write_text(text[: len(text) - 40])  # cut the last line short
    _make_clip(tmp_path, "corrupt")
    bad = sorted((tmp_path / "frames" / "corrupt").iterdir())[2]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.warns(ClipSkippedWarning, match="trunc"):
        ds = RealEstate10KDataset(tmp_path, num_frames=5, image_size=(32, 32))
    assert ds.clip_names == ["corrupt", "good"]
    with pytest.warns(ClipSkippedWarning, match="corrupt"):
        clip = ds[0]
    assert clip.name == "good@0"
    with pytest.raises(ValueError, match="cannot decode"):
        ds.load_window(0)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        RealEstate10KDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        RealEstate10KDataset(tmp_path, num_frames=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(RealEstate10KDataset(tmp_path, num_frames=5)) == 0


def test_eval_cli_on_a_re10k_clip_reports_novel_view_only(tmp_path, capsys):
    import json

    from mirage.cli import main

    _make_clip(tmp_path / "data", "a")
    out = tmp_path / "eval"
    argv = ["eval", "--data", "re10k", "--data-root", str(tmp_path / "data"), "--methods", "latent", "none",
            "--frames", "small", "--steps", "1", "--height", "32", "--width", "64", "--output", str(out),
            "--no-progress", "--no-videos"]
    assert main(argv) == 0
    table = json.loads((out / "results.json").read_text())["table"]
    assert table["latent"]["PSNR"] is not None and table["latent"]["PSNR_C"] is None
    assert "0 of 1 clips" in capsys.readouterr().out
