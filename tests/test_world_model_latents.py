"""Same-type latents (issue 10): the memory holds target-type latents, on the tiny stride-4 model and at stride 1.

Also runs the rollout against a memory that implements only the memory protocol's names, so the pipeline
cannot lean on anything else (``stores_pixels``, ``insert_batch``, ``read``).
"""

import pytest
import torch

from mirage.autoencoders import PatchifyAutoencoder
from mirage.camera import intrinsics_from_fov, look_at
from mirage.perception.depth import GivenDepth
from mirage.pipeline import MirageWorldModel, WorldModelConfig
from mirage.pipeline.loading import build_transformer

H, W = 64, 96
WALL = 4.0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return MirageWorldModel.from_pretrained("tiny")


def trajectory(T: int, step: float = 0.05) -> torch.Tensor:
    return torch.stack([look_at([step * i, 0.0, 0.0], [step * i, 0.0, 1.0], up=[0.0, -1.0, 0.0]) for i in range(T)])


def K() -> torch.Tensor:
    return intrinsics_from_fov(70.0, H, W)


def image(seed: int = 1) -> torch.Tensor:
    return torch.rand(3, H, W, generator=torch.Generator().manual_seed(seed))


def wall_depth(K, c2w):
    return torch.full((c2w.shape[0], H, W), WALL)


class ProtocolMemory:
    """The memory protocol and nothing else, over a real latent memory; records every observe_batch call."""

    def __init__(self, inner):
        self._inner = inner
        self.calls = []

    channels = property(lambda self: self._inner.channels)
    dtype = property(lambda self: self._inner.dtype)
    device = property(lambda self: self._inner.device)

    def __len__(self):
        return len(self._inner)

    def read_batch(self, intrinsics, cam_to_world, image_size, latent_size):
        return self._inner.read_batch(intrinsics, cam_to_world, image_size, latent_size)

    def observe_batch(self, rgb, depth, intrinsics, cam_to_world, exclude=None, *, encode=None, latents=None):
        stored = latents if latents is not None else encode(rgb)
        self.calls.append({"rgb": rgb.clone(), "latents": latents, "stored": stored.clone(), "c2w": cam_to_world})
        return self._inner.insert_batch(stored.to(self.dtype), depth, intrinsics, cam_to_world, exclude)

    def copy(self):
        raise NotImplementedError  # not needed by a rollout

    def stats(self):
        return self._inner.stats()


