"""TUM RGB-D loader (mirage.data.tum): association, poses, calibration, the committed fr1/rpy slice, bad input, and
the memory tasks and controls ``mirage eval --data tum:DIR`` builds from it."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mirage.data.tum import (CAMERAS, TUMSequence, associate, camera_for, interpolate_poses, parse_frame_range,
                             parse_tum_source, read_groundtruth, read_tum_list, tum_memory_tasks, tum_training_tasks)

SLICE = Path(__file__).parent / "data" / "tum_fr1_rpy_slice"
SIZE = (64, 96)


# ------------------------------------------------------------------------------------------------ association
def test_associate_pairs_closest_first_each_stamp_once():
    rgb = [1.000, 1.033, 1.066, 1.100, 1.133, 1.300]
    depth = [1.005, 1.030,        1.101, 1.120,        1.290]  # noqa: E241 - no depth near 1.066 (missing)
    # 1.133 and 1.100 both want 1.120 / 1.101: 1.100-1.101 (0.001) wins 1.101, then 1.133-1.120 (0.013);
    # 1.300-1.290 (0.010) is within the limit; 1.066 has nothing within 0.02 s.
    assert associate(rgb, depth) == [(0, 0), (1, 1), (3, 2), (4, 3), (5, 4)]
    # a gap wider than the limit pairs nothing; the limit is strict (0.02 apart is not < 0.02)
    assert associate([0.0, 1.0], [0.5, 1.0 + 0.02 + 1e-9]) == []
    assert associate([0.0], [0.0199]) == [(0, 0)]
    # one depth stamp two rgb stamps want: the closer one gets it, the other is left out
    assert associate([2.000, 2.010], [2.008]) == [(1, 0)]
    # offset is added to the second list
    assert associate([5.0], [4.0], offset=1.0) == [(0, 0)]
    with pytest.raises(ValueError, match="max_difference"):
        associate([0.0], [0.0], max_difference=0)


def test_slice_association_matches_the_benchmark_pairs():
    rgb, _ = read_tum_list(SLICE / "rgb.txt", 2)
    depth, _ = read_tum_list(SLICE / "depth.txt", 2)
    pairs = associate(rgb, depth)
    assert pairs == [(i, i) for i in range(36)]  # the slice was cut from associated pairs
    assert np.abs(rgb - depth).max() < 0.02


def test_poses_interpolate_between_samples_and_never_across_a_gap():
    stamps = np.array([0.00, 0.01, 0.02, 0.50])  # a gap of 0.48 s after 0.02
    t = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], dtype=float)
    q = Rotation.from_euler("z", [[0], [0], [90], [90]], degrees=True).as_quat()  # (x, y, z, w)
    query = [0.005, 0.015, 0.02, 0.03, 0.26, 0.49, 0.515, 0.6]
    poses, found = interpolate_poses(stamps, t, q, query, max_difference=0.02)
    assert found.tolist() == [True, True, True, True, False, True, True, False]
    np.testing.assert_allclose(poses[0, :3, 3], [0.5, 0, 0], atol=1e-12)  # linear in translation
    angle = Rotation.from_matrix(poses[1, :3, :3]).as_euler("xyz", degrees=True)[2]
    assert angle == pytest.approx(45.0, abs=1e-9)  # slerp halfway between 0 and 90 degrees
    np.testing.assert_allclose(poses[2, :3, 3], [2, 0, 0])  # exactly on a sample
    np.testing.assert_allclose(poses[3, :3, 3], [2, 0, 0])  # 0.01 s after the last sample before the gap: nearest
    np.testing.assert_allclose(poses[5, :3, 3], [3, 0, 0])  # 0.01 s before the sample after the gap: nearest
    np.testing.assert_allclose(poses[6, :3, 3], [3, 0, 0])  # after the end, within the limit: nearest, no extrapolation
    np.testing.assert_array_equal(poses[4], np.eye(4))


# ------------------------------------------------------------------------------------------------ the slice
@pytest.fixture(scope="module")
def sequence():
    return TUMSequence(SLICE)


def test_slice_loads_with_the_fr1_calibration_scaled(sequence):
    assert len(sequence) == 36 and sequence.skipped == {} and sequence.image_size == (120, 160)
    assert sequence.camera is CAMERAS["fr1"] and camera_for(SLICE) is CAMERAS["fr1"] and sequence.undistort
    K = sequence.intrinsics  # mirage convention (pixel centres at +0.5) at 160x120: OpenCV 640x480 K / 4
    np.testing.assert_allclose(K.numpy(), [[517.3 / 4, 0, (318.6 + 0.5) / 4], [0, 516.5 / 4, (255.3 + 0.5) / 4],
                                           [0, 0, 1]], rtol=1e-6)


def test_depth_is_metres_with_nan_holes_and_poses_are_the_ground_truth(sequence):
    raw_seq = TUMSequence(SLICE, undistort=False)
    rgb, depth = raw_seq.frame(3)
    png = cv2.imread(str(raw_seq.depth_files[3]), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and (png == 0).any()
    np.testing.assert_array_equal(np.isnan(depth), png == 0)
    np.testing.assert_allclose(depth[png > 0], png[png > 0] / 5000.0, rtol=1e-6)
    np.testing.assert_array_equal(rgb, cv2.imread(str(raw_seq.rgb_files[3]))[..., ::-1])
    # the pose at frame 3's stamp, by hand from the two ground-truth lines around it
    gt_t, trans, quat = read_groundtruth(SLICE / "groundtruth.txt")
    k = int(np.searchsorted(gt_t, sequence.stamps[3]))
    w = (sequence.stamps[3] - gt_t[k - 1]) / (gt_t[k] - gt_t[k - 1])
    np.testing.assert_allclose(sequence.cam_to_world[3][:3, 3], (1 - w) * trans[k - 1] + w * trans[k], atol=1e-9)
    R = sequence.cam_to_world[3][:3, :3]
    assert np.abs(R.T @ R - np.eye(3)).max() < 1e-9
    nearest = Rotation.from_quat(quat[k]).as_matrix()
    assert np.degrees(np.arccos(np.clip((np.trace(nearest.T @ R) - 1) / 2, -1, 1))) < 2.0


def test_undistortion_moves_the_edges_not_the_principal_point(sequence):
    raw = TUMSequence(SLICE, undistort=False)
    rgb_u, depth_u = sequence.frame(0)
    rgb_r, depth_r = raw.frame(0)
    cx, cy = CAMERAS["fr1"].opencv_matrix((120, 160))[[0, 1], [2, 2]]
    r, c = int(round(cy)), int(round(cx))
    np.testing.assert_allclose(rgb_u[r - 2:r + 3, c - 2:c + 3].astype(float),
                               rgb_r[r - 2:r + 3, c - 2:c + 3].astype(float), atol=12)  # centre: ~no distortion
    assert np.abs(rgb_u[:, :20].astype(float) - rgb_r[:, :20].astype(float)).mean() > 5  # the edges move
    valid = ~np.isnan(depth_u)
    assert valid.mean() > 0.4 and set(np.unique(depth_u[valid])) <= set(np.unique(depth_r[~np.isnan(depth_r)]))


def test_clip_is_fitted_like_the_node_fits_frames(sequence):
    from mirage.frames import fit_intrinsics

    clip = sequence.clip([0, 5, 9], SIZE)
    assert clip.rgb.shape == (3, 3, *SIZE) and clip.depth.shape == (3, *SIZE)
    assert clip.name == "tum_fr1_rpy_slice@0"
    np.testing.assert_allclose(clip.intrinsics[1].numpy(), fit_intrinsics(sequence.intrinsics, (120, 160), SIZE),
                               rtol=1e-6)
    np.testing.assert_allclose(clip.cam_to_world[2].numpy(), sequence.cam_to_world[9], atol=1e-6)
    assert torch.isnan(clip.depth).any() and (clip.depth[~torch.isnan(clip.depth)] > 0.3).all()


# ------------------------------------------------------------------------------------------------ bad input
def _copy(tmp_path) -> Path:
    root = tmp_path / "rgbd_dataset_freiburg1_copy"
    shutil.copytree(SLICE, root)
    return root


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        TUMSequence(tmp_path / "nothing")
    root = _copy(tmp_path)
    (root / "depth.txt").unlink()
    with pytest.raises(ValueError, match="depth.txt: missing"):
        TUMSequence(root)
    root = _copy(tmp_path / "b")
    lines = (root / "rgb.txt").read_text().splitlines()
    (root / "rgb.txt").write_text("\n".join(lines[:5] + ["1305031233.5 rgb/x.png extra"] + lines[5:]))
    with pytest.raises(ValueError, match=r"rgb.txt:6: expected 2 fields"):
        TUMSequence(root)
    root = _copy(tmp_path / "c")
    lines = (root / "rgb.txt").read_text().splitlines()
    stamp = lines[3].split()[0]
    (root / "rgb.txt").write_text("\n".join(lines[:3] + [f"{stamp} ../../outside.png"] + lines[4:]))
    with pytest.raises(ValueError, match="outside the sequence"):
        TUMSequence(root)
    root = _copy(tmp_path / "d")
    (root / "rgb" / (lines[3].split()[1].split("/")[1])).unlink()
    with pytest.raises(ValueError, match="is missing"):
        TUMSequence(root)
    with pytest.raises(ValueError, match="cannot tell the camera"):
        TUMSequence(shutil.copytree(SLICE, tmp_path / "e" / "some_sequence"))
    assert len(TUMSequence(tmp_path / "e" / "some_sequence", camera="ros_default")) == 36
    with pytest.raises(ValueError, match="camera must be one of"):
        TUMSequence(SLICE, camera="kinect9")


def test_bad_images_raise_clear_errors(tmp_path):
    root = _copy(tmp_path)
    seq = TUMSequence(root)
    seq.rgb_files[2].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="cannot decode colour image"):
        seq.frame(2)
    cv2.imwrite(str(seq.depth_files[4]), np.full((120, 160), 9, np.uint8))
    with pytest.raises(ValueError, match="single-channel 16-bit"):
        seq.frame(4)
    cv2.imwrite(str(seq.depth_files[5]), np.full((60, 80), 5000, np.uint16))
    with pytest.raises(ValueError, match="but its depth image"):
        seq.frame(5)
    cv2.imwrite(str(seq.rgb_files[0]), np.zeros((100, 160, 3), np.uint8))  # 8:5 is not a resized 640x480
    with pytest.raises(ValueError, match="aspect ratio"):
        TUMSequence(root)
    with pytest.raises(IndexError):
        seq.frame(36)
    (root / "groundtruth.txt").write_text("# nothing\n1.0 0 0 0 0 0 0 2.0\n")
    with pytest.raises(ValueError, match="norm"):
        TUMSequence(root)


# ------------------------------------------------------------------------------------------------ evaluation
def test_memory_tasks_on_the_slice_score_what_only_the_memory_saw(sequence):
    from mirage.eval.closed_loop import memory_frame_metrics

    tasks = tum_memory_tasks(sequence, SIZE, num_tasks=2, num_frames=9, memory_frames=8, candidate_step=2)
    assert 1 <= len(tasks) <= 2
    starts = [t.room_seed for t in tasks]
    assert starts == sorted(starts) and all(s >= 18 for s in starts)  # windows after the memory part (18 frames)
    for task in tasks:
        assert task.earlier.num_frames == 8 and task.target.num_frames == 9 and task.context_frames == (0,)
        assert task.target.name == task.name == f"tum_fr1_rpy_slice@{task.room_seed}"  # unique: keys the rows
        assert task.info["frames"] == list(range(task.room_seed, task.room_seed + 9))
        assert 0.0 <= task.needs_memory <= 1.0 and task.needs_memory_mask.shape == (9, *SIZE)
        assert 0 not in task.scored_frames and not task.needs_memory_mask[0].any()  # frame 0 sees itself
        # perfect frames score the maximum; the first frame repeated is worse and PSNR_self is undefined here
        perfect = memory_frame_metrics(task.target.rgb, task).values
        repeat = memory_frame_metrics(task.target.rgb[:1].expand(9, -1, -1, -1), task).values
        assert perfect["PSNR_C"] == 100.0 or perfect["PSNR_C"] > 60
        assert repeat["PSNR_C"] < 30 and np.isnan(repeat["PSNR_self"])
    with pytest.raises(ValueError, match="needs"):
        tum_memory_tasks(sequence, SIZE, num_frames=33)  # 18 later frames cannot hold a 33-frame window


def test_frame_range_keeps_a_part_with_the_whole_sequences_numbers(sequence):
    assert parse_frame_range("10:30") == (10, 30) and parse_frame_range("415:") == (415, None)
    assert parse_frame_range(":12") == (0, 12)
    for bad in ("30:10", "5:5", "a:b", "1:2:3", "-1:4", "12"):
        with pytest.raises(ValueError, match="frame range"):
            parse_frame_range(bad)
    assert parse_tum_source("/d/seq@12:") == ("/d/seq", (12, None))
    assert parse_tum_source("/d/seq") == ("/d/seq", None)
    assert parse_tum_source("/d/user@host/seq") == ("/d/user@host/seq", None)  # an @ that is no range stays
    part = TUMSequence(SLICE, frames=(10, 30))
    assert len(part) == 20 and part.first_frame == 10 and sequence.first_frame == 0
    np.testing.assert_array_equal(part.cam_to_world, sequence.cam_to_world[10:30])
    np.testing.assert_array_equal(part.stamps, sequence.stamps[10:30])
    assert part.rgb_files == sequence.rgb_files[10:30] and part.depth_files == sequence.depth_files[10:30]
    np.testing.assert_array_equal(part.frame(0)[0], sequence.frame(10)[0])
    assert len(TUMSequence(SLICE, frames=(30, None))) == 6
    with pytest.raises(ValueError, match="leave no frame"):
        TUMSequence(SLICE, frames=(36, None))
    # memory and windows of a part come from the part only, numbered in the whole sequence
    tasks = tum_memory_tasks(TUMSequence(SLICE, frames=(6, None)), SIZE, num_tasks=1, num_frames=9, memory_frames=6,
                             candidate_step=2)
    assert len(tasks) == 1
    assert all(6 <= m < 21 for m in tasks[0].info["memory_frames"])  # the first half of frames 6..35
    assert tasks[0].room_seed >= 21 and tasks[0].info["frames"] == list(range(tasks[0].room_seed,
                                                                              tasks[0].room_seed + 9))
    assert tasks[0].name == f"tum_fr1_rpy_slice@{tasks[0].room_seed}"


def test_training_tasks_look_back_at_frames_before_the_window(sequence):
    tasks = tum_training_tasks(TUMSequence(SLICE, frames=(0, 34)), SIZE, num_frames=9, memory_frames=8,
                               min_history=16, step=8)
    assert [t.name for t in tasks] == ["tum_fr1_rpy_slice@16x1", "tum_fr1_rpy_slice@16x2", "tum_fr1_rpy_slice@24x1"]
    for task, stride in zip(tasks, (1, 2, 1)):
        start = task.room_seed
        assert task.info["frames"] == list(range(start, start + 9 * stride, stride))
        assert len(task.info["memory_frames"]) == 8 and max(task.info["memory_frames"]) == start - 1
        assert task.context_frames == (0,) and 0.0 <= task.needs_memory <= 1.0
    torch.testing.assert_close(tasks[1].target.cam_to_world, torch.from_numpy(sequence.cam_to_world[16:33:2]).float())
    with pytest.raises(ValueError, match="no 9-frame window"):
        tum_training_tasks(sequence, SIZE, num_frames=9, min_history=30)


def test_context_holes_count_as_seen():
    from mirage.data.visibility import memory_need

    K = torch.tensor([[10.0, 0, 5.0], [0, 10.0, 5.0], [0, 0, 1]])[None]
    pose = torch.eye(4)[None]
    depth = torch.full((1, 10, 10), 2.0)
    holes = depth.clone()
    holes[0, :, :5] = float("nan")  # the context frame has no depth on its left half
    plain = memory_need(depth, K, pose, holes, K, pose, depth, K, pose)
    seen = memory_need(depth, K, pose, holes, K, pose, depth, K, pose, context_holes_seen=True)
    # (column 4 borders column 5, whose depth vouches for it: the 2x2 rule of seen_by)
    assert plain.needs_memory[0, :, :4].all() and not plain.needs_memory[0, :, 5:].any()
    assert not seen.needs_memory.any()


def test_eval_cli_on_the_slice(tmp_path):
    import json

    from mirage.cli import main

    out = tmp_path / "eval"
    argv = ["eval", "--model", "tiny", "--data", f"tum:{SLICE}", "--scenes", "1", "--frames", "9", "--earlier-frames",
            "6", "--methods", "latent", "repeat_first", "--steps", "1", "--no-videos", "--no-consistency",
            "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert set(result["table"]) == {"latent", "repeat_first"} and "TUM RGB-D tum_fr1_rpy_slice" in \
        result["settings"]["data"]
    assert result["table"]["repeat_first"]["PSNR_self"] is None
    # a held-out part: memory and windows from frames 12..35 only
    argv[argv.index(f"tum:{SLICE}")] = f"tum:{SLICE}@12:"
    assert main(argv) == 0
    settings = json.loads((out / "results.json").read_text())["settings"]["data"]
    assert "24 associated frames 12..35" in settings and "windows starting at frames [" in settings
    assert min(int(s) for s in settings.rsplit("[", 1)[1].split("]")[0].split(",")) >= 24
    assert main(["eval", "--model", "tiny", "--data", f"tum:{SLICE}@40:", "--output", str(out)]) == 2
    assert main(["eval", "--model", "tiny", "--data", "tum:", "--output", str(out)]) == 2
    assert main(["eval", "--model", "tiny", "--data", f"tum:{tmp_path / 'none'}", "--output", str(out)]) == 2
