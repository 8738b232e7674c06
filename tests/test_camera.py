import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mirage import camera as cam


def random_pose(seed: int) -> torch.Tensor:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    T = torch.eye(4)
    T[:3, :3] = torch.from_numpy(Rotation.random(random_state=rng).as_matrix()).float()
    T[:3, 3] = torch.from_numpy(rng.normal(size=3)).float()
    return T


def test_project_backproject_round_trip():
    H, W = 48, 64
    K = cam.intrinsics_from_fov(70.0, H, W)
    c2w = random_pose(0)
    depth = 1.0 + torch.rand(H, W, generator=torch.Generator().manual_seed(0))
    pts = cam.backproject_depth(depth, K, c2w)
    uv, z = cam.project(pts.reshape(-1, 3), K, c2w)
    assert torch.allclose(uv, cam.pixel_centers(H, W).reshape(-1, 2), atol=1e-3)
    assert torch.allclose(z, depth.reshape(-1), atol=1e-4)


def test_pixel_centres_and_principal_point():
    uv = cam.pixel_centers(2, 3)
    assert uv[0, 0].tolist() == [0.5, 0.5] and uv[1, 2].tolist() == [2.5, 1.5]
    # The optical axis hits the image centre of a centred camera.
    K = cam.intrinsics_from_fov(90.0, 4, 6)
    uv, z = cam.project(torch.tensor([[0.0, 0.0, 2.0]]), K, torch.eye(4))
    assert uv[0].tolist() == [3.0, 2.0] and z.item() == 2.0
    # 90 deg horizontal field of view: the ray x = z lands on the right image edge.
    uv, _ = cam.project(torch.tensor([[2.0, 0.0, 2.0]]), K, torch.eye(4))
    assert uv[0, 0].item() == pytest.approx(6.0)


def test_scale_intrinsics_to_latent_grid():
    K = cam.make_intrinsics(600.0, 500.0, 640.0, 352.0)
    Kl = cam.scale_intrinsics(K, (704, 1280), (44, 80))
    assert torch.allclose(Kl, cam.make_intrinsics(37.5, 31.25, 40.0, 22.0))
    # Scaling keeps the same ray through a cell centre: latent (j + 0.5, i + 0.5) is pixel (16j + 8, 16i + 8).
    uv_lat = cam.pixel_centers(44, 80).reshape(-1, 2)
    ones = torch.ones(uv_lat.shape[0])
    p_lat = cam.backproject(uv_lat, ones, Kl, torch.eye(4))
    p_full = cam.backproject(uv_lat * 16, ones, K, torch.eye(4))
    assert torch.allclose(p_lat, p_full, atol=1e-5)
    r_lat = cam.plucker_rays(Kl, torch.eye(4), 44, 80)
    assert torch.allclose(r_lat[3:].permute(1, 2, 0).reshape(-1, 3), p_full / p_full.norm(dim=-1, keepdim=True),
                          atol=1e-5)
    with pytest.raises(ValueError):
        cam.scale_intrinsics(K, (0, 10), (4, 4))


def test_opencv_conversion():
    K_cv = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    K = cam.intrinsics_from_opencv(K_cv)
    assert K[0, 2].item() == 320.0 and K[1, 2].item() == 240.0
    assert np.allclose(cam.intrinsics_to_opencv(K).numpy(), K_cv)


def test_plucker_rays():
    K = cam.intrinsics_from_fov(60.0, 6, 8)
    c2w = random_pose(1)
    rays = cam.plucker_rays(K, c2w, 6, 8)
    assert rays.shape == (6, 6, 8)
    m, d = rays[:3], rays[3:]
    assert torch.allclose(d.norm(dim=0), torch.ones(6, 8), atol=1e-5)
    assert torch.allclose((m * d).sum(0), torch.zeros(6, 8), atol=1e-5)  # moment orthogonal to direction
    # A point at depth 1 along each cell's ray lies on the ray: (p x d) equals the moment.
    p = cam.backproject_depth(torch.ones(6, 8), K, c2w).permute(2, 0, 1)
    assert torch.allclose(torch.linalg.cross(p, d, dim=0), m, atol=1e-4)
    batched = cam.plucker_rays(K.expand(3, 3, 3), c2w.expand(3, 4, 4), 6, 8)
    assert batched.shape == (3, 6, 6, 8) and torch.allclose(batched[2], rays)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
    lambda q: np.linalg.norm(q) > 0.1))
