"""mirage.frames: fitting RGB-D and intrinsics to the model's size, keyframe selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage.camera import look_at, make_intrinsics, project
from mirage.frames import KeyframeSelector, crop_box, fit_intrinsics, fit_to_size


def test_keyframe_selector_thresholds():
    sel = KeyframeSelector(translation=0.1, rotation_deg=10.0)
    T0 = look_at([0, 0, 0], [1, 0, 0]).double().numpy()
    assert sel.is_keyframe(T0)
    sel.accept(T0)
    near = T0.copy()
    near[0, 3] += 0.05
    assert not sel.is_keyframe(near)
    far = T0.copy()
    far[0, 3] += 0.15
    assert sel.is_keyframe(far)
    turned = look_at([0, 0, 0], [1, np.tan(np.radians(12)), 0]).double().numpy()
    assert sel.distance(turned)[1] == pytest.approx(12.0, abs=1e-3) and sel.is_keyframe(turned)
    sel.reset()
    assert sel.is_keyframe(near)


# ------------------------------------------------------------------------------------------ frame fitting
def test_fit_to_size_crops_to_aspect_and_scales_intrinsics():
    H, W = 48, 64  # 3:4 into 2:3 -> crop rows
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, :, 0] = np.arange(W, dtype=np.uint8)[None]
    depth = np.full((H, W), 2.0, np.float32)
    K = make_intrinsics(50.0, 50.0, W / 2, H / 2)
    rgb_t, depth_t, K_t = fit_to_size(rgb, depth, K, (32, 48))
    assert rgb_t.shape == (3, 32, 48) and depth_t.shape == (32, 48) and rgb_t.max() <= 1.0
    # the crop keeps all columns (43 x 64 rows centred), so the principal point stays centred
    assert K_t[0, 2].item() == pytest.approx(24.0) and K_t[1, 2].item() == pytest.approx(16.0, abs=0.5)
    assert K_t[0, 0].item() == pytest.approx(50.0 * 48 / 64)
    # a point on the optical axis stays at the principal point
    assert torch.allclose(depth_t, torch.full((32, 48), 2.0))


@pytest.mark.parametrize("src, dst", [((48, 64), (32, 48)), ((480, 640), (64, 96)), ((90, 60), (32, 32)),
                                      ((64, 96), (64, 96))])
def test_fit_intrinsics_is_the_crop_and_resize_of_fit_to_size(src, dst):
    """A world point lands on the same fitted pixel whether K is fitted alone or with the frame."""
    K = make_intrinsics(0.8 * src[1], 0.8 * src[1], src[1] / 2 + 1.5, src[0] / 2 - 2.0)
    rgb, depth = np.zeros((*src, 3), np.uint8), np.ones(src, np.float32)
    _, depth_t, K_frame = fit_to_size(rgb, depth, K, dst)
    K_alone = fit_intrinsics(K, src, dst)
    torch.testing.assert_close(K_alone, K_frame)
    assert depth_t.shape == dst
    y0, x0, crop_h, crop_w = crop_box(src, dst)
    assert abs(crop_w / crop_h - dst[1] / dst[0]) < 2.0 / min(crop_h, crop_w)
    # the projection of a point through the fitted K = its source pixel, shifted by the crop and scaled
    point = torch.tensor([[0.1, -0.05, 2.0]])
    uv_src = project(point, K, torch.eye(4))[0][0]
    uv_dst = project(point, K_alone, torch.eye(4))[0][0]
    scale = torch.tensor([dst[1] / crop_w, dst[0] / crop_h])
    torch.testing.assert_close(uv_dst, (uv_src - torch.tensor([x0, y0])) * scale, atol=1e-4, rtol=0)


def test_fit_to_size_rejects_bad_frames():
    K = make_intrinsics(50.0, 50.0, 32.0, 24.0)
    with pytest.raises(ValueError, match="uint8"):
        fit_to_size(np.zeros((48, 64, 3), np.float32), np.ones((48, 64), np.float32), K, (32, 48))
    with pytest.raises(ValueError, match="depth"):
        fit_to_size(np.zeros((48, 64, 3), np.uint8), np.ones((24, 64), np.float32), K, (32, 48))
    with pytest.raises(ValueError, match="positive"):
        crop_box((48, 64), (0, 48))


def test_keyframe_selector_zero_threshold_takes_every_frame_and_rejects_negative():
    sel = KeyframeSelector(translation=0.0, rotation_deg=10.0)
    T = np.eye(4)
    sel.accept(T)
    assert sel.is_keyframe(T)
    with pytest.raises(ValueError, match=">= 0"):
        KeyframeSelector(translation=-0.1)
