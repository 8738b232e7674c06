"""mirage_ros.core.memory_holder: one writer lock, lock-free readers, MemoryBusy, load / clear / snapshot."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from mirage.camera import look_at, make_intrinsics
from mirage.memory import LatentSpatialMemory
from mirage_ros.core.memory_holder import MemoryBusy, MemoryHolder

H, W = 32, 48
K = make_intrinsics(40.0, 40.0, W / 2, H / 2)


class Encoder:
    """world_model.observe's contract with a deterministic encoder (latent = mean colour), recording lock state."""

    def __init__(self, holder=None):
        self.holder, self.locked_during_observe = holder, []

    def observe(self, memory, rgb, depth, intrinsics, cam_to_world):
        if self.holder is not None:  # RLock._is_owned: is this thread the writer?
            self.locked_during_observe.append(self.holder._lock._is_owned())
        latent = rgb.mean(dim=(1, 2))[:, None, None].expand(3, H // 16, W // 16).contiguous()
        return memory.insert(latent.to(memory.dtype), depth, intrinsics, cam_to_world)


def frame(i: int):
    rgb = torch.full((3, H, W), 0.1 * (i % 10))
    return rgb, torch.full((H, W), 2.0 + 0.1 * i), K, look_at([0.3 * i, 0, 0], [0.3 * i + 1, 0, 0])


def holder_with(n: int = 0) -> MemoryHolder:
    holder = MemoryHolder(LatentSpatialMemory(channels=3, voxel_size=None))
    for i in range(n):
        holder.observe(Encoder(), *frame(i))
    return holder


def test_observe_is_one_locked_write_and_counts_keyframes():
    holder = holder_with()
    encoder = Encoder(holder)
    assert holder.observe(encoder, *frame(0)) > 0
    assert encoder.locked_during_observe == [True] and not holder._lock._is_owned()
    assert holder.keyframes == 1 and len(holder.memory) == (H // 16) * (W // 16)
    version = holder.version()
    with pytest.raises(ValueError):
        holder.observe(encoder, torch.zeros(3, H, W), torch.ones(H, W), K, torch.eye(3))  # not a (4, 4) pose
    assert holder.keyframes == 1 and holder.version() == version


def test_readers_do_not_wait_for_a_writer_and_other_writers_get_busy(tmp_path):
    holder = holder_with(2)
    held, release = threading.Event(), threading.Event()

    def goal():
        with holder.exclusive("a goal"):
            held.set()
            release.wait(10.0)

    writer = threading.Thread(target=goal, daemon=True)
    writer.start()
    assert held.wait(10.0)
    try:
        # readers: no lock
        assert holder.stats()["points"] == len(holder.memory) > 0 and holder.version()[0] == 0
        xyz, rgb = holder.export_points(5)
        assert xyz.shape == (5, 3) and rgb.dtype == np.uint8
        holder.save(str(tmp_path / "during.safetensors"))
        # writers that cannot wait: refused, naming the holder
        with pytest.raises(MemoryBusy, match=r"a goal \(for \d+\.\d s\)"):
            holder.clear(timeout=0.05)
        with pytest.raises(MemoryBusy, match="a goal"):
            holder.load(str(tmp_path / "during.safetensors"), timeout=0.05)
        # a writer that can wait (the ingest) waits for the goal
        ingested = threading.Event()
        ingest = threading.Thread(target=lambda: (holder.observe(Encoder(), *frame(5)), ingested.set()), daemon=True)
        ingest.start()
        assert not ingested.wait(0.2)
    finally:
        release.set()
    writer.join(10.0)
    assert ingested.wait(10.0) and holder.keyframes == 3
    assert len(LatentSpatialMemory.load(tmp_path / "during.safetensors")) == 2 * (H // 16) * (W // 16)


def test_load_and_clear_swap_atomically_and_failures_change_nothing(tmp_path):
    holder = holder_with(3)
    path = holder.save(str(tmp_path / "sub" / "memory.safetensors"))
    points = holder.memory.points.clone()
    (tmp_path / "junk.safetensors").write_bytes(b"not a memory")
    LatentSpatialMemory(channels=8).save(tmp_path / "narrow.safetensors")
    for bad, word in ((tmp_path / "missing.safetensors", "no file"), (tmp_path / "junk.safetensors", "cannot read"),
                      (tmp_path / "narrow.safetensors", "channel"), ("", "empty")):
        with pytest.raises(ValueError, match=word):
            holder.load(str(bad) if bad else "", expect_channels=3)
        assert torch.equal(holder.memory.points, points) and holder.keyframes == 3
    with pytest.raises(ValueError, match="directory"):
        holder.save(str(tmp_path))
    holder.clear()
    assert len(holder.memory) == 0 and holder.keyframes == 0 and holder.version()[0] == 1
    assert holder.load(path, expect_channels=3, device="cpu") == len(points)
    assert torch.equal(holder.memory.points, points) and holder.path == path and holder.version()[0] == 2


def test_snapshot_is_frozen_and_a_scratch_memory():
    holder = holder_with(2)
    snap = holder.snapshot()
    n = len(snap)
    holder.observe(Encoder(), *frame(3))
    assert len(snap) == n < len(holder.memory)
    Encoder().observe(snap, *frame(7))  # writing the copy leaves the holder's memory alone
    assert len(holder.memory) == 3 * (H // 16) * (W // 16) and len(snap) == 3 * (H // 16) * (W // 16)
    assert not torch.equal(snap.points, holder.memory.points)


def test_concurrent_reads_always_see_whole_writes():
    holder = holder_with(1)
    errors, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            memory = holder.memory
            try:
                store = memory._store  # what every read uses: one store, points and values of one length
                assert store.points.shape[0] == store.values.shape[0]
                readout = memory.read_batch(K, frame(0)[3][None], (H, W), (H // 16, W // 16))
                assert readout.features.shape == (1, 3, H // 16, W // 16)
                holder.stats()
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

    readers = [threading.Thread(target=read, daemon=True) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(40):
        holder.observe(Encoder(), *frame(i))
    stop.set()
    for r in readers:
        r.join(10.0)
    assert not errors, errors[:3]
    assert holder.keyframes == 41
