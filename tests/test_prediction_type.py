"""What the transformer output means (mirage.pipeline.prediction) and the loss built on it."""

import pytest
import torch

from mirage.pipeline.config import WorldModelConfig
from mirage.pipeline.prediction import prediction_to_flow
from mirage.train.conditioning import TrainingBatch
from mirage.train.flow_matching import MIN_LOSS_SIGMA, add_noise, batch_flow_loss, flow_target


def _noised(seed=0, B=2, F=3):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, 4, F, 2, 3, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    context = torch.zeros(F, dtype=torch.bool)
    context[0] = True
    sigmas = torch.tensor([0.7, 0.02])[:B]
    noisy, frame_sigmas = add_noise(x0, eps, sigmas, context)
    return x0, eps, noisy, frame_sigmas, sigmas, context


def test_flow_prediction_passes_through():
    x0, eps, noisy, frame_sigmas, *_ = _noised()
    p = torch.randn_like(x0)
    assert prediction_to_flow(p, noisy, frame_sigmas, "flow") is p


def test_the_true_sample_gives_the_true_flow_and_clean_frames_get_zero():
    x0, eps, noisy, frame_sigmas, *_ = _noised()
    flow = prediction_to_flow(x0, noisy, frame_sigmas, "sample")
    assert torch.allclose(flow[:, :, 1:], flow_target(x0, eps)[:, :, 1:], atol=1e-4)
    assert torch.all(flow[:, :, 0] == 0) and torch.isfinite(flow).all()


def test_min_sigma_bounds_the_division():
    x0, eps, noisy, frame_sigmas, *_ = _noised()
    exact = prediction_to_flow(x0 + 0.1, noisy, frame_sigmas, "sample")
    bounded = prediction_to_flow(x0 + 0.1, noisy, frame_sigmas, "sample", min_sigma=MIN_LOSS_SIGMA)
    # sample 1 sits at s = 0.02 < 0.05 and is divided by 0.05; sample 0 (s = 0.7) is untouched
    assert torch.allclose(bounded[1, :, 1:] * MIN_LOSS_SIGMA, exact[1, :, 1:] * 0.02, atol=1e-5)
    assert torch.allclose(bounded[0], exact[0])


def _Batch(noisy, target, context, sigmas):
    return TrainingBatch(noisy=noisy, timestep=None, context=context[None].expand(len(sigmas), -1), target=target,
                         memory_latents=None, memory_mask=None, rays=None, sigmas=sigmas)


def test_batch_loss_is_zero_for_the_right_answer_of_either_type():
    x0, eps, noisy, _, sigmas, context = _noised()
    batch = _Batch(noisy, flow_target(x0, eps), context, sigmas)
    assert batch_flow_loss(flow_target(x0, eps), batch, "flow").item() == 0.0
    assert batch_flow_loss(x0, batch, "sample").item() == pytest.approx(0.0, abs=1e-8)
    assert batch_flow_loss(x0, batch, "flow").item() > 0.5  # the same tensor read as a flow is wrong


def test_sample_loss_is_the_x0_error_over_the_bounded_sigma():
    x0, eps, noisy, _, sigmas, context = _noised()  # sigmas 0.7 and 0.02
    batch = _Batch(noisy, flow_target(x0, eps), context, sigmas)
    # an x0 error of 0.1 everywhere: (0.1 / 0.7)^2 and (0.1 / 0.05)^2, averaged over the two samples
    expected = ((0.1 / 0.7) ** 2 + (0.1 / MIN_LOSS_SIGMA) ** 2) / 2
    assert batch_flow_loss(x0 + 0.1, batch, "sample").item() == pytest.approx(expected, rel=1e-4)


def test_config_checks_prediction_type():
    assert WorldModelConfig().prediction_type == "flow"
    assert WorldModelConfig.from_dict({"prediction_type": "sample"}).prediction_type == "sample"
    with pytest.raises(ValueError, match="prediction_type"):
        WorldModelConfig(prediction_type="epsilon")
    with pytest.raises(ValueError, match="prediction_type"):
        prediction_to_flow(torch.zeros(1, 1, 1, 1, 1), torch.zeros(1, 1, 1, 1, 1), torch.zeros(1), "v")


def test_the_v2_recipe_predicts_samples_with_few_steps():
    from mirage.train.tiny_v2 import SAMPLING_STEPS, world_model_config

    cfg = world_model_config("backbone", side_branch=False)
    assert cfg.prediction_type == "sample" and cfg.num_inference_steps == SAMPLING_STEPS == 4
    assert world_model_config("backbone", side_branch=True, prediction_type="flow").prediction_type == "flow"


def test_init_can_widen_the_transformer(tmp_path):
    from mirage.models.patch_autoencoder import PatchAutoencoder
    from mirage.pipeline import MirageWorldModel
    from mirage.train.tiny_v2 import init_world_model

    ae = PatchAutoencoder(block_out_channels=(8, 8), layers_per_block=1, scale_factor_spatial=8,
                          latents_mean=[0.0] * 48, latents_std=[2.0] * 48)
    ae.save_pretrained(tmp_path / "ae")
    init_world_model(tmp_path / "ae", tmp_path / "wide", num_attention_heads=8, ffn_dim=64)
    model = MirageWorldModel.from_pretrained(str(tmp_path / "wide"))
    config = model.backbone.transformer.config
    assert (config.num_attention_heads, config.ffn_dim) == (8, 64) and model.config.prediction_type == "sample"
