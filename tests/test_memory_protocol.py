"""The SpatialMemory contract, checked on both implementations: conformance, observe_batch, copy, coverage."""

import pytest
import torch

from mirage.autoencoders import PatchifyAutoencoder
from mirage.camera import intrinsics_from_fov, scale_intrinsics
from mirage.memory import LatentSpatialMemory, Readout, RGBPointCloudMemory, SpatialMemory

H, W = 32, 48
h, w = H // 16, W // 16
K = intrinsics_from_fov(60.0, H, W)
EYE = torch.eye(4)
AE = PatchifyAutoencoder(16)
C = AE.latent_channels


def frames(T=2, seed=0, depth=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, 3, H, W, generator=g), torch.full((T, H, W), depth), EYE.expand(T, 4, 4).clone()


def translated(x=0.0, y=0.0, z=0.0):
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([x, y, z])
    return T


def latent_memory(**kw):
    return LatentSpatialMemory(channels=C, voxel_size=None, **kw)


def rgb_memory(**kw):
    return RGBPointCloudMemory(AE.encode, channels=C, **kw)


BOTH = pytest.mark.parametrize("make", [latent_memory, rgb_memory], ids=["latent", "rgb"])


class CountingEncoder:
    def __init__(self):
        self.calls = 0

    def __call__(self, rgb):
        self.calls += 1
        return AE.encode(rgb)


def state(m):
    return (m.points.clone(), m._store.values.clone(), m.version, m.frames_inserted, len(m))


def assert_same_state(a, b):
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2:] == b[2:]


@BOTH
def test_conforms_to_the_protocol(make):
    m = make()
    assert isinstance(m, SpatialMemory)
    assert (m.channels, m.dtype, m.device, m.version, m.frames_inserted, len(m)) == (
        C, torch.float32, torch.device("cpu"), 0, 0, 0)
    assert {"points", "bytes", "channels", "version", "frames_inserted", "kind"} <= set(m.stats())
    assert m.stats()["kind"] == ("latent" if isinstance(m, LatentSpatialMemory) else "rgb")
    assert not isinstance(object(), SpatialMemory)


@BOTH
def test_observe_read_and_shapes(make):
    m = make()
    rgb, depth, poses = frames()
    depth[1] = 1.5  # the second frame is nearer and wins every cell
    encode = CountingEncoder()
    written = m.observe_batch(rgb, depth, K, poses, encode=encode)
    assert written == 2 * (h * w if isinstance(m, LatentSpatialMemory) else H * W) == len(m)
    assert m.frames_inserted == 2 and m.version == 1
    out = m.read_batch(K, torch.stack([EYE, translated(x=0.1)]), (H, W), (h, w))
    assert isinstance(out, Readout)
    assert out.features.shape == (2, C, h, w) and out.features.dtype == m.dtype
    assert out.mask.shape == (2, h, w) and out.mask.dtype == torch.bool
    assert out.depth.shape == (2, h, w) and out.depth.dtype == torch.float32
    assert out.mask[0].all() and torch.allclose(out.depth[0], torch.full((h, w), 1.5))
    expected = AE.encode(((rgb[1:] if isinstance(m, LatentSpatialMemory) else (rgb[1:] * 255).round() / 255)))[0]
    assert torch.allclose(out.features[0], expected, atol=1e-6)
    single = m.read(K, EYE, (H, W), (h, w))
    assert single.features.shape == (C, h, w) and torch.equal(single.features, out.features[0])
    if isinstance(m, RGBPointCloudMemory):
        assert encode.calls == 0  # the RGB memory stores pixels; its own encoder serves reads


def test_latent_observe_with_latents_does_not_encode():
    m = latent_memory()
    rgb, depth, poses = frames(T=1)
    latents = torch.randn(1, C, h, w, generator=torch.Generator().manual_seed(1))
    encode = CountingEncoder()
    assert m.observe_batch(rgb, depth, K, poses, encode=encode, latents=latents) == h * w
    assert encode.calls == 0
    assert torch.equal(m.read(K, EYE, (H, W), (h, w)).features, latents[0])


def test_latent_observe_with_encode_equals_insert_batch():
    rgb, depth, poses = frames(T=3, seed=2)
    depth = depth + torch.linspace(0, 1, W)
    a, b = latent_memory(), latent_memory()
    a.observe_batch(rgb, depth, K, poses, encode=AE.encode)
    b.insert_batch(AE.encode(rgb), depth, K, poses, rgb=rgb)
    assert torch.equal(a.points, b.points) and torch.equal(a.features, b.features)
    assert torch.equal(a.colors, b.colors)


def test_latent_observe_needs_latents_or_encode():
    m = latent_memory()
    rgb, depth, poses = frames(T=1)
    with pytest.raises(ValueError, match="neither"):
        m.observe_batch(rgb, depth, K, poses)
    assert len(m) == 0 and m.version == 0


