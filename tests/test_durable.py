"""Atomic and durable saves: the data is fsynced before the rename, and the directory after it."""

from __future__ import annotations

import os

import pytest
import torch

import mirage.durable as durable
from mirage.memory import LatentSpatialMemory


@pytest.fixture
def journal(monkeypatch):
    """Record every fsync (by path) and rename, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src), os.path.realpath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable.os, "replace", replace)
    return events


def test_a_file_is_synced_then_renamed_then_its_directory_synced(tmp_path, journal):
    tmp, target = tmp_path / "a.tmp", tmp_path / "a.bin"
    tmp.write_bytes(b"payload")
    durable.durable_replace(tmp, target)
    assert target.read_bytes() == b"payload" and not tmp.exists()
    assert journal == [("fsync", str(tmp)), ("replace", str(tmp), str(target)), ("fsync", str(tmp_path))]


def test_a_directory_tree_is_synced_bottom_up_before_the_rename(tmp_path, journal):
    tmp = tmp_path / "ckpt.tmp"
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "w.safetensors").write_bytes(b"w")
    (tmp / "state.json").write_text("{}")
    durable.durable_replace(tmp, tmp_path / "ckpt")
    synced = [e[1] for e in journal if e[0] == "fsync"]
    rename = next(i for i, e in enumerate(journal) if e[0] == "replace")
    before = set(synced[:rename])
    assert {str(tmp / "model" / "w.safetensors"), str(tmp / "state.json"), str(tmp / "model"), str(tmp)} <= before
    assert synced[:rename].index(str(tmp / "model" / "w.safetensors")) < synced[:rename].index(str(tmp / "model"))
    assert synced[rename:] == [str(tmp_path)] and (tmp_path / "ckpt" / "model" / "w.safetensors").is_file()


def test_memory_save_goes_through_the_durable_rename(tmp_path, journal):
    memory = LatentSpatialMemory(4, voxel_size=None)
    memory.insert(torch.rand(4, 2, 3), torch.full((8, 12), 2.0), torch.tensor([[8.0, 0, 6], [0, 8.0, 4], [0, 0, 1]]),
                  torch.eye(4))
    memory.save(tmp_path / "m.safetensors")
    kinds = [e[0] for e in journal]
    assert kinds == ["fsync", "replace", "fsync"], journal
    assert len(LatentSpatialMemory.load(tmp_path / "m.safetensors")) == len(memory)