def test_quaternion_round_trip(q):
    q = np.asarray(q) / np.linalg.norm(q)
    q = np.where(q[3] < 0, -q, q)
    R = cam.quat_to_matrix(q)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
    q2 = cam.matrix_to_quat(R)
    assert np.allclose(q2, q, atol=1e-6) or (abs(q[3]) < 1e-9 and np.allclose(q2, -q, atol=1e-6))
    T = cam.pose_from_tq([1.0, 2.0, 3.0], q)
    t, q3 = cam.pose_to_tq(T)
    assert np.allclose(t, [1, 2, 3]) and np.allclose(cam.quat_to_matrix(q3), R, atol=1e-6)


def test_quaternion_order_is_xyzw():
    # 90 deg about z: x -> y.
    R = cam.quat_to_matrix([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    assert np.allclose(R @ [1, 0, 0], [0, 1, 0])
    with pytest.raises(ValueError, match="unit"):
        cam.quat_to_matrix([0, 0, 0, 2.0])
    assert np.allclose(cam.quat_to_matrix([0, 0, 0, 2.0], normalize=True), np.eye(3))
    with pytest.raises(ValueError):
        cam.quat_to_matrix([0, 0, 0, 0.0], normalize=True)
    with pytest.raises(ValueError):
        cam.quat_to_matrix([np.nan, 0, 0, 1.0])


def test_look_at():
    T = cam.look_at([0.0, 0.0, 1.0], [3.0, 0.0, 1.0])  # world z up, looking along +x
    assert torch.allclose(T[:3, 2], torch.tensor([1.0, 0.0, 0.0]))  # optical axis forward
    assert torch.allclose(T[:3, 1], torch.tensor([0.0, 0.0, -1.0]))  # image down = world down
    assert torch.allclose(T[:3, 0], torch.tensor([0.0, -1.0, 0.0]))  # image right
    cam.validate_pose(T)
    uv, z = cam.project(torch.tensor([[3.0, 0.0, 1.0]]), cam.intrinsics_from_fov(60, 4, 4), T)
    assert uv[0].tolist() == pytest.approx([2.0, 2.0]) and z.item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        cam.look_at([0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError):
        cam.look_at([0, 0, 0], [0, 0, 1])  # parallel to up


def test_invert_pose():
    T = random_pose(2)
    assert torch.allclose(cam.invert_pose(T) @ T, torch.eye(4), atol=1e-5)


def test_validation_errors():
    K = cam.intrinsics_from_fov(60, 4, 4)
    cam.validate_intrinsics(K)
    with pytest.raises(ValueError, match="focal"):
        cam.validate_intrinsics(cam.make_intrinsics(0.0, 1.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="non-finite"):
        cam.validate_intrinsics(cam.make_intrinsics(float("nan"), 1.0, 2.0, 2.0))
    with pytest.raises(ValueError, match="shape"):
        cam.validate_intrinsics(torch.eye(4))
    with pytest.raises(ValueError, match="torch.Tensor"):
        cam.validate_intrinsics(np.eye(3))
    cam.validate_pose(torch.eye(4))
    scaled = torch.eye(4)
    scaled[:3, :3] *= 2
    with pytest.raises(ValueError, match="rigid"):
        cam.validate_pose(scaled)
    mirror = torch.eye(4)
    mirror[0, 0] = -1
    with pytest.raises(ValueError, match="rigid"):
        cam.validate_pose(mirror)
    bottom = torch.eye(4)
    bottom[3, 0] = 1
    with pytest.raises(ValueError, match="last row"):
        cam.validate_pose(bottom)
    inf = torch.eye(4)
    inf[0, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        cam.validate_pose(inf)
    with pytest.raises(ValueError, match="floating"):
        cam.validate_depth(torch.zeros(4, 4, dtype=torch.int32))
    d = torch.tensor([1.0, 0.0, -1.0, float("nan"), float("inf")])
    assert cam.valid_depth_mask(d).tolist() == [True, False, False, False, False]


def test_latent_bookkeeping():
    assert cam.latent_size(704, 1280) == (44, 80)
    with pytest.raises(ValueError):
        cam.latent_size(700, 1280)
    assert cam.num_latent_frames(33) == 9
    assert cam.latent_frame_indices(9).tolist() == [0, 4, 8]
    with pytest.raises(ValueError):
        cam.num_latent_frames(32)
