"""mirage.frames: fitting RGB-D and intrinsics to the model's size, keyframe selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mirage.camera import look_at, make_intrinsics, project
from mirage.frames import KeyframeSelector, crop_box, fit_intrinsics, fit_to_size, nearest_indices


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


# ------------------------------------------------------------------------------------------ colour backends
# cv2.INTER_AREA on uint8 rounds its result to a whole grey level once (integer factors: an integer sum with
# rounding; other factors: float area weights, then a rounding cast), so where cv2 and a float reference compute the
# same average they differ by at most half a grey level, plus float32 rounding of the reference (~1e-5 levels).
HALF_LEVEL = (0.5 + 1e-3) / 255.0


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of the exact area average: the overlap of output cell i with source pixel j."""
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    j = np.arange(n_in)[None, :]
    return np.clip(np.minimum(lo + s, j + 1) - np.maximum(lo, j), 0, None) / s


def noise_frame(H, W, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (1.0 + rng.random((H, W))).astype(np.float32)


@pytest.mark.parametrize("src, dst", [((128, 192), (64, 96)), ((192, 288), (64, 96)), ((448, 672), (64, 96)),
                                      ((96, 96), (32, 32))])
def test_cv2_and_torch_agree_to_half_a_grey_level_at_whole_number_factors(src, dst):
    """Whole-number factors: torch's area mode (adaptive average pooling) is the exact area average, so the two
    backends differ only by cv2's one rounding to uint8. Noise is the worst case for any other difference."""
    rgb, depth = noise_frame(*src)
    K = make_intrinsics(100.0, 100.0, src[1] / 2, src[0] / 2)
    rgb_cv, depth_cv, K_cv = fit_to_size(rgb, depth, K, dst, backend="cv2")
    rgb_torch, depth_torch, K_torch = fit_to_size(rgb, depth, K, dst, backend="torch")
    torch.testing.assert_close(rgb_cv, rgb_torch, atol=HALF_LEVEL, rtol=0)
    assert torch.equal(depth_cv, depth_torch)  # the same nearest source pixels, gathered: no arithmetic
    torch.testing.assert_close(K_cv, K_torch)


@pytest.mark.parametrize("src, dst", [((480, 640), (64, 96)), ((720, 1280), (64, 96)), ((100, 150), (64, 96)),
                                      ((480, 640), (704, 1280))])
def test_cv2_is_the_exact_area_average_at_any_factor(src, dst):
    """Any shrinking factor (the sensor cases 640x480 and 1280x720 -> 96x64): cv2 = the exact area average of the
    crop (float64 reference below) within half a grey level. The enlarging case goes to torch under "auto"."""
    rgb, depth = noise_frame(*src, seed=1)
    K = make_intrinsics(300.0, 300.0, src[1] / 2, src[0] / 2)
    y0, x0, ch, cw = crop_box(src, dst)
    crop = rgb[y0:y0 + ch, x0:x0 + cw].astype(np.float64)
    reference = np.einsum("lk,ikc->cil", area_matrix(cw, dst[1]), np.einsum("ij,jkc->ikc", area_matrix(ch, dst[0]),
                                                                              crop)) / 255.0
    if ch >= dst[0] and cw >= dst[1]:
        rgb_cv = fit_to_size(rgb, depth, K, dst, backend="cv2")[0]
        torch.testing.assert_close(rgb_cv.double(), torch.from_numpy(reference), atol=HALF_LEVEL, rtol=0)
        assert torch.equal(fit_to_size(rgb, depth, K, dst)[0], rgb_cv)  # "auto" takes cv2 here
    else:  # enlarged: "auto" keeps torch's path exactly
        assert torch.equal(fit_to_size(rgb, depth, K, dst)[0], fit_to_size(rgb, depth, K, dst, backend="torch")[0])


def test_cv2_and_torch_differ_by_at_most_a_pixels_gradient_at_other_factors():
    """At a factor like 480 -> 64 torch averages whole-pixel windows (up to one pixel wider than the cell), cv2 the
    exact cell: on a smooth image they differ by at most half a grey level + one pixel's change of intensity."""
    H, W = 427, 640
    ramp = np.add.outer(np.arange(H) * 0.25, np.arange(W) * 0.19)  # 0.25 / 0.19 grey levels a pixel, 0 .. 228
    rgb = np.repeat(ramp.round().astype(np.uint8)[..., None], 3, axis=2)
    depth = np.ones((H, W), np.float32)
    K = make_intrinsics(300.0, 300.0, W / 2, H / 2)
    rgb_cv = fit_to_size(rgb, depth, K, (64, 96), backend="cv2")[0]
    rgb_torch = fit_to_size(rgb, depth, K, (64, 96), backend="torch")[0]
    gradient = (0.25 + 0.19 + 1.0) / 255.0  # one pixel along both axes, + 1 level of the source's own rounding
    torch.testing.assert_close(rgb_cv, rgb_torch, atol=HALF_LEVEL + gradient, rtol=0)


def test_depth_is_never_averaged_and_holes_stay_holes():
    """Depth takes the nearest source pixel: a 0 or NaN hole stays a hole, an edge between 1 m and 5 m never
    becomes 3 m, whatever the colour backend."""
    H, W = 300, 400
    depth = np.where(np.arange(W)[None, :] < 170, np.float32(1.0), np.float32(5.0)).repeat(H, 0)
    depth[50:120, 60:260] = 0.0       # a hole across the edge
    depth[200:260, 300:380] = np.nan  # and a NaN one
    rgb = noise_frame(H, W)[0]
    K = make_intrinsics(200.0, 200.0, W / 2, H / 2)
    for backend in ("auto", "cv2", "torch"):
        d = fit_to_size(rgb, depth, K, (48, 72), backend=backend)[1].numpy()
        finite = d[np.isfinite(d)]
        assert set(np.unique(finite)) <= {0.0, 1.0, 5.0} and np.isnan(d).any() and (d == 0).any()
        y0, x0, ch, cw = crop_box((H, W), (48, 72))
        rows, cols = y0 + nearest_indices(ch, 48), x0 + nearest_indices(cw, 72)
        np.testing.assert_array_equal(d, depth[rows[:, None], cols[None, :]])  # every value is its source pixel's


@pytest.mark.parametrize("n_in, n_out", [(427, 64), (640, 96), (1080, 96), (720, 64), (352, 704), (640, 1280),
                                         (5, 3), (7, 7), (1, 4)])
def test_nearest_indices_are_torchs_nearest_exact(n_in, n_out):
    x = torch.arange(n_in, dtype=torch.float32)[None, None, None]
    expected = torch.nn.functional.interpolate(x, size=(1, n_out), mode="nearest-exact")[0, 0, 0].long().numpy()
    np.testing.assert_array_equal(nearest_indices(n_in, n_out), expected)


def test_fit_to_size_rejects_an_unknown_backend():
    rgb, depth = noise_frame(48, 64)
    with pytest.raises(ValueError, match="backend"):
        fit_to_size(rgb, depth, make_intrinsics(50.0, 50.0, 32.0, 24.0), (32, 48), backend="pil")
