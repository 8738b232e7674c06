"""Training builds the model inputs exactly as a rollout does (readout, mask, rays, clean context)."""

import pytest
import torch

from mirage.data.encoded_clips import encode_clip
from mirage.eval.closed_loop import evaluation_clips
from mirage.pipeline import MirageWorldModel
from mirage.train.conditioning import chunk_conditioning, memory_from_sources, training_batch


@pytest.fixture(scope="module")
def setup():
    model = MirageWorldModel.from_pretrained("tiny", height=32, width=64)
    clip = evaluation_clips(1, 9, (32, 64), paths=("orbit",), num_dynamic=1)[0]
    return model, clip


def test_conditioning_matches_rollout_inputs(setup):
    model, clip = setup
    captured = []
    original = model.transformer.forward

    def spy(hidden_states, timestep, encoder_hidden_states, **kw):
        captured.append((hidden_states.clone(), timestep.clone(), kw))
        return original(hidden_states, timestep, encoder_hidden_states, **kw)

    model.transformer.forward = spy
    try:
        memory = model.new_memory()
        model.observe(memory, clip.rgb[0], clip.depth[0], clip.intrinsics[0], clip.cam_to_world[0])
        snapshot = (memory.points.clone(), memory.features.clone())
        model.rollout(memory, clip.intrinsics, clip.cam_to_world, first_frame=clip.rgb[0], num_inference_steps=1,
                      update_memory=False)
    finally:
        del model.transformer.forward
    hidden, timestep, kw = captured[0]
    sample = encode_clip(model, clip, memory_frames=(0,))
    rebuilt = memory_from_sources(model, sample)
    assert torch.equal(rebuilt.points, snapshot[0]) and torch.equal(rebuilt.features, snapshot[1])
    ours = chunk_conditioning(model, rebuilt, sample.intrinsics, sample.cam_to_world)
    assert torch.equal(ours.memory_latents, kw["memory_latents"])
    assert torch.equal(ours.memory_mask, kw["memory_mask"])
    assert torch.equal(ours.rays, kw["rays"])
    assert ours.memory_mask[0, 0, 0].all() or ours.memory_mask[0, 0, 0].float().mean() > 0.5
    # The rollout's clean context is the first frame encoded alone = latent 0 of the clip encoding.
    assert torch.allclose(hidden[0, :, 0], sample.latents[:, 0], atol=1e-5)
    with_context = chunk_conditioning(model, None, sample.intrinsics, sample.cam_to_world,
                                      context=model.encode_context_frames(clip.rgb[:1]))
    assert with_context.is_context.tolist() == [True, False, False] and with_context.memory_latents is None
    assert torch.equal(with_context.window[0, :, 0], hidden[0, :, 0]) and not with_context.window[0, :, 1:].any()
    # the memory sources are target-type latents, as observe() stores them at inference
    assert torch.equal(sample.source_latents, model.encode_images(clip.rgb[:1]).float())

    batch = training_batch(model, [sample], torch.Generator().manual_seed(0))
    tokens = timestep.shape[1] // 3
    assert (batch.timestep[0, :tokens] == 0).all() and (timestep[0, :tokens] == 0).all()
    assert (batch.timestep[0, tokens:] > 0).all()
    assert torch.equal(batch.noisy[:, :, 0], sample.latents[None, :, 0])
    assert torch.equal(batch.memory_latents, kw["memory_latents"])


def test_dynamic_pixels_stay_out_of_the_memory(setup):
    model, clip = setup
    sample = encode_clip(model, clip, memory_frames=(0, 4))
    assert sample.source_latents.shape[0] == 2
    assert torch.equal(sample.source_exclude[0] & clip.dynamic[0], clip.dynamic[0])
    with pytest.raises(ValueError, match="out of range"):
        encode_clip(model, clip, memory_frames=(9,))


def test_memory_dropout_and_context_choice(setup):
    model, clip = setup
    sample = encode_clip(model, clip)
    batch = training_batch(model, [sample] * 8, torch.Generator().manual_seed(1), context_latent_frames=2,
                           memory_dropout=0.5)
    seen = batch.memory_mask.flatten(1).any(1)
    assert seen.any() and not seen.all()
    contexts = batch.context.sum(1)
    assert set(contexts.tolist()) == {1, 2}
    again = training_batch(model, [sample] * 8, torch.Generator().manual_seed(1), context_latent_frames=2,
                           memory_dropout=0.5)
    assert torch.equal(batch.noisy, again.noisy) and torch.equal(batch.timestep, again.timestep)
