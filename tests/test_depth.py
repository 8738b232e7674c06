import pytest
import torch

from mirage.camera import intrinsics_from_fov, valid_depth_mask
from mirage.memory.lifting import pool_depth
from mirage.perception.depth import (
    DepthAnythingProvider,
    DepthProvider,
    GivenDepth,
    ReadoutDepth,
    align_depth_scale,
    align_depth_to_reference,
    upsample_depth_nearest,
)


def test_align_depth_scale_recovers_known_scale():
    g = torch.Generator().manual_seed(0)
    reference = 1.0 + 4.0 * torch.rand(24, 32, generator=g)
    noise = 1.0 + 0.01 * torch.randn(24, 32, generator=g)
    pred = reference / 2.5 * noise
    pred[:3] = float("nan")          # invalid prediction rows are ignored
    reference[-3:] = 0.0             # and so are cells the reference does not hold
    scale = align_depth_scale(pred, reference)
    assert scale == pytest.approx(2.5, rel=5e-3)


def test_align_depth_scale_uses_only_masked_overlap():
    reference = torch.full((8, 8), 4.0)
    pred = torch.full((8, 8), 1.0)
    pred[:, 4:] = 100.0              # an outlier region, masked out below
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, :4] = True
    assert align_depth_scale(pred, reference, mask) == pytest.approx(4.0)
    assert align_depth_scale(pred, torch.zeros(8, 8)) is None
    assert align_depth_scale(pred, reference, mask, min_cells=33) is None
    with pytest.raises(ValueError, match="shape"):
        align_depth_scale(pred, reference[:4])


def test_align_to_coarser_reference():
    fine = torch.rand(2, 32, 48) + 1.0
    reference = pool_depth(fine, (2, 3))[0] * 3.0  # the memory's cell depth: median of the cell's pixels
    aligned, scale = align_depth_to_reference(fine, reference, min_cells=4)
    assert scale == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(aligned, fine * 3.0)
    unchanged, none = align_depth_to_reference(fine, torch.zeros(2, 2, 3))
    assert none is None and unchanged is fine


def test_nearest_resampling_round_trip():
    coarse = torch.arange(6.0).reshape(2, 3) + 1
    fine = upsample_depth_nearest(coarse, (32, 48))
    assert fine.shape == (32, 48)
    assert torch.equal(pool_depth(fine, (2, 3))[0], coarse)  # the memory's pooling gives the cells back


def test_given_depth_tensor_and_callable():
    frames = torch.rand(2, 3, 16, 16)
    depth = torch.rand(5, 16, 16) + 1.0
    provider = GivenDepth(depth)
    assert isinstance(provider, DepthProvider) and provider.metric
    assert torch.equal(provider(frames, frame_indices=torch.tensor([4, 1])), depth[[4, 1]])
    with pytest.raises(ValueError, match="out of range"):
        provider(frames, frame_indices=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="frame_indices"):
        provider(frames)

    K = intrinsics_from_fov(90, 16, 16).expand(2, 3, 3)
    c2w = torch.eye(4).expand(2, 4, 4)
    calls = GivenDepth(lambda k, p: torch.full((p.shape[0], 16, 16), 7.0))
    assert torch.equal(calls(frames, intrinsics=K, cam_to_world=c2w), torch.full((2, 16, 16), 7.0))
    wrong = GivenDepth(lambda k, p: torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        wrong(frames, intrinsics=K, cam_to_world=c2w)
    with pytest.raises(ValueError, match="frames"):
        provider(torch.rand(3, 16, 16), frame_indices=[0])


def _tiny_depth_anything(tmp_path, kind: str):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(image_size=56, patch_size=14, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                            intermediate_size=32, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
                                 fusion_hidden_size=8, head_hidden_size=4, depth_estimation_type=kind, max_depth=20)
    model = DepthAnythingForDepthEstimation(config)
    if kind == "relative":  # random weights can sit at the ReLU's zero: lift the output so 1/x is defined
        torch.nn.init.constant_(model.head.conv3.bias, 1.0)
    path = tmp_path / kind
    model.save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["metric", "relative"])
def test_depth_anything_provider_tiny(tmp_path, kind):
    path = _tiny_depth_anything(tmp_path, kind)
    provider = DepthAnythingProvider.from_pretrained(str(path))
    assert provider.metric == (kind == "metric")
    assert provider._input_size(48, 64) == (42, 56)  # scales as little as possible (DPT), multiples of 14
    frames = torch.rand(2, 3, 48, 64)
    depth = provider(frames)
    assert depth.shape == (2, 48, 64) and depth.dtype == torch.float32
    assert valid_depth_mask(depth).all()
    if kind == "metric":
        assert float(depth.max()) <= 20.0
    assert torch.equal(depth, provider(frames))


def test_depth_anything_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        DepthAnythingProvider.from_pretrained(str(tmp_path / "no-such-model"))


def test_readout_depth_is_the_memory_depth():
    from mirage.memory import LatentSpatialMemory

    H, W = 32, 48
    K = intrinsics_from_fov(70, H, W)
    c2w = torch.eye(4)
    wall = torch.full((H, W), 3.0)
    wall[:, :16] = float("inf")  # nothing there: the memory stays empty on that side
    memory = LatentSpatialMemory(channels=4, voxel_size=None)
    memory.insert(torch.randn(4, 2, 3), wall, K, c2w)
    frames = torch.rand(1, 3, H, W)
    depth = ReadoutDepth()(frames, intrinsics=K[None], cam_to_world=c2w[None], memory=memory)
    assert depth.shape == (1, H, W)
    assert torch.allclose(depth[0, :, 16:], torch.full((H, 32), 3.0), rtol=1e-4)
    assert not valid_depth_mask(depth[0, :, :16]).any()
    with pytest.raises(ValueError, match="memory"):
        ReadoutDepth()(frames)


def test_readout_depth_reads_the_given_grid_without_encoding():
    """ReadoutDepth on an RGB memory at a stride-8 grid: depth only (visibility), the encoder is never called."""
    from mirage.camera import make_intrinsics
    from mirage.perception.depth import ReadoutDepth
    from mirage.memory import RGBPointCloudMemory

    def encoder(rgb):  # a depth read must not encode
        raise AssertionError("encoder called")

    H, W = 64, 96
    memory = RGBPointCloudMemory(encoder, channels=48)
    K = make_intrinsics(60.0, 60.0, W / 2, H / 2)
    memory.insert_batch(torch.rand(1, 3, H, W), torch.full((1, H, W), 2.0), K, torch.eye(4)[None])
    depth = ReadoutDepth()(torch.rand(1, 3, H, W), intrinsics=K, cam_to_world=torch.eye(4)[None], memory=memory,
                           grid_size=(8, 12))
    assert depth.shape == (1, H, W) and torch.allclose(depth, torch.full_like(depth, 2.0))