def test_encode_images_is_the_static_group_latent(model):
    assert (model.temporal_stride, model.spatial_stride) == (4, 16)
    x = torch.stack([image(1), image(2)])
    static = (x * 2 - 1)[:, :, None].expand(-1, -1, 5, -1, -1).contiguous()  # 1 + stride copies
    group = model.backbone.encode(static)
    assert torch.equal(model.encode_images(x), group[:, :, 1])
    alone = model.backbone.encode((x * 2 - 1)[:, :, None])[:, :, 0]
    assert torch.equal(model.encode_context_frames(x), alone)
    # causal: latent 0 of any clip is frame 0 alone, up to float rounding (the convolutions run over 5 frames vs 1,
    # and a BLAS may block a different shape differently: ~1e-7 relative per layer here)
    torch.testing.assert_close(group[:, :, 0], alone, rtol=1e-5, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(alone.flatten(1), group[:, :, 1].flatten(1)).min()
    assert cos < 0.99  # the two types differ (the tiny random VAE; mirage-tiny's VAE: cosine 0.09)
    decoded = model.decode_images(model.encode_images(x))
    assert decoded.shape == (2, 3, H, W) and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(ValueError, match="rgb"):
        model.encode_images(x[0])
    with pytest.raises(ValueError, match="multiples of 16"):
        model.encode_images(torch.rand(1, 3, 40, 40))


def test_observe_stores_target_type_latents(model):
    memory = model.new_memory(voxel_size=None)
    n = model.observe(memory, image(), torch.full((H, W), WALL), K(), torch.eye(4))
    h, w = model.latent_size
    assert n == h * w
    readout = memory.read_batch(K(), torch.eye(4)[None], (H, W), model.latent_size)
    assert readout.mask.all()
    assert torch.equal(readout.features[0], model.encode_images(image()[None])[0])


@pytest.mark.parametrize("source", ["denoised", "reencoded"])
def test_chunk_latents_written_to_the_memory(source):
    model = MirageWorldModel.from_pretrained("tiny", memory_latents=source)
    memory = ProtocolMemory(model.new_memory(voxel_size=None))
    model.observe(memory, image(), torch.full((H, W), WALL), K(), torch.eye(4))
    final = {}

    def keep_last(chunk, step, latents):
        final[chunk.index] = latents.clone()

    model.depth_provider = GivenDepth(wall_depth)
    res = model.rollout(memory, K(), trajectory(17), first_frame=image(), num_inference_steps=2,
                        step_callback=keep_last)
    h, w = model.latent_size
    assert res.frames.shape == (17, H, W, 3)
    assert res.memory_points_added == 4 * h * w  # 2 chunks x 2 new latent frames, every cell on the wall
    updates = memory.calls[1:]  # calls[0] is observe() above
    assert len(updates) == 2
    for index, call in enumerate(updates):
        assert call["rgb"].shape == (2, 3, H, W)
        # at the pose of each latent frame's representative pixel frame
        assert torch.equal(call["c2w"], trajectory(17)[[4 + 8 * index, 8 + 8 * index]])
        if source == "denoised":  # exactly the chunk's denoised latents of its new positions 1 and 2
            assert torch.equal(call["latents"], final[index][0, :, 1:].transpose(0, 1))
        else:  # the decoded representative frames (4, 8 / 12, 16), re-encoded as target type
            assert call["latents"] is None
            assert torch.equal(call["stored"], model.encode_images(call["rgb"]))
            frames = torch.from_numpy(res.frames[[4 + 8 * index, 8 + 8 * index]]).permute(0, 3, 1, 2) / 255
            assert (call["rgb"] - frames).abs().max() <= 0.5 / 255 + 1e-6


class PerFrameBackbone:
    """The tiny backbone's transformer and text with a weight-free per-frame autoencoder: temporal stride 1."""

    temporal_stride, spatial_stride, latent_channels = 1, 4, 48

    def __init__(self, tiny):
        self.tiny = tiny
        self.transformer = tiny.transformer
        self.autoencoder = PatchifyAutoencoder(stride=4)  # 3 * 4 * 4 = 48 channels

    device = property(lambda self: self.tiny.device)
    dtype = property(lambda self: self.tiny.dtype)

    def encode_prompt(self, prompt):
        return self.tiny.encode_prompt(prompt)

    def encode(self, video):  # (B, 3, T, H, W) -> (B, 48, T, h, w), each frame alone
        B, _, T = video.shape[:3]
        z = self.autoencoder.encode(video.transpose(1, 2).flatten(0, 1))
        return z.view(B, T, *z.shape[1:]).transpose(1, 2)

    def decode(self, latents):
        B, _, T = latents.shape[:3]
        x = self.autoencoder.decode(latents.transpose(1, 2).flatten(0, 1))
        return x.view(B, T, *x.shape[1:]).transpose(1, 2)


@pytest.mark.parametrize("source", ["denoised", "reencoded"])
def test_stride_one_backbone_rolls_out(model, source):
    config = WorldModelConfig(height=H, width=W, chunk_frames=9, memory_latents=source)
    backbone = PerFrameBackbone(model.backbone)
    wm = MirageWorldModel(config, backbone, build_transformer(backbone.transformer, config, None),
                          depth_provider=GivenDepth(wall_depth))
    assert (wm.temporal_stride, wm.latent_size, wm.chunk_latent_frames) == (1, (16, 24), 9)
    x = image()[None]
    assert torch.equal(wm.encode_images(x), wm.encode_context_frames(x))  # one latent type at stride 1
    assert torch.allclose(wm.decode_images(wm.encode_images(x)), x, atol=1e-6)
    memory = ProtocolMemory(wm.new_memory(voxel_size=None))
    wm.observe(memory, image(), torch.full((H, W), WALL), K(), torch.eye(4))
    res = wm.rollout(memory, K(), trajectory(14), first_frame=image(), num_inference_steps=1)  # any length
    assert res.frames.shape == (14, H, W, 3)
    assert [c["rgb"].shape[0] for c in memory.calls[1:]] == [8, 5]  # every frame is a latent frame
    assert res.memory_points_added == 13 * 16 * 24
    with pytest.raises(ValueError, match="multiples of 8"):
        MirageWorldModel(WorldModelConfig(height=68, width=W), backbone, wm.transformer)


def test_bad_memory_latents_option():
    with pytest.raises(ValueError, match="memory_latents"):
        WorldModelConfig(memory_latents="decoded")
