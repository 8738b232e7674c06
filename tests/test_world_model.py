"""MirageWorldModel on the tiny random config (CPU, 64x96, 9-frame chunks, 2 denoising steps)."""

import numpy as np
import pytest
import torch

from mirage.camera import intrinsics_from_fov, look_at
from mirage.perception.depth import GivenDepth
from mirage.memory import LatentSpatialMemory
from mirage.pipeline import CancelToken, MirageWorldModel, RolloutCancelled

H, W = 64, 96
STEPS = 2
WALL = 4.0


@pytest.fixture(scope="module")
def model():
    # The tiny model is latency-bound: one thread avoids oversubscribing a shared CPU (10x slower otherwise).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MirageWorldModel.from_pretrained("tiny")
    torch.set_num_threads(threads)


def trajectory(T: int, step: float = 0.05) -> torch.Tensor:
    """Camera sliding sideways in front of a wall at z = WALL, looking along +z."""
    return torch.stack([look_at([step * i, 0.0, 0.0], [step * i, 0.0, 1.0], up=[0.0, -1.0, 0.0]) for i in range(T)])


def intrinsics() -> torch.Tensor:
    return intrinsics_from_fov(70.0, H, W)


def first_frame() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, H, W, generator=g)


def seeded_memory(model) -> LatentSpatialMemory:
    memory = model.new_memory(voxel_size=None)
    model.observe(memory, first_frame(), torch.full((H, W), WALL), intrinsics(), torch.eye(4))
    return memory


def wall_depth(K, c2w):
    return torch.full((c2w.shape[0], H, W), WALL)


