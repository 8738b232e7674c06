"""3D and photometric consistency (mirage.eval.consistency): known answers on constructed and rendered scenes."""

import math

import pytest
import torch
import torch.nn.functional as F

from mirage.camera import make_intrinsics
from mirage.eval.consistency import (
    Matches,
    consistency_metrics,
    epipolar_errors,
    feature_consistency,
    frame_pairs,
    photometric_consistency,
    warp_frame,
)

H, W = 96, 128
K = make_intrinsics(100.0, 100.0, W / 2, H / 2)
PLANE = 2.0  # metres, fronto-parallel


def _texture(seed=0) -> torch.Tensor:
    """(3, H, W) smooth random texture in [0, 1]: corners for SIFT, no aliasing."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, H // 6, W // 6, generator=g)
    return F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _pose(tx: float = 0.0) -> torch.Tensor:
    P = torch.eye(4)
    P[0, 3] = tx
    return P


def test_frame_pairs():
    assert frame_pairs(6, (1, 4)) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 4), (1, 5)]
    assert frame_pairs(3, (4,)) == []
    with pytest.raises(ValueError, match="positive"):
        frame_pairs(5, (0,))


def test_identity_warp_gives_zero_error():
    image, depth = _texture(), torch.full((H, W), PLANE)
    warped, covisible = warp_frame(image, depth, depth, K, K, _pose(), _pose())
    assert covisible.all() and torch.allclose(warped, image, atol=1e-6)
    video = image.expand(3, 3, H, W).clone()
    scores = photometric_consistency(video, K, _pose().expand(3, 4, 4), depth.expand(3, H, W), gaps=(1, 2))
    assert scores["photo_L1"] == pytest.approx(0.0, abs=1e-7) and scores["covisible"] == 1.0
    assert scores["photo_PSNR"] == pytest.approx(100.0)


def test_a_camera_shift_warps_exactly_and_the_wrong_camera_reads_the_shift():
    """Camera j 4 cm to the right of camera i over a plane at 2 m: the image moves left by fx * t / d = 2 px."""
    shift = 2
    image_i = _texture()
    image_j = torch.roll(image_i, -shift, dims=-1)  # what camera j sees (its last 2 columns wrap: not co-visible)
    depth = torch.full((H, W), PLANE)
    P_j = _pose(shift * PLANE / 100.0)
    warped, covisible = warp_frame(image_i, depth, depth, K, K, _pose(), P_j)
    assert covisible[:, : W - shift].all() and not covisible[:, W - shift:].any()
    assert torch.allclose(warped[:, covisible], image_j[:, covisible], atol=1e-6)
    video, depths = torch.stack([image_i, image_j]), depth.expand(2, H, W)
    right = consistency_metrics(video, K, torch.stack([_pose(), P_j]), depths, gaps=(1,))
    assert right["photo_L1"] == pytest.approx(0.0, abs=1e-6)
    assert right["reproj_px"] < 0.1 and right["epipolar_px"] < 0.1 and right["matches"] > 20
    # the same images under an unchanged camera: matches are displaced by exactly the shift
    wrong = feature_consistency(video, K, torch.stack([_pose(), _pose()]), depths, gaps=(1,))
    assert wrong["reproj_px"] == pytest.approx(shift, abs=0.1) and wrong["reproj_inliers"] < 0.1
    assert math.isnan(wrong["epipolar_px"])  # no baseline, no epipolar geometry
    assert photometric_consistency(video, K, torch.stack([_pose(), _pose()]), depths, gaps=(1,))["photo_L1"] > 0.01


def test_epipolar_error_known_answer():
    """Rectified stereo (baseline along x, same K): epipolar lines are image rows, so a 3 px vertical offset of
    x_j is a 3 px epipolar error and a horizontal one none."""
    xy_i = torch.tensor([[30.5, 20.5], [80.5, 60.5]], dtype=torch.float64)
    along = Matches(xy_i, xy_i + torch.tensor([-7.0, 0.0], dtype=torch.float64))
    across = Matches(xy_i, xy_i + torch.tensor([-7.0, 3.0], dtype=torch.float64))
    args = (K.double(), K.double(), _pose().double(), _pose(0.1).double())
    assert torch.allclose(epipolar_errors(along, *args), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(epipolar_errors(across, *args), torch.full((2,), 3.0, dtype=torch.float64))


def test_occlusion_test_drops_hidden_pixels():
    image, plane = _texture(), torch.full((H, W), PLANE)
    blocked = plane.clone()
    blocked[:, :40] = 1.0  # camera i sees something nearer on the left third: those pixels are not co-visible
    _, covisible = warp_frame(image, blocked, plane, K, K, _pose(), _pose())
    assert not covisible[:, :40].any() and covisible[:, 40:].all()
    invalid = plane.clone()
    invalid[:10] = float("nan")  # no depth at camera j: nothing to lift
    _, covisible = warp_frame(image, plane, invalid, K, K, _pose(), _pose())
    assert not covisible[:10].any() and covisible[10:].all()


def test_a_rendered_scene_is_consistent_and_a_perturbed_one_is_not():
    from mirage.scenes import Scene

    scene = Scene.random(3, num_objects=6)
    Ks = scene.default_intrinsics(64, 96)
    c2w = scene.trajectory("forward", 9)
    frames = scene.render_batch(Ks, c2w, 64, 96)
    rgb, depth = frames.rgb.float().clamp(0, 1), frames.depth.float()
    exact = consistency_metrics(rgb, Ks, c2w, depth)
    perturbed = rgb.clone()
    perturbed[1::2] = torch.roll(rgb[1::2], 3, dims=-1)  # every other frame 3 px off
    off = consistency_metrics(perturbed, Ks, c2w, depth)
    assert exact["matches"] > 20 and exact["reproj_px"] < 0.5 and exact["epipolar_px"] < 0.5
    assert off["reproj_px"] > 2.0 and off["reproj_inliers"] < exact["reproj_inliers"]
    assert off["photo_L1"] > 1.5 * exact["photo_L1"]
    no_depth = consistency_metrics(rgb, Ks, c2w, None)
    assert math.isnan(no_depth["reproj_px"]) and math.isnan(no_depth["photo_L1"])
    assert no_depth["epipolar_px"] == pytest.approx(exact["epipolar_px"])


def test_bad_input_is_a_value_error():
    video = torch.rand(3, 3, H, W)
    with pytest.raises(ValueError, match="cam_to_world"):
        consistency_metrics(video, K, torch.eye(4).expand(2, 4, 4), None)
    with pytest.raises(ValueError, match="depth"):
        consistency_metrics(video, K, torch.eye(4).expand(3, 4, 4), torch.ones(3, H, W + 1))
    with pytest.raises(ValueError, match="detector"):
        feature_consistency(video, K, torch.eye(4).expand(3, 4, 4), detector="surf")
    with pytest.raises(ValueError, match="needs depth"):
        photometric_consistency(video, K, torch.eye(4).expand(3, 4, 4), None)