def test_rgb_observe_ignores_encode_and_latents():
    m = rgb_memory()
    rgb, depth, poses = frames(T=1)
    encode = CountingEncoder()
    assert m.observe_batch(rgb, depth, K, poses, encode=encode, latents=torch.zeros(1, 1, 1, 1)) == H * W
    assert m.observe_batch(rgb, depth, K, poses) == H * W  # neither: fine, pixels need no encoder
    assert encode.calls == 0


@BOTH
def test_bad_input_is_rejected_before_encode(make):
    m = make()
    rgb, depth, poses = frames(T=1)
    m.observe_batch(rgb, depth, K, poses, encode=AE.encode)
    before = state(m)
    non_rigid = poses.clone()
    non_rigid[0, 0, 0] = 2.0
    nan_rgb = rgb.clone()
    nan_rgb[0, 0, 0, 0] = float("nan")
    cases = [
        ((rgb[:, :, :-1], depth, K, poses), "rgb"),
        ((rgb.long(), depth, K, poses), "rgb"),
        ((nan_rgb, depth, K, poses), "non-finite"),
        ((rgb, depth[0], K, poses), "depth"),
        ((rgb, depth, K * 0, poses), "focal"),
        ((rgb, depth, K, non_rigid), "rigid"),
        ((rgb, depth, K, poses[0]), "cam_to_world"),
        ((rgb, depth, K, poses, torch.zeros(1, H, W)), "exclude"),
    ]
    for args, match in cases:
        encode = CountingEncoder()
        with pytest.raises(ValueError, match=match):
            m.observe_batch(*args, encode=encode)
        assert encode.calls == 0, match
        assert_same_state(state(m), before)


def test_latent_rejects_bad_latents_and_bad_encoder_output():
    m = latent_memory()
    rgb, depth, poses = frames(T=1)
    for latents, match in [(torch.zeros(1, C + 1, h, w), "channel"), (torch.zeros(2, C, h, w), "latent frames"),
                           (torch.zeros(1, C, 5, w), "divide"), (torch.zeros(1, C, h, w).long(), "floating"),
                           (torch.full((1, C, h, w), float("inf")), "non-finite")]:
        with pytest.raises(ValueError, match=match):
            m.observe_batch(rgb, depth, K, poses, latents=latents)
    with pytest.raises(ValueError, match="encode"):
        m.observe_batch(rgb, depth, K, poses, encode=lambda x: AE.encode(x)[:, :-1])
    assert len(m) == 0 and m.version == 0


@BOTH
def test_copy_is_an_independent_snapshot(make):
    m = make()
    rgb, depth, poses = frames(T=1)
    m.observe_batch(rgb, depth, K, poses, encode=AE.encode)
    snap = m.copy()
    assert type(snap) is type(m) and isinstance(snap, SpatialMemory)
    assert snap.points.data_ptr() == m.points.data_ptr()  # O(1): the store is shared until either changes
    before = state(m)
    snap.observe_batch(rgb, depth * 2, K, translated(x=0.5)[None], encode=AE.encode)
    assert_same_state(state(m), before)
    assert len(snap) == 2 * len(m) and snap.frames_inserted == 2
    m.observe_batch(rgb, depth * 3, K, translated(y=0.5)[None], encode=AE.encode)
    assert len(snap) == 2 * before[4] and snap.frames_inserted == 2
    snap.clear()
    assert len(m) == 2 * before[4]


@BOTH
def test_coverage(make):
    m = make()
    zero = m.coverage(K, EYE[None], (H, W), (h, w))
    assert zero.shape == (1,) and zero.dtype == torch.float32 and zero.item() == 0
    rgb, depth, poses = frames(T=1)
    depth[0, :16, :16] = float("nan")  # latent cell (0, 0) never stored
    m.observe_batch(rgb, depth, K, poses, encode=AE.encode)
    # One latent cell's footprint at depth 2 to the right: the last column of cells sees nothing.
    fx = scale_intrinsics(K, (H, W), (h, w))[0, 0].item()
    views = torch.stack([EYE, translated(x=2.0 / fx), translated(z=5.0)])
    cov = m.coverage(K, views, (H, W), (h, w))
    assert cov.shape == (3,)
    assert cov.tolist() == pytest.approx([5 / 6, 4 / 6, 0.0])  # shifted: column 0 leaves, (0, 0) fills
    assert torch.equal(cov, m.read_batch(K, views, (H, W), (h, w)).mask.flatten(1).float().mean(1))
    _, vis_depth = m.visibility(K, views, (H, W), (h, w))
    assert torch.equal(vis_depth, m.read_batch(K, views, (H, W), (h, w)).depth)
    with pytest.raises(ValueError, match="last row"):
        m.coverage(K, views * 2, (H, W), (h, w))
