"""A goal asking for the reference code's inference runs through the real node and the tiny model."""

from __future__ import annotations

from test_node import _seed, env, rig, world_model  # noqa: F401 (fixtures and the seeding helper)


def test_reference_inference_goal_runs_and_restores_the_model(env):  # noqa: F811 (the imported fixture)
    from action_msgs.msg import GoalStatus

    _seed(env)
    before = env.world_model.config
    g = env.goal((0, 2, 4), num_frames=17)  # 2 chunks of the tiny model: the second gets preceding and retrieved frames
    g.inference, g.guidance_scale = "reference", 2.0
    res = env.result(env.send(g))
    assert res.status == GoalStatus.STATUS_SUCCEEDED, res.result.message
    assert res.result.frames_generated == 17 and env.world_model.config is before
    bad = env.goal((0, 2, 4), num_frames=5)
    bad.inference = "fast"
    res = env.result(env.send(bad))
    assert res.status == GoalStatus.STATUS_ABORTED and "inference must be one of" in res.result.message