def test_two_chunk_rollout_shapes_and_timings(model):
    memory = seeded_memory(model)
    T = 17
    calls = []
    res = model.rollout(memory, intrinsics(), trajectory(T), first_frame=first_frame(), num_inference_steps=STEPS,
                        progress=calls.append)
    assert res.frames.shape == (T, H, W, 3) and res.frames.dtype == np.uint8
    expected0 = (first_frame().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(res.frames[0], expected0)
    assert set(res.timings) >= {"memory_read", "denoise", "decode", "depth", "memory_update", "total"}
    assert all(v >= 0 for v in res.timings.values()) and res.seconds_per_frame > 0
    # progress: every step of every chunk, then one report per finished chunk
    assert [(p.chunks_done, p.step) for p in calls] == [(0, 1), (0, 2), (1, 2), (1, 1), (1, 2), (2, 2)]
    assert calls[-1].frames_done == T and calls[-1].chunks_total == 2


def test_memory_grows_by_the_expected_cells(model):
    memory = seeded_memory(model)
    before = len(memory)
    model.depth_provider, saved = GivenDepth(wall_depth), model.depth_provider
    try:
        res = model.rollout(memory, intrinsics(), trajectory(17), first_frame=first_frame(), num_inference_steps=STEPS)
    finally:
        model.depth_provider = saved
    h, w = model.latent_size
    # two chunks x 2 new latent frames each (window of 3 = 1 context + 2), every cell on the wall
    assert len(memory) - before == 4 * h * w == res.memory_points_added
    assert res.depth_scales == pytest.approx([1.0] * 4)
    # the new points lie on the wall
    assert torch.allclose(memory.points[before:, 2], torch.full((4 * h * w,), WALL), atol=1e-4)


def test_moving_object_is_kept_out_of_the_memory(model):
    memory = seeded_memory(model)
    before = len(memory)

    def wall_with_object(K, c2w):
        depth = wall_depth(K, c2w)
        depth[:, 16:48, 32:64] = 1.0  # something in front of the stored wall: 2x2 latent cells
        return depth

    model.depth_provider, saved = GivenDepth(wall_with_object), model.depth_provider
    try:
        model.rollout(memory, intrinsics(), trajectory(9, step=0.0), first_frame=first_frame(),
                      num_inference_steps=STEPS)
    finally:
        model.depth_provider = saved
    h, w = model.latent_size
    assert len(memory) - before == 2 * (h * w - 4)
    assert not (memory.points[before:, 2] < WALL - 0.1).any()


def test_readout_depth_writes_only_what_the_memory_saw(model):
    memory = seeded_memory(model)
    K, c2w = intrinsics(), trajectory(9, step=0.3)
    visible = memory.read_batch(K, c2w[[4, 8]], (H, W), model.latent_size).mask.sum()
    assert 0 < int(visible) < 2 * 24  # the camera slid partly off the stored wall
    before = len(memory)
    model.rollout(memory, K, c2w, first_frame=first_frame(), num_inference_steps=STEPS)
    assert len(memory) - before == int(visible)


def test_context_stays_clean_and_gets_timestep_zero(model, monkeypatch):
    memory = seeded_memory(model)
    clean0 = model.encode_context_frames(first_frame()[None])[0]  # a window starts with a latent-0 code
    seen = []
    timesteps = []
    forward = model.transformer.forward

    def spy(hidden_states, timestep, *args, **kw):
        timesteps.append(timestep.clone())
        return forward(hidden_states, timestep, *args, **kw)

    monkeypatch.setattr(model.transformer, "forward", spy)

    def on_step(chunk, step, latents):
        seen.append((chunk.index, step, latents.clone()))

    model.rollout(memory, intrinsics(), trajectory(17), first_frame=first_frame(), num_inference_steps=3,
                  step_callback=on_step)
    assert [(c, s) for c, s, _ in seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    for chunk, step, latents in seen:
        context = latents[0, :, 0]
        reference = clean0 if chunk == 0 else seen[3][2][0, :, 0]
        assert torch.equal(context, reference)
    assert not torch.equal(seen[0][2][0, :, 1:], seen[1][2][0, :, 1:])  # generated frames do move
    h, w = model.latent_size
    tokens = (h // 2) * (w // 2)
    for ts in timesteps:
        assert ts.shape == (1, 3 * tokens)
        assert (ts[0, :tokens] == 0).all() and (ts[0, tokens:] > 0).all()


def test_memory_readout_feeds_the_transformer(model, monkeypatch):
    memory = seeded_memory(model)
    K, c2w = intrinsics(), trajectory(9, step=0.3)
    captured = {}
    forward = model.transformer.forward

    def spy(*args, **kw):
        captured.update(kw)
        return forward(*args, **kw)

    monkeypatch.setattr(model.transformer, "forward", spy)
    model.rollout(memory, K, c2w, first_frame=first_frame(), num_inference_steps=1, update_memory=False)
    expected = memory.read_batch(K, c2w[[0, 4, 8]], (H, W), model.latent_size)
    assert torch.equal(captured["memory_latents"][0], expected.features.transpose(0, 1))
    assert torch.equal(captured["memory_mask"][0, 0], expected.mask)
    assert captured["rays"].shape == (1, 6, 3, *model.latent_size)


def test_cancel_stops_within_a_step_and_keeps_the_memory(model):
    memory = seeded_memory(model)
    state = (len(memory), memory.version)
    token = CancelToken()
    steps = []

    def progress(p):
        steps.append(p.step)
        token.cancel()

    with pytest.raises(RolloutCancelled):
        model.rollout(memory, intrinsics(), trajectory(17), first_frame=first_frame(), num_inference_steps=5,
                      progress=progress, cancel=token)
    assert steps == [1]
    assert (len(memory), memory.version) == state

    # cancelled in the second chunk: the first chunk's update stays, the second writes nothing
    token = CancelToken()

    def cancel_in_chunk_1(p):
        if p.chunks_done == 1 and p.step == 1:
            token.cancel()

    with pytest.raises(RolloutCancelled):
        model.rollout(memory, intrinsics(), trajectory(17), first_frame=first_frame(), num_inference_steps=2,
                      progress=cancel_in_chunk_1, cancel=token)
    assert memory.version == state[1] + 1


def test_deterministic_for_a_fixed_seed(model):
    def run(seed):
        return model.rollout(seeded_memory(model), intrinsics(), trajectory(17), first_frame=first_frame(),
                             num_inference_steps=STEPS, seed=seed).frames

    a, b, c = run(3), run(3), run(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])


def test_frames_stream_out_chunk_by_chunk(model):
    streamed = []
    out = model.rollout(seeded_memory(model), intrinsics(), trajectory(17), first_frame=first_frame(),
                        num_inference_steps=STEPS, on_frames=lambda start, f: streamed.append((start, f.copy())))
    # frame 0, then the new frames of each 9-frame chunk (one latent frame of context each)
    assert [(start, len(f)) for start, f in streamed] == [(0, 1), (1, 8), (9, 8)]
    assert np.array_equal(np.concatenate([f for _, f in streamed]), out.frames)


def test_memory_only_mode_decodes_the_readout(model):
    memory = seeded_memory(model)
    state = (len(memory), memory.version)
    K, c2w = intrinsics(), trajectory(9, step=0.1)
    res = model.rollout(memory, K, c2w, mode="memory_only")
    readout = memory.read_batch(K, c2w[[0, 4, 8]], (H, W), model.latent_size)
    # frame 0: the target-type readout at pose 0 decoded as such; the window: its latent-0 re-encoding as the
    # clean context, then the readouts of latent frames 1 and 2 in their own (group) slots
    frame0 = model.decode_images(readout.features[:1])
    window = torch.cat([model.encode_context_frames(frame0), readout.features[1:]])
    video = model.decode_latents(window.transpose(0, 1)[None])[0].transpose(0, 1)
    video[0] = frame0[0]
    expected = (video * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(res.frames, expected)
    assert (len(memory), memory.version) == state
    assert res.timings["denoise"] == 0.0


def test_bad_inputs_raise_and_leave_the_memory(model):
    memory = seeded_memory(model)
    state = (len(memory), memory.version)
    K, c2w, ff = intrinsics(), trajectory(9), first_frame()
    bad_pose = c2w.clone()
    bad_pose[3, 0, 3] = float("nan")
    cases = [
        (dict(cam_to_world=bad_pose), "non-finite"),
        (dict(intrinsics=K.expand(10, 3, 3)), "intrinsics"),
        (dict(cam_to_world=torch.zeros(0, 4, 4)), "zero frames"),
        (dict(cam_to_world=trajectory(10)), "1 \\+ 4m"),
        (dict(first_frame=torch.rand(3, 32, 32)), "first_frame"),
        (dict(first_frame=None, first_depth=torch.ones(H, W)), "first_depth needs first_frame"),
        (dict(first_depth=torch.ones(32, 32)), "first_depth"),
        (dict(mode="dream"), "mode"),
    ]
    for change, match in cases:
        kw = dict(intrinsics=K, cam_to_world=c2w, first_frame=ff, num_inference_steps=1)
        kw.update(change)
        with pytest.raises(ValueError, match=match):
            model.rollout(memory, **kw)
    with pytest.raises(ValueError, match="empty"):
        model.rollout(model.new_memory(), K, c2w)
    with pytest.raises(ValueError, match="channels"):
        model.rollout(LatentSpatialMemory(channels=4), K, c2w, first_frame=ff)
    assert (len(memory), memory.version) == state
    with pytest.raises(ValueError, match="multiples of 32"):
        MirageWorldModel.from_pretrained("tiny", height=48)
    with pytest.raises(ValueError, match="chunk_frames"):
        MirageWorldModel.from_pretrained("tiny", chunk_frames=8)


def test_single_frame_rollout_returns_the_first_frame(model):
    res = model.rollout(seeded_memory(model), intrinsics(), trajectory(1), first_frame=first_frame())
    assert res.frames.shape == (1, H, W, 3)


def test_seed_memory_from_first_frame_and_depth(model):
    res = model.rollout(None, intrinsics(), trajectory(9), first_frame=first_frame(), first_depth=torch.full((H, W), WALL),
                        num_inference_steps=1)
    h, w = model.latent_size
    assert res.memory_points_added >= h * w


def test_no_memory_mode_reads_and_writes_nothing(model, monkeypatch):
    captured = []
    forward = model.transformer.forward

    def spy(*args, **kw):
        captured.append(kw)
        return forward(*args, **kw)

    monkeypatch.setattr(model.transformer, "forward", spy)
    memory = seeded_memory(model)
    state = (len(memory), memory.version)
    res = model.rollout(memory, intrinsics(), trajectory(9), first_frame=first_frame(), num_inference_steps=STEPS,
                        mode="no_memory")
    assert res.frames.shape == (9, H, W, 3)
    assert (len(memory), memory.version) == state
    assert captured and all("memory_latents" not in kw for kw in captured)
    res2 = model.rollout(None, intrinsics(), trajectory(9), first_frame=first_frame(), num_inference_steps=STEPS,
                         mode="no_memory")
    assert np.array_equal(res.frames, res2.frames)
    with pytest.raises(ValueError, match="first_frame"):
        model.rollout(None, intrinsics(), trajectory(9), mode="no_memory")


def test_relative_depth_is_scaled_to_the_memory(model):
    class HalfScaleDepth(GivenDepth):
        metric = False  # like a relative estimator: right shape, unknown scale

    memory = seeded_memory(model)
    before = len(memory)
    model.depth_provider, saved = HalfScaleDepth(lambda K, P: torch.full((P.shape[0], H, W), WALL / 2)), \
        model.depth_provider
    try:
        res = model.rollout(memory, intrinsics(), trajectory(9, step=0.1), first_frame=first_frame(),
                            num_inference_steps=1)
        assert res.depth_scales == pytest.approx([2.0, 2.0])
        assert torch.allclose(memory.points[before:, 2], torch.full((len(memory) - before,), WALL), atol=1e-4)
        # far from anything stored: no overlap, so a relative depth cannot be placed and nothing is written
        far = trajectory(9, step=0.1)
        far[:, 0, 3] += 100.0
        count = len(memory)
        res = model.rollout(memory, intrinsics(), far, first_frame=first_frame(), num_inference_steps=1)
        assert res.depth_scales == [None, None] and len(memory) == count
    finally:
        model.depth_provider = saved


def test_rgb_cache_runs_through_the_same_loop(model):
    from mirage.memory import RGBPointCloudMemory

    cache = RGBPointCloudMemory(model.encode_images, model.latent_channels)
    model.observe(cache, first_frame(), torch.full((H, W), WALL), intrinsics(), torch.eye(4))
    assert len(cache) == H * W
    model.depth_provider, saved = GivenDepth(wall_depth), model.depth_provider
    try:
        res = model.rollout(cache, intrinsics(), trajectory(9), first_frame=first_frame(), num_inference_steps=1)
    finally:
        model.depth_provider = saved
    assert res.frames.shape == (9, H, W, 3)
    assert len(cache) == 3 * H * W  # two new representative frames, one point per pixel
    readout = cache.read(intrinsics(), torch.eye(4), (H, W), model.latent_size)
    assert readout.features.shape == (48, *model.latent_size) and readout.mask.all()


def test_two_context_frames_carry_over_cleanly():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = MirageWorldModel.from_pretrained("tiny", context_latent_frames=2)
        seen = []
        res = model.rollout(seeded_memory(model), intrinsics(), trajectory(17), first_frame=first_frame(),
                            num_inference_steps=2, step_callback=lambda c, s, lat: seen.append((c, lat.clone())))
    finally:
        torch.set_num_threads(threads)
    # 17 frames = chunk 0 (context 1, latents 0-2) + chunk 1 (context 2: latents 1-2, new 3-4)
    assert res.frames.shape == (17, H, W, 3)
    chunk1 = [lat for c, lat in seen if c.index == 1]
    assert seen[-1][0].context == 2 and len(chunk1) == 2
    assert torch.equal(chunk1[0][:, :, :2], chunk1[1][:, :, :2])
    # the carried context is the re-encoded clip of pixel frames 4..8: single-frame latent of frame 4 first
    frames = torch.from_numpy(res.frames[4:9]).permute(0, 3, 1, 2).float() / 255
    clip = model.backbone.encode((frames * 2 - 1).transpose(0, 1)[None])
    assert torch.allclose(chunk1[0][:, :, :2], clip, atol=0.05)


def test_bfloat16_model_keeps_float32_memory():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = MirageWorldModel.from_pretrained("tiny", torch_dtype=torch.bfloat16)
        memory = model.new_memory(voxel_size=None)
        res = model.rollout(memory, intrinsics(), trajectory(9), first_frame=first_frame(),
                            first_depth=torch.full((H, W), WALL), num_inference_steps=2)
    finally:
        torch.set_num_threads(threads)
    assert res.frames.shape == (9, H, W, 3)
    assert memory.dtype == torch.float32 and len(memory) == 3 * 24 and torch.isfinite(memory.features).all()


def test_caller_exclusion_masks_keep_cells_out(model):
    memory = seeded_memory(model)
    before = len(memory)
    calls = []

    def exclude(frame_indices, frames):
        calls.append(frame_indices.tolist())
        mask = torch.zeros(frames.shape[0], H, W, dtype=torch.bool)
        mask[:, :, :48] = True  # the left half of every frame: 3 of 6 latent columns
        return mask

    model.depth_provider, saved = GivenDepth(wall_depth), model.depth_provider
    try:
        model.rollout(memory, intrinsics(), trajectory(9), first_frame=first_frame(), num_inference_steps=1,
                      exclude=exclude)
    finally:
        model.depth_provider = saved
    assert calls == [[4, 8]]
    assert len(memory) - before == 2 * 12
