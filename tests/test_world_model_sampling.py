"""The flow sampler and the chunk plan, without a network."""

import pytest
import torch

from mirage.pipeline import CancelToken, pad_trajectory, padded_length, plan_chunks
from mirage.pipeline.sampling import make_scheduler, sample_chunk


def _exact_flow(x0, scheduler, steps):
    """The flow an ideal model predicts: x_s = (1 - s) x0 + s eps  =>  v = eps - x0 = (x_s - x0) / s.

    The scheduler's timesteps are rounded; the model looks up the exact sigma of each one."""
    scheduler.set_timesteps(steps)
    sigma_of = {int(t): float(s) for t, s in zip(scheduler.timesteps, scheduler.sigmas)}

    def model(latents, timestep):
        per_frame = timestep.view(latents.shape[2], -1)[:, 0]
        assert per_frame[0] == 0  # the context frame is clean
        sigma = torch.tensor([sigma_of.get(int(t), 1.0) for t in per_frame]).view(1, 1, -1, 1, 1)
        return (latents - x0) / sigma

    return model


def test_sampler_lands_on_the_data_with_an_exact_flow():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 48, 3, 4, 6, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    context = torch.zeros_like(x0)
    context[:, :, 0] = x0[:, :, 0]
    is_context = torch.tensor([True, False, False])
    seen = []
    scheduler = make_scheduler()
    out = sample_chunk(_exact_flow(x0, make_scheduler(), 6), noise, context, is_context, scheduler, 6,
                       on_step=lambda i, lat: seen.append(lat[:, :, 0].clone()))
    assert torch.allclose(out, x0, atol=1e-3)
    assert len(seen) == 6 and all(torch.equal(s, x0[:, :, 0]) for s in seen)


def test_sampler_stops_when_asked():
    x0 = torch.zeros(1, 48, 2, 2, 2)
    calls = []

    def model(latents, timestep):
        calls.append(1)
        return torch.zeros_like(latents)

    token = CancelToken()
    out = sample_chunk(model, torch.randn(x0.shape), x0, torch.tensor([True, False]), make_scheduler(), 5,
                       on_step=lambda i, lat: token.cancel(), should_stop=lambda: token.cancelled)
    assert out is None and len(calls) == 1


def test_sampler_checks_shapes():
    x = torch.zeros(1, 48, 2, 2, 2)
    with pytest.raises(ValueError):
        sample_chunk(lambda a, b: a, x, x, torch.tensor([True, False, False]), make_scheduler(), 2)
    with pytest.raises(ValueError):
        sample_chunk(lambda a, b: a, x, x, torch.tensor([True, False]), make_scheduler(), 0)


def test_scheduler_is_unipc_flow_shift_5():
    s = make_scheduler()
    assert type(s).__name__ == "UniPCMultistepScheduler"
    assert s.config.prediction_type == "flow_prediction" and s.config.use_flow_sigmas and s.config.flow_shift == 5.0


def test_chunk_plan():
    assert plan_chunks(1, 9, temporal_stride=4) == []
    chunks = plan_chunks(65, 9, temporal_stride=4)
    assert [(c.start, c.length, c.context) for c in chunks] == [(0, 9, 1), (8, 9, 1)]
    assert [tuple(c.new_pixel_frames)[::31] for c in chunks] == [(1, 32), (33, 64)]
    short = plan_chunks(41, 9, temporal_stride=4)  # the last chunk generates fewer frames
    assert [(c.start, c.length) for c in short] == [(0, 9), (8, 3)] and short[-1].new_pixel_frames == range(33, 41)
    two = plan_chunks(65, 9, context_latent_frames=2, temporal_stride=4)
    assert [(c.start, c.length, c.context) for c in two] == [(0, 9, 1), (7, 9, 2), (14, 3, 2)]
    covered = [f for c in two for f in c.new_pixel_frames]
    assert covered == list(range(1, 65))
    for bad in (0, 10, 32):
        with pytest.raises(ValueError):
            plan_chunks(bad, 9, temporal_stride=4)
    with pytest.raises(ValueError):
        plan_chunks(9, 2, context_latent_frames=2, temporal_stride=4)


def test_chunk_plan_at_stride_one():
    # a per-frame autoencoder: every pixel frame is a latent frame, windows of 9 add 8 frames each
    chunks = plan_chunks(17, 9, temporal_stride=1)
    assert [(c.start, c.length, c.context) for c in chunks] == [(0, 9, 1), (8, 9, 1)]
    assert [c.new_pixel_frames for c in chunks] == [range(1, 9), range(9, 17)]
    assert chunks[1].pixel_frames.tolist() == list(range(8, 17)) and chunks[1].pixel_offset == 8
    assert plan_chunks(10, 9, temporal_stride=1)[-1].new_pixel_frames == range(9, 10)  # any T works at stride 1
    four = plan_chunks(17, 3, temporal_stride=4)[1]
    assert four.pixel_frames.tolist() == [8, 12, 16] and four.pixel_offset == 8
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="temporal_stride"):
            plan_chunks(9, 3, temporal_stride=bad)


def test_pad_trajectory_holds_the_last_pose():
    from mirage.camera import look_at

    poses = torch.stack([look_at([0.1 * i, 0, 0], [0.1 * i, 0, 1], up=[0, -1, 0]) for i in range(7)])
    padded = pad_trajectory(poses, 4)
    assert padded.shape == (9, 4, 4)
    assert torch.equal(padded[:7], poses) and torch.equal(padded[7], poses[6]) and torch.equal(padded[8], poses[6])
    assert torch.equal(pad_trajectory(poses[:5], 4), poses[:5])
    assert pad_trajectory(poses, 1) is poses  # every length is whole at stride 1
    assert pad_trajectory(poses[:1], 4).shape == (1, 4, 4)
    assert [padded_length(n, 4) for n in (1, 2, 5, 6, 9, 10)] == [1, 5, 5, 9, 9, 13]
    assert [padded_length(n, 1) for n in (1, 2, 7)] == [1, 2, 7]
    with pytest.raises(ValueError, match="num_frames"):
        pad_trajectory(poses[:0], 4)
    with pytest.raises(ValueError, match="poses"):
        pad_trajectory(poses[0], 4)


@pytest.mark.parametrize("steps", [1, 6, 20])
def test_sampler_with_a_sample_prediction_returns_it_exactly(steps):
    """prediction_type="sample": a model that knows x0 gives x0 after any number of steps (the flow is built
    with the scheduler's own sigma, so the scheduler's x0 = x_s - sigma v is the prediction)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 48, 3, 4, 6, generator=g)
    context = torch.zeros_like(x0)
    context[:, :, 0] = x0[:, :, 0]
    out = sample_chunk(lambda latents, timestep: x0.clone(), torch.randn(x0.shape, generator=g), context,
                       torch.tensor([True, False, False]), make_scheduler(), steps, prediction_type="sample")
    assert torch.allclose(out, x0, atol=1e-4)
    # The same model read as a flow predictor lands somewhere else: the switch changes the code path.
    other = sample_chunk(lambda latents, timestep: x0.clone(), torch.randn(x0.shape, generator=g), context,
                         torch.tensor([True, False, False]), make_scheduler(), steps)
    assert not torch.allclose(other[:, :, 1:], x0[:, :, 1:], atol=0.1)


def test_sampler_rejects_an_unknown_prediction_type():
    x = torch.zeros(1, 48, 2, 2, 2)
    with pytest.raises(ValueError, match="prediction_type"):
        sample_chunk(lambda a, b: a, x, x, torch.tensor([True, False]), make_scheduler(), 2, prediction_type="eps")
