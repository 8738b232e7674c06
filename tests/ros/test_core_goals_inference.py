"""The ImagineTrajectory goal's ``inference`` and ``guidance_scale`` fields reach the rollout (no ROS graph)."""

from __future__ import annotations

import contextlib

import pytest

from mirage.pipeline.config import REFERENCE_INFERENCE, WorldModelConfig
from mirage_ros.core.goals import ABORTED, SUCCEEDED, goal_inference
from test_core_goals import GatedModel, _run_goal, goal, make_runner


class OptionsModel(GatedModel):
    """GatedModel with a config, ``inference_options`` (as MirageWorldModel's) and rollout keywords recorded."""

    def __init__(self):
        super().__init__()
        self.config = WorldModelConfig()
        self.seen = []

    @contextlib.contextmanager
    def inference_options(self, **overrides):
        previous, self.config = self.config, WorldModelConfig(**{**self.config.__dict__, **overrides})
        try:
            yield self
        finally:
            self.config = previous

    def rollout(self, memory, K, c2w, *, guidance_scale=None, **kw):
        self.seen.append((self.config, guidance_scale))
        return super().rollout(memory, K, c2w, **kw)


@pytest.mark.parametrize("inference, scale, expect", [("", 0.0, {}), ("mirage", 0.0, {}),
                                                      ("reference", 5.0, REFERENCE_INFERENCE)])
def test_goal_fields_reach_the_rollout(inference, scale, expect):
    runner, model, _ = make_runner(model=OptionsModel())
    model.gate.set()
    g = goal(num_frames=5)
    g.inference, g.guidance_scale = inference, scale
    _, out = _run_goal(runner, g)
    assert out.status == SUCCEEDED
    config, guidance = model.seen[0]
    assert {k: getattr(config, k) for k in REFERENCE_INFERENCE} == {**{k: getattr(WorldModelConfig(), k)
                                                                         for k in REFERENCE_INFERENCE}, **expect}
    assert guidance == (scale or None)
    assert model.config == WorldModelConfig()  # restored after the goal


def test_goals_without_the_fields_and_bad_values():
    assert goal_inference(goal()) == ({}, {})  # an older interface: nothing asked
    runner, model, _ = make_runner(model=OptionsModel())
    model.gate.set()
    g = goal(num_frames=5)
    g.inference = "fast"
    _, out = _run_goal(runner, g)
    assert out.status == ABORTED and "inference must be one of" in out.message and not model.seen
