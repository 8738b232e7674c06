"""The pretrained video backbone: Wan2.2-TI2V-5B (or a tiny look-alike) through diffusers.

:class:`Backbone` bundles the transformer, the autoencoder (with the latent normalisation
``z = (mu - mean) / std``): Wan2.2's causal ``AutoencoderKLWan`` (strides 16 / 4) or, for mirage-tiny v2, the
per-frame :class:`~mirage.models.patch_autoencoder.PatchAutoencoder` (temporal stride 1), chosen by the
``_class_name`` in ``vae/config.json``, the flow-matching UniPC scheduler and, when present, the UMT5 text encoder.
:func:`load_backbone` builds it from a built-in config ("tiny", "wan22_5b-random"), a local directory in
diffusers layout (``transformer/ vae/ scheduler/ [text_encoder/ tokenizer/]``) or a hub id.

Prompt embeddings. Robots mostly use one fixed prompt, often the empty one, so embeddings are cached per
prompt. The empty prompt never needs the 5.7B-parameter text encoder: we use ``empty_prompt_embeds.safetensors``
from the model directory when present (written by :meth:`Backbone.save_pretrained` or
:meth:`Backbone.export_empty_prompt_embeds`), otherwise we run the text encoder if it is available, and
only as a last resort fall back to zeros of shape ``(1, L, text_dim)`` (with a warning for real weights:
the UMT5 encoding of "" is not zero, it holds one end-of-sequence token). The tiny config has no text
encoder (a random UMT5 would need a tokenizer vocabulary we cannot download), so any prompt other than ""
raises ValueError there.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from safetensors.torch import load_file, save_file

from mirage.models.configs import (
    BUILTIN_CONFIGS,
    LATENT_CHANNELS,
    WAN22_5B_HUB_ID,
    max_sequence_length,
    scheduler_config,
    transformer_config,
    vae_config,
)
from mirage.models.dtypes import cast_module
from mirage.models.patch_autoencoder import PatchAutoencoder
from mirage.models.placement import EXECUTION_DEVICE_ATTR, execution_device
from mirage.models.summary import count_parameters

logger = logging.getLogger(__name__)

__all__ = ["Backbone", "load_backbone", "build_backbone", "BACKBONE_CONFIG_NAME", "EMPTY_PROMPT_FILE"]

BACKBONE_CONFIG_NAME = "mirage_backbone.json"
EMPTY_PROMPT_FILE = "empty_prompt_embeds.safetensors"
_RANDOM_SUFFIX = "-random"


class Backbone:
    """Transformer + VAE + scheduler (+ optional text encoder) of a Wan2.2-style video model.

    Attributes:
        transformer: ``WanTransformer3DModel`` (48 in / out channels, patch (1, 2, 2)).
        vae: ``AutoencoderKLWan`` or ``PatchAutoencoder``, with ``config.latents_mean`` / ``config.latents_std`` (48
            values each); both follow the diffusers convention ``vae.encode(x).latent_dist`` / ``vae.decode(z).sample``.
        scheduler: ``UniPCMultistepScheduler`` with flow-matching settings.
        tokenizer, text_encoder: UMT5 tokenizer / encoder, or None (then only "" can be embedded, unless a
            ``text_encoder_path`` lets them load lazily on first use).
        max_sequence_length: text tokens ``L`` per prompt.
    """

    def __init__(
        self,
        transformer: WanTransformer3DModel,
        vae: AutoencoderKLWan | PatchAutoencoder,
        scheduler: UniPCMultistepScheduler,
        tokenizer=None,
        text_encoder=None,
        max_sequence_length: int = 512,
        empty_prompt_embeds: torch.Tensor | None = None,
        text_encoder_path: str | None = None,
        name_or_path: str = "",
        random_weights: bool = False,
    ):
        if int(transformer.config.in_channels) != LATENT_CHANNELS or int(vae.config.z_dim) != LATENT_CHANNELS:
            raise ValueError(f"backbone must have {LATENT_CHANNELS} latent channels, got transformer "
                             f"{transformer.config.in_channels} / vae {vae.config.z_dim}")
        compression = (int(vae.config.scale_factor_spatial), int(vae.config.scale_factor_temporal))
        if min(compression) < 1:
            # Strides come from the VAE config (Wan2.2: (16, 4); PatchAutoencoder: (e.g. 8, 1)); only nonsense fails.
            raise ValueError(f"VAE compression (spatial, temporal) must be positive, got {compression}")
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_sequence_length = int(max_sequence_length)
        self.text_encoder_path = text_encoder_path
        self.name_or_path = name_or_path
        self.random_weights = bool(random_weights)
        self._prompt_cache: dict[str, torch.Tensor] = {}
        if empty_prompt_embeds is not None:
            self._check_prompt_embeds(empty_prompt_embeds, "empty_prompt_embeds")
            self._prompt_cache[""] = empty_prompt_embeds.detach()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Where the transformer computes (its offload execution device when CPU offload is on)."""
        return execution_device(self.transformer)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def text_dim(self) -> int:
        return int(self.transformer.config.text_dim)

    @property
    def latent_channels(self) -> int:
        return LATENT_CHANNELS

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent cell along each image axis: 16 (Wan2.2 VAE) or the PatchAutoencoder's (e.g. 8)."""
        return int(self.vae.config.scale_factor_spatial)

    @property
    def temporal_stride(self) -> int:
        """Pixel frames per latent frame after the first: 4 (causal Wan VAE) or 1 (per-frame PatchAutoencoder,
        where a frame encoded alone is exactly its latent inside a clip)."""
        return int(self.vae.config.scale_factor_temporal)

    @property
    def spatial_compression(self) -> int:
        """Same as :attr:`spatial_stride` (older name)."""
        return self.spatial_stride

    @property
    def temporal_compression(self) -> int:
        """Same as :attr:`temporal_stride` (older name)."""
        return self.temporal_stride

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.transformer.config.patch_size)

    def latents_stats(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the VAE latents, each (1, 48, 1, 1, 1)."""
        mean = torch.tensor(self.vae.config.latents_mean, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
        return mean, std

    # ------------------------------------------------------------------ VAE
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Encode a clip deterministically (posterior mode) into normalised latents.

        video: (B, 3, T, H, W) in [-1, 1], T = 1 + ts k with ts = :attr:`temporal_stride` (any T >= 1 when ts = 1),
            H and W multiples of s = :attr:`spatial_stride`.
        Returns (B, 48, 1 + k, H/s, W/s) in the transformer's dtype, ``(mu - mean) / std``.
        """
        self._check_video(video)
        vae_device, vae_dtype = execution_device(self.vae), self.vae.dtype
        mu = self.vae.encode(video.to(device=vae_device, dtype=vae_dtype)).latent_dist.mode().float()
        mean, std = self.latents_stats(mu.device)  # normalise in float32 whatever the VAE dtype
        return ((mu - mean) / std).to(device=video.device, dtype=self.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents (B, 48, t, h, w) into a clip (B, 3, 1 + ts (t-1), s h, s w) in [-1, 1]
        (ts, s = :attr:`temporal_stride`, :attr:`spatial_stride`)."""
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[1] != LATENT_CHANNELS:
            raise ValueError(f"latents must have shape (B, {LATENT_CHANNELS}, t, h, w), "
                             f"got {tuple(getattr(latents, 'shape', ()))}")
        vae_device, vae_dtype = execution_device(self.vae), self.vae.dtype
        z = latents.to(device=vae_device, dtype=torch.float32)
        mean, std = self.latents_stats(z.device)
        video = self.vae.decode((z * std + mean).to(vae_dtype)).sample
        return video.to(device=latents.device)

    def _check_video(self, video) -> None:
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must have shape (B, 3, T, H, W), got {tuple(getattr(video, 'shape', ()))}")
        T, H, W = video.shape[2:]
        s, ts = self.spatial_stride, self.temporal_stride
        if T < 1 or (T - 1) % ts:
            raise ValueError(f"video must have 1 + {ts}k frames ({', '.join(str(1 + ts * k) for k in range(3))}, ...), "
                             f"got {T}")
        if H % s or W % s or H == 0 or W == 0:
            raise ValueError(f"video height and width must be positive multiples of {s}, got {H}x{W}")

    # ------------------------------------------------------------------ text
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Text embedding (1, L, text_dim) of ``prompt`` in the transformer's dtype, cached per prompt."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        key = _clean_prompt(prompt)
        if key not in self._prompt_cache:
            self._prompt_cache[key] = self._embed(key)
        return self._prompt_cache[key].to(device=self.device, dtype=self.dtype)

    def clear_prompt_cache(self, keep_empty: bool = True) -> None:
        empty = self._prompt_cache.get("")
        self._prompt_cache.clear()
        if keep_empty and empty is not None:
            self._prompt_cache[""] = empty

    def _embed(self, prompt: str) -> torch.Tensor:
        if self.text_encoder is None and self.text_encoder_path is not None:
            self._load_text_encoder()
        if self.text_encoder is None or self.tokenizer is None:
            if prompt == "":
                if not self.random_weights:
                    logger.warning("no text encoder and no %s: using zeros for the empty prompt (the UMT5 "
                                   "encoding of '' is not exactly zero)", EMPTY_PROMPT_FILE)
                return torch.zeros(1, self.max_sequence_length, self.text_dim)
            raise ValueError(f"prompt {prompt!r} needs a text encoder, and this backbone ({self.name_or_path!r}) "
                             "has none; use prompt='' or load a model directory with text_encoder/ and tokenizer/")
        return _umt5_embed(self.tokenizer, self.text_encoder, prompt, self.max_sequence_length).cpu()

    def _load_text_encoder(self) -> None:
        from transformers import AutoTokenizer, UMT5EncoderModel

        path = self.text_encoder_path
        logger.info("loading UMT5 text encoder from %s", path)
        self.tokenizer = AutoTokenizer.from_pretrained(path, subfolder="tokenizer")
        # transformers >= 4.56 calls the argument ``dtype`` (``torch_dtype`` is deprecated there)
        dtype_kw = "dtype" if _transformers_version() >= (4, 56) else "torch_dtype"
        encoder = UMT5EncoderModel.from_pretrained(path, subfolder="text_encoder", **{dtype_kw: self.dtype}).eval()
        offload_device = getattr(self.transformer, EXECUTION_DEVICE_ATTR, None)
        if offload_device is not None:  # CPU offload is on: the 5.7B encoder visits the GPU only while it runs
            from accelerate import cpu_offload_with_hook

            cpu_offload_with_hook(encoder, execution_device=offload_device)
            setattr(encoder, EXECUTION_DEVICE_ATTR, offload_device)
        else:
            encoder.to(self.device)
        self.text_encoder = encoder

    def release_text_encoder(self) -> None:
        """Free the text encoder; cached prompts stay usable (it reloads lazily if it came from a path)."""
        self.text_encoder = None
        self.tokenizer = None

    def export_empty_prompt_embeds(self, path: str | os.PathLike) -> None:
        """Write the embedding of "" to ``path/empty_prompt_embeds.safetensors`` (text encoder never needed again)."""
        embeds = self.encode_prompt("").float().cpu().contiguous()
        os.makedirs(path, exist_ok=True)
        save_file({"prompt_embeds": embeds}, os.path.join(path, EMPTY_PROMPT_FILE))

    def _check_prompt_embeds(self, embeds: torch.Tensor, name: str) -> None:
        if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[2] != self.text_dim:
            raise ValueError(f"{name} must have shape (1, L, {self.text_dim}), got {tuple(embeds.shape)}")

    # ------------------------------------------------------------------ persistence / placement
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write a diffusers-layout directory that :func:`load_backbone` reads back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer")
        self.vae.save_pretrained(path / "vae")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.text_encoder is not None and self.tokenizer is not None:
            self.text_encoder.save_pretrained(path / "text_encoder")
            self.tokenizer.save_pretrained(path / "tokenizer")
        with open(path / BACKBONE_CONFIG_NAME, "w") as f:
            json.dump({"max_sequence_length": self.max_sequence_length, "name": self.name_or_path}, f, indent=2)
        if "" in self._prompt_cache or self.text_encoder is not None or self.text_encoder_path is None:
            self.export_empty_prompt_embeds(path)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Backbone":
        """Move transformer (and text encoder) to ``device`` / ``dtype``; the VAE moves device only."""
        self.transformer.to(device=device)
        if dtype is not None:
            cast_module(self.transformer, dtype)
        if self.text_encoder is not None:
            self.text_encoder.to(device=device, dtype=dtype)
        if device is not None:
            self.vae.to(device=device)
        return self

    def enable_cpu_offload(self, device: str | torch.device = "cuda", mode: str = "model") -> None:
        """Keep weights in CPU memory and move them to ``device`` only while they run.

        mode "model": whole models move in and out (accelerate hooks; the transformer leaves when the VAE
        runs). mode "group": diffusers leaf-level group offloading of the transformer, layer by layer with
        prefetch on a CUDA stream (slower, least GPU memory); the VAE and text encoder use model-level hooks.
        Leaf level (not block level) because :class:`MirageTransformer` calls the backbone's submodules
        directly, and only leaf hooks fire for every one of them. Side branch and camera embedding built
        with ``MirageTransformer.from_backbone`` afterwards live on ``device``.
        """
        from accelerate import cpu_offload_with_hook

        if mode not in ("model", "group"):
            raise ValueError(f"cpu offload mode must be 'model' or 'group', got {mode!r}")
        device = torch.device(device)
        hook = None
        if self.text_encoder is not None:
            self.text_encoder.to("cpu")
            _, hook = cpu_offload_with_hook(self.text_encoder, execution_device=device)
        if mode == "group":
            from diffusers.hooks import apply_group_offloading

            self.transformer.to("cpu")
            apply_group_offloading(self.transformer, onload_device=device, offload_device=torch.device("cpu"),
                                   offload_type="leaf_level", use_stream=device.type == "cuda")
        else:
            self.transformer.to("cpu")
            _, hook = cpu_offload_with_hook(self.transformer, execution_device=device, prev_module_hook=hook)
        self.vae.to("cpu")
        cpu_offload_with_hook(self.vae, execution_device=device, prev_module_hook=hook)
        for module in (self.transformer, self.vae, self.text_encoder):
            if module is not None:
                setattr(module, EXECUTION_DEVICE_ATTR, device)

    def parameter_summary(self) -> tuple[dict, object]:
        """Parameter counts of the parts and the transformer's config (:func:`mirage.models.summarize`)."""
        counts = {"transformer": count_parameters(self.transformer), "vae": count_parameters(self.vae),
                  "text_encoder": count_parameters(self.text_encoder) if self.text_encoder is not None else 0,
                  "max_sequence_length": self.max_sequence_length}
        return counts, self.transformer.config

    def __repr__(self) -> str:
        return (f"Backbone({self.name_or_path!r}, transformer={count_parameters(self.transformer) / 1e6:.2f}M, "
                f"vae={count_parameters(self.vae) / 1e6:.2f}M, text_encoder="
                f"{'yes' if self.text_encoder is not None else 'no'}, L={self.max_sequence_length}, "
                f"device={self.device}, dtype={self.dtype})")


# ---------------------------------------------------------------------------------------------------
# Construction
# ---------------------------------------------------------------------------------------------------
def build_backbone(config: str = "tiny", seed: int = 0, device="cpu", torch_dtype=torch.float32,
                   vae_dtype: torch.dtype | None = None) -> Backbone:
    """Randomly initialised backbone of a built-in config ("tiny" or "wan22_5b"), reproducible by ``seed``.

    Parameters are created directly on ``device`` (a "meta" device gives shapes without memory, for
    parameter counts), so the 5B config never needs 20 GB of CPU memory first.
    """
    if config not in BUILTIN_CONFIGS:
        raise ValueError(f"unknown built-in config {config!r}; choose one of {list(BUILTIN_CONFIGS)}")
    device = torch.device(device)
    # Seed locally: building a model must not disturb the caller's random streams.
    fork = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        with device:
            transformer = WanTransformer3DModel(**transformer_config(config))
            vae = AutoencoderKLWan(**vae_config(config))
    cast_module(transformer, torch_dtype)
    cast_module(vae, vae_dtype or torch_dtype, keep_in_fp32=AutoencoderKLWan._keep_in_fp32_modules or ())
    return Backbone(transformer.eval(), vae.eval(), UniPCMultistepScheduler(**scheduler_config()),
                    max_sequence_length=max_sequence_length(config),
                    name_or_path=config if config != "wan22_5b" else config + _RANDOM_SUFFIX, random_weights=True)


def load_backbone(
    name_or_path: str | os.PathLike = "tiny",
    torch_dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cpu_offload: bool | str = False,
    vae_dtype: torch.dtype | None = None,
    text_encoder: str = "lazy",
    local_files_only: bool = False,
    seed: int = 0,
) -> Backbone:
    """Load a backbone.

    name_or_path: "tiny" (random tiny model, ``seed``), "wan22_5b-random" (real 5B shapes, random weights),
        a local directory in diffusers layout, or a hub id such as ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``
        (needs a network; never used in tests).
    torch_dtype: transformer / text encoder dtype; ``vae_dtype`` defaults to the same.
    cpu_offload: False, True / "model" or "group" (see :meth:`Backbone.enable_cpu_offload`); needs CUDA.
    text_encoder: "lazy" (load UMT5 on the first non-empty prompt), "eager" or "none".
    """
    if text_encoder not in ("lazy", "eager", "none"):
        raise ValueError(f"text_encoder must be 'lazy', 'eager' or 'none', got {text_encoder!r}")
    name = str(name_or_path)
    target = "cpu" if cpu_offload else device
    if name in BUILTIN_CONFIGS and name != "wan22_5b":
        backbone = build_backbone(name, seed=seed, device=target, torch_dtype=torch_dtype, vae_dtype=vae_dtype)
    elif name.endswith(_RANDOM_SUFFIX) and name[: -len(_RANDOM_SUFFIX)] in BUILTIN_CONFIGS:
        backbone = build_backbone(name[: -len(_RANDOM_SUFFIX)], seed=seed, device=target, torch_dtype=torch_dtype,
                                  vae_dtype=vae_dtype)
    else:
        if name == "wan22_5b":
            name = WAN22_5B_HUB_ID
        backbone = _from_pretrained(name, torch_dtype, vae_dtype or torch_dtype, text_encoder, local_files_only)
        backbone.to(device=target)
    if cpu_offload:
        backbone.enable_cpu_offload(device, mode="group" if cpu_offload == "group" else "model")
    return backbone


def _from_pretrained(name: str, torch_dtype, vae_dtype, text_encoder: str, local_files_only: bool) -> Backbone:
    is_dir = os.path.isdir(name)
    if not is_dir and (name.startswith((".", "/", "~")) or name.count("/") != 1):
        raise ValueError(f"{name!r} is neither a model directory nor a hub id (owner/name) nor one of "
                         f"{[c for c in BUILTIN_CONFIGS if c != 'wan22_5b']} / "
                         f"{[c + _RANDOM_SUFFIX for c in BUILTIN_CONFIGS]}")
    kw = dict(local_files_only=local_files_only)
    transformer = WanTransformer3DModel.from_pretrained(name, subfolder="transformer", torch_dtype=torch_dtype, **kw)
    vae = _vae_class(name, is_dir).from_pretrained(name, subfolder="vae", torch_dtype=vae_dtype, **kw)
    try:
        scheduler = UniPCMultistepScheduler.from_pretrained(name, subfolder="scheduler", **kw)
        if scheduler.config.prediction_type != "flow_prediction":
            scheduler = UniPCMultistepScheduler.from_config(scheduler.config, **scheduler_config())
    except (OSError, EnvironmentError):
        scheduler = UniPCMultistepScheduler(**scheduler_config())
    L, empty = 512, None
    if is_dir:
        cfg_file = os.path.join(name, BACKBONE_CONFIG_NAME)
        if os.path.isfile(cfg_file):
            with open(cfg_file) as f:
                L = int(json.load(f).get("max_sequence_length", L))
        empty_file = os.path.join(name, EMPTY_PROMPT_FILE)
        if os.path.isfile(empty_file):
            empty = load_file(empty_file)["prompt_embeds"]
            L = int(empty.shape[1])
    has_text = (not is_dir) or (os.path.isdir(os.path.join(name, "text_encoder"))
                                and os.path.isdir(os.path.join(name, "tokenizer")))
    backbone = Backbone(transformer.eval(), vae.eval(), scheduler, max_sequence_length=L, empty_prompt_embeds=empty,
                        text_encoder_path=name if (has_text and text_encoder != "none") else None,
                        name_or_path=name)
    if text_encoder == "eager" and backbone.text_encoder_path is not None:
        backbone._load_text_encoder()
    return backbone


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------
def _vae_class(name: str, is_dir: bool):
    """The autoencoder class a model directory's ``vae/config.json`` names (``AutoencoderKLWan`` otherwise)."""
    config_file = os.path.join(name, "vae", "config.json")
    if is_dir and os.path.isfile(config_file):
        with open(config_file) as f:
            if json.load(f).get("_class_name") == PatchAutoencoder.__name__:
                return PatchAutoencoder
    return AutoencoderKLWan


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = (int(re.match(r"\d+", p).group()) for p in transformers.__version__.split(".")[:2])
    return major, minor


def _clean_prompt(text: str) -> str:
    # Same normalisation as the Wan pipelines (whitespace collapse); ftfy / html fixes are left to callers.
    return re.sub(r"\s+", " ", text).strip()


@torch.no_grad()
def _umt5_embed(tokenizer, text_encoder, prompt: str, max_len: int) -> torch.Tensor:
    """UMT5 embedding as the Wan pipelines compute it: padded to ``max_len``, zeros past the prompt."""
    tokens = tokenizer([prompt], padding="max_length", max_length=max_len, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = execution_device(text_encoder)
    mask = tokens.attention_mask.to(device)
    hidden = text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
    n = int(mask.gt(0).sum())
    out = torch.zeros_like(hidden)
    out[:, :n] = hidden[:, :n]
    return out.float()
