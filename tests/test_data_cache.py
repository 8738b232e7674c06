"""Latent cache and synthetic clips."""

import pytest
import torch

from mirage.data import collate_clips
from mirage.data.encoded_clips import CachedLatentDataset, LatentCache
from mirage.data.synthetic import SyntheticClipDataset
from mirage.pipeline import MirageWorldModel


@pytest.fixture(scope="module")
def dataset():
    return SyntheticClipDataset(num_scenes=2, num_frames=5, image_size=(32, 64), num_objects=3, num_dynamic=1,
                                trajectories=("forward", "turn"))


def test_synthetic_clips_are_deterministic_and_complete(dataset):
    a, b = dataset[0], SyntheticClipDataset(num_scenes=2, num_frames=5, image_size=(32, 64), num_objects=3,
                                            num_dynamic=1, trajectories=("forward", "turn"))[0]
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.cam_to_world, b.cam_to_world)
    assert a.rgb.shape == (5, 3, 32, 64) and a.depth.shape == (5, 32, 64) and a.dynamic.dtype == torch.bool
    assert dataset.item_name(1) == dataset[1].name and dataset.item_name(0) != dataset.item_name(1)
    batch = collate_clips([a, b])
    assert batch["rgb"].shape == (2, 5, 3, 32, 64)
    with pytest.raises(ValueError, match="trajectories"):
        SyntheticClipDataset(trajectories=("spiral",))


def test_cache_builds_once_and_reloads_exactly(dataset, tmp_path, monkeypatch):
    model = MirageWorldModel.from_pretrained("tiny", height=32, width=64)
    cache = LatentCache(tmp_path)
    keys = cache.build(dataset, model, progress=False)
    assert len(keys) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2
    item = CachedLatentDataset(cache, keys)[0]
    direct = dataset[0]
    assert item.latents.shape == (48, 2, 2, 4) and item.name == direct.name
    assert torch.allclose(item.source_latents[0], model.encode_images(direct.rgb[:1])[0], atol=1e-6)
    # A second build encodes nothing; another memory layout gets other keys.
    monkeypatch.setattr(dataset, "__getitem__", lambda i: pytest.fail("re-encoded a cached clip"))
    assert cache.build(dataset, model, progress=False) == keys
    monkeypatch.undo()
    assert set(cache.build(dataset, model, memory_frames=(0, 4), progress=False)).isdisjoint(keys)


def test_damaged_cache_file_raises_clearly(tmp_path):
    cache = LatentCache(tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable"):
        cache.load("bad")
    with pytest.raises(ValueError, match="not in the cache"):
        CachedLatentDataset(cache, ["missing"])
