"""mirage_ros.core.cache_files: save / load names stay inside cache_directory; a refusal says why, creates nothing."""

from __future__ import annotations

import os

import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at
from mirage.memory import LatentSpatialMemory
from mirage_ros.core.cache_files import CacheDirectory, default_cache_directory
from mirage_ros.core.memory_holder import MemoryHolder


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_names_resolve_inside_and_saves_create_only_below(tmp_path):
    cache = CacheDirectory(tmp_path / "cache")
    assert cache.resolve("room.safetensors") == tmp_path / "cache" / "room.safetensors"
    assert not (tmp_path / "cache").exists()  # resolving touches nothing
    target = cache.for_save("maps/kitchen/room.safetensors")
    assert target == tmp_path / "cache" / "maps" / "kitchen" / "room.safetensors"
    assert tree(tmp_path) == ["cache", "cache/maps", "cache/maps/kitchen"]


@pytest.mark.parametrize("name, word", [
    ("", "give a file name"), ("   ", "give a file name"), ("/etc/mirage.safetensors", "absolute"),
    ("/memory.safetensors", "absolute"), ("~/memory.safetensors", "absolute"),
    ("../memory.safetensors", "'..'"), ("maps/../../memory.safetensors", "'..'"), ("a/..", "'..'"),
    ("memory.txt", ".safetensors"), (".safetensors", ".safetensors"), ("maps/", ".safetensors"),
])
def test_every_refusal_says_why_and_creates_nothing(tmp_path, name, word):
    cache = CacheDirectory(tmp_path / "cache")
    with pytest.raises(ValueError, match=word):
        cache.for_save(name)
    with pytest.raises(ValueError):
        cache.for_load(name)
    assert tree(tmp_path) == []


def test_symbolic_links_out_of_the_directory_are_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache" / "escape")
    os.symlink(tmp_path / "elsewhere" / "x.safetensors", tmp_path / "cache" / "file.safetensors")
    cache = CacheDirectory(tmp_path / "cache")
    for name in ("escape/memory.safetensors", "file.safetensors", "escape/deeper/memory.safetensors"):
        with pytest.raises(ValueError, match="outside"):
            cache.for_save(name)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_load_needs_an_existing_file_and_a_directory_is_not_one(tmp_path):
    cache = CacheDirectory(tmp_path)
    with pytest.raises(ValueError, match="no file"):
        cache.for_load("missing.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ValueError, match="directory"):
        cache.for_save("dir.safetensors")
    with pytest.raises(ValueError, match="no file"):
        cache.for_load("dir.safetensors")


def test_default_is_under_ros_home(tmp_path):
    assert default_cache_directory({"ROS_HOME": str(tmp_path)}) == tmp_path / "mirage"
    assert str(default_cache_directory({})).endswith(os.path.join(".ros", "mirage"))


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    """The memory's save writes a temporary file and renames it: a crash mid-write never touches the target."""
    memory = LatentSpatialMemory(channels=4, voxel_size=None)
    memory.insert(torch.ones(4, 2, 3), torch.full((32, 48), 2.0), intrinsics_from_fov(75.0, 32, 48),
                  look_at([0, 0, 0], [1, 0, 0]))
    holder = MemoryHolder(memory)
    target = CacheDirectory(tmp_path).for_save("room.safetensors")
    holder.save(str(target))
    before = target.read_bytes()
    memory.insert(torch.ones(4, 2, 3), torch.full((32, 48), 3.0), intrinsics_from_fov(75.0, 32, 48),
                  look_at([0, 0, 0], [-1, 0, 0]))

    import safetensors.torch

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        holder.save(str(target))
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["room.safetensors"]
