"""StampClock: seconds -> write stamps for decay, against a real memory."""

from __future__ import annotations

import torch

from mirage.camera import intrinsics_from_fov
from mirage.memory import LatentSpatialMemory
from mirage_ros.core.decay import StampClock

H, W = 32, 48
K = intrinsics_from_fov(60.0, H, W)


def wall(memory, x: float) -> None:
    T = torch.eye(4)
    T[0, 3] = x
    memory.insert(torch.randn(4, 2, 3), torch.full((H, W), 2.0), K, T)


def test_points_go_only_after_they_were_not_written_for_the_given_seconds():
    memory, clock = LatentSpatialMemory(channels=4, voxel_size=0.01), StampClock()
    wall(memory, 0.0)                                   # written at t=0
    clock.sample(0, memory.frames_inserted, 0.0)
    assert clock.forget_stamp(5.0, 4.9) is None         # nothing is 5 s old yet
    wall(memory, 10.0)                                  # written at t=3
    clock.sample(0, memory.frames_inserted, 3.0)
    clock.sample(0, memory.frames_inserted, 4.0)        # no write: no new sample needed
    stamp = clock.forget_stamp(5.0, 6.0)                # t=0 is 6 s ago: the first wall goes, the second stays
    assert memory.forget_older_than(stamp) == 6 and (memory.points[:, 0] > 5).all()
    assert clock.forget_stamp(5.0, 7.9) == stamp        # the t=3 write is not 5 s old yet
    assert memory.forget_older_than(clock.forget_stamp(5.0, 8.0)) == 6 and len(memory) == 0


def test_a_new_generation_restarts_the_samples():
    clock = StampClock()
    clock.sample(0, 10, 0.0)
    clock.sample(1, 2, 1.0)  # cleared or loaded: stamps restarted
    assert clock.forget_stamp(5.0, 5.5) is None
    assert clock.forget_stamp(5.0, 6.0) == 3
    assert len(clock._samples) == 1
