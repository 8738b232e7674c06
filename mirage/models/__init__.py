"""Models: the Wan2.2 backbone (or a tiny look-alike), the memory side branch, camera control, LoRA.

Typical use::

    from mirage.models import MirageTransformer, add_lora, latent_rays, load_backbone, per_token_timesteps

    backbone = load_backbone("tiny")              # or a local Wan2.2-TI2V-5B diffusers directory
    model = MirageTransformer.from_backbone(backbone.transformer)   # zero-init side branch + camera
    z = backbone.encode(video)                     # (B, 3, 1+4k, H, W) in [-1, 1] -> (B, 48, 1+k, H/16, W/16)
    t = per_token_timesteps(frame_t, z.shape[-2:]) # clean context frames at t = 0
    v = model(z_noisy, t, backbone.encode_prompt(""), memory_latents=readout, memory_mask=mask,
              rays=rays)                            # flow prediction (B, 48, F, h, w)

Modules: ``configs`` (tiny / 5B shapes), ``backbone`` (loading, VAE normalisation, prompt cache, offload),
``patch_autoencoder`` (the per-frame autoencoder of mirage-tiny v2, temporal stride 1),
``side_branch`` (MemorySideBranch), ``camera_embedding`` (Plücker rays), ``transformer``
(MirageTransformer), ``lora``, ``checkpoints`` (our adapter files), ``reference`` (loading the paper's
reference weights), ``reference_keys`` (their tensor names), ``reference_hint`` (their 96-channel hint folded into
ours), ``summary`` (parameter counts).
"""

from mirage.models.backbone import Backbone, build_backbone, load_backbone
from mirage.models.checkpoints import load_adapters, save_adapters
from mirage.models.camera_embedding import PluckerEmbedding, latent_rays
from mirage.models.configs import LATENT_CHANNELS, WAN22_5B_HUB_ID
from mirage.models.lora import LORA_TARGETS, add_lora, lora_state_dict, merge_lora, remove_lora
from mirage.models.patch_autoencoder import PatchAutoencoder
from mirage.models.reference import ConversionReport, load_reference_checkpoint
from mirage.models.reference_keys import reference_to_mirage_key
from mirage.models.side_branch import MemoryHintBlock, MemorySideBranch, default_injection_layers
from mirage.models.summary import count_parameters, summarize
from mirage.models.transformer import MirageTransformer, per_token_timesteps

__all__ = [
    "Backbone",
    "build_backbone",
    "load_backbone",
    "PatchAutoencoder",
    "save_adapters",
    "load_adapters",
    "LORA_TARGETS",
    "add_lora",
    "remove_lora",
    "merge_lora",
    "lora_state_dict",
    "ConversionReport",
    "load_reference_checkpoint",
    "reference_to_mirage_key",
    "PluckerEmbedding",
    "latent_rays",
    "LATENT_CHANNELS",
    "WAN22_5B_HUB_ID",
    "MemoryHintBlock",
    "MemorySideBranch",
    "default_injection_layers",
    "count_parameters",
    "summarize",
    "MirageTransformer",
    "per_token_timesteps",
]
