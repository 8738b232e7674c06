"""A tiny-shape reimplementation of the reference implementation's forward and chunk sampling, for parity tests.

Written here from reading microsoft/LatentSpatialMemory (not copied): ``src/mirage/spatia/wan_video_dit.py``
(DiTBlock, SelfAttention / CrossAttention with RMSNorm q/k, complex RoPE, Head), ``wan_video_vace.py``
(VaceWanAttentionBlock: ``before_proj`` on block 0, ``after_proj`` skips), ``wan_video_new.py:model_fn_wan_video``
(per-token timesteps with ``seperated_timestep``, hints added after ``vace_layers``, reference frames with
``ref_freqs`` and no hint), ``select_reference_latents`` (by voxel IoU of the points in view) and
``src/mirage/inference/mirage_pipeline.py`` (``generate_single_iteration``: the first latent clamped with
timestep 0; ``build_vace_context_96``: readout + the VAE latent of an all-ones video; LoRA merged with alpha 1).
Everything works on state dicts in the reference's own names, so the weights a test draws here are saved exactly
in the reference layout. Only what the parity tests use is written: no CFG.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FREQ_DIM = 256
EPS = 1e-6


# ------------------------------------------------------------------------------------------------ weights
def random_reference_weights(dim, ffn_dim, num_layers, text_dim, vace_layers, lora_rank, in_dim=48,
                             patch=(1, 2, 2), seed=0):
    """(dit, vace, lora) state dicts with random weights in the reference's names and shapes.

    dit: a DiffSynth WanModel (``blocks.N.self_attn.q.weight``, ``head.head``, ...); vace: ``vace_blocks.N.*``,
    ``vace_patch_embedding`` with 96 input channels; lora: ``pipe.dit.blocks.N.<q|k|v|o|ffn.0|ffn.2>.lora_A/B.weight``
    on self- and cross-attention (as ``scripts/train.py`` exports them).
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.15):
        return torch.randn(*shape, generator=g) * scale

    def block(p, out):
        for attn in ("self_attn", "cross_attn"):
            for m in ("q", "k", "v", "o"):
                out[f"{p}{attn}.{m}.weight"] = rnd(dim, dim, scale=1 / math.sqrt(dim))
                out[f"{p}{attn}.{m}.bias"] = rnd(dim)
            out[f"{p}{attn}.norm_q.weight"] = 1 + rnd(dim)
            out[f"{p}{attn}.norm_k.weight"] = 1 + rnd(dim)
        out[p + "norm3.weight"], out[p + "norm3.bias"] = 1 + rnd(dim), rnd(dim)
        out[p + "ffn.0.weight"], out[p + "ffn.0.bias"] = rnd(ffn_dim, dim, scale=1 / math.sqrt(dim)), rnd(ffn_dim)
        out[p + "ffn.2.weight"], out[p + "ffn.2.bias"] = rnd(dim, ffn_dim, scale=1 / math.sqrt(ffn_dim)), rnd(dim)
        out[p + "modulation"] = rnd(1, 6, dim, scale=1 / math.sqrt(dim))

    dit = {"patch_embedding.weight": rnd(dim, in_dim, *patch, scale=0.1), "patch_embedding.bias": rnd(dim),
           "text_embedding.0.weight": rnd(dim, text_dim, scale=0.2), "text_embedding.0.bias": rnd(dim),
           "text_embedding.2.weight": rnd(dim, dim, scale=0.2), "text_embedding.2.bias": rnd(dim),
           "time_embedding.0.weight": rnd(dim, FREQ_DIM, scale=0.1), "time_embedding.0.bias": rnd(dim),
           "time_embedding.2.weight": rnd(dim, dim, scale=0.2), "time_embedding.2.bias": rnd(dim),
           "time_projection.1.weight": rnd(6 * dim, dim, scale=0.1), "time_projection.1.bias": rnd(6 * dim, scale=0.1),
           "head.head.weight": rnd(in_dim * math.prod(patch), dim, scale=0.2),
           "head.head.bias": rnd(in_dim * math.prod(patch)),
           "head.modulation": rnd(1, 2, dim, scale=1 / math.sqrt(dim))}
    for i in range(num_layers):
        block(f"blocks.{i}.", dit)
    vace = {"vace_patch_embedding.weight": rnd(dim, 2 * in_dim, *patch, scale=0.1),
            "vace_patch_embedding.bias": rnd(dim)}
    for n in range(len(vace_layers)):
        block(f"vace_blocks.{n}.", vace)
        if n == 0:
            vace["vace_blocks.0.before_proj.weight"], vace["vace_blocks.0.before_proj.bias"] = rnd(dim, dim), rnd(dim)
        vace[f"vace_blocks.{n}.after_proj.weight"], vace[f"vace_blocks.{n}.after_proj.bias"] = rnd(dim, dim), rnd(dim)
    lora = {}
    for i in range(num_layers):
        for module, (d_out, d_in) in {**{f"{a}.{m}": (dim, dim) for a in ("self_attn", "cross_attn")
                                         for m in "qkvo"}, "ffn.0": (ffn_dim, dim), "ffn.2": (dim, ffn_dim)}.items():
            lora[f"pipe.dit.blocks.{i}.{module}.lora_A.weight"] = rnd(lora_rank, d_in, scale=0.2)
            lora[f"pipe.dit.blocks.{i}.{module}.lora_B.weight"] = rnd(d_out, lora_rank, scale=0.2)
    return dit, vace, lora


def merge_lora(dit: dict, lora: dict, alpha: float = 1.0) -> dict:
    """The DiT weights with LoRA fused in, ``W + alpha B A`` (DiffSynth's GeneralLoRALoader, ``infer.py``'s alpha 1)."""
    out = dict(dit)
    for key, a in lora.items():
        if ".lora_A." in key:
            module = key.replace("pipe.dit.", "").split(".lora_A.")[0]
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            out[module + ".weight"] = out[module + ".weight"] + alpha * b @ a
    return out


# ------------------------------------------------------------------------------------------------ forward
def _lin(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _rms(x, weight):
    return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * weight


def _sinusoidal(dim, position):
    sinusoid = torch.outer(position.double(), torch.pow(10000, -torch.arange(dim // 2, dtype=torch.float64)
                                                        .div(dim // 2)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1).to(position.dtype)


def _freqs_1d(dim, start=0, end=1024):
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].double() / dim))
    positions = torch.arange(start, end)
    return torch.polar(torch.ones(len(positions), dim // 2, dtype=torch.float64), torch.outer(positions, freqs))


def _rope_table(head_dim, f, h, w, reference=False):
    """(f*h*w, 1, head_dim/2) complex: frame, row, column frequencies (``precompute_freqs_cis_3d``); reference
    frames (``ref_freqs``): frames -f .. -1 of a table built from -1024, rows h .. 2h-1, columns 0 .. w-1."""
    dims = (head_dim - 2 * (head_dim // 3), head_dim // 3, head_dim // 3)
    tf, th, tw = (_freqs_1d(d) for d in dims)
    if reference:
        tf, th = _freqs_1d(dims[0], start=-1024, end=0)[-f:], th[h : 2 * h]
    return torch.cat([tf[:f].view(f, 1, 1, -1).expand(f, h, w, -1), th[:h].view(1, h, 1, -1).expand(f, h, w, -1),
                      tw[:w].view(1, 1, w, -1).expand(f, h, w, -1)], dim=-1).reshape(f * h * w, 1, -1)


def _rope(x, freqs, heads):
    b, s, _ = x.shape
    z = torch.view_as_complex(x.double().reshape(b, s, heads, -1, 2))
    return torch.view_as_real(z * freqs).flatten(2).reshape(b, s, -1).to(x.dtype)


def _attention(q, k, v, heads):
    b = q.shape[0]
    split = [t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v)]
    return F.scaled_dot_product_attention(*split).transpose(1, 2).reshape(b, q.shape[1], -1)


def _block(sd, p, x, context, t_mod, freqs, heads):
    """DiTBlock.forward with per-token modulation t_mod (B, S, 6, D)."""
    mod = (sd[p + "modulation"] + t_mod).chunk(6, dim=2)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (m.squeeze(2) for m in mod)
    dim = x.shape[-1]
    h = F.layer_norm(x, (dim,), eps=EPS) * (1 + scale_msa) + shift_msa
    q = _rope(_rms(_lin(sd, p + "self_attn.q", h), sd[p + "self_attn.norm_q.weight"]), freqs, heads)
    k = _rope(_rms(_lin(sd, p + "self_attn.k", h), sd[p + "self_attn.norm_k.weight"]), freqs, heads)
    x = x + gate_msa * _lin(sd, p + "self_attn.o", _attention(q, k, _lin(sd, p + "self_attn.v", h), heads))
    h = F.layer_norm(x, (dim,), sd[p + "norm3.weight"], sd[p + "norm3.bias"], eps=EPS)
    q = _rms(_lin(sd, p + "cross_attn.q", h), sd[p + "cross_attn.norm_q.weight"])
    k = _rms(_lin(sd, p + "cross_attn.k", context), sd[p + "cross_attn.norm_k.weight"])
    x = x + _lin(sd, p + "cross_attn.o", _attention(q, k, _lin(sd, p + "cross_attn.v", context), heads))
    h = F.layer_norm(x, (dim,), eps=EPS) * (1 + scale_mlp) + shift_mlp
    return x + gate_mlp * _lin(sd, p + "ffn.2", F.gelu(_lin(sd, p + "ffn.0", h), approximate="tanh"))


def reference_forward(dit, vace, latents, frame_timesteps, context, vace_context, vace_layers, heads,
                      patch=(1, 2, 2), num_ref=0):
    """``model_fn_wan_video``: flow (1, 48, F, h, w) for latents (1, 48, F, h, w) whose first ``num_ref`` frames
    are reference frames, frame_timesteps (F,), context (1, L, text_dim) and vace_context (96, F_v, h, w) or None
    (covering the frames after the reference frames)."""
    dim = dit["patch_embedding.bias"].shape[0]
    x = F.conv3d(latents, dit["patch_embedding.weight"], dit["patch_embedding.bias"], stride=patch)
    f, h, w = x.shape[2:]
    x = x.flatten(2).transpose(1, 2)
    timestep = frame_timesteps.float()[:, None].repeat(1, h * w).flatten()  # one per token
    sinusoid = _sinusoidal(FREQ_DIM, timestep)[None].to(latents.dtype)  # model_fn_wan_video casts to the latents'
    t = _lin(dit, "time_embedding.2", F.silu(_lin(dit, "time_embedding.0", sinusoid)))
    t_mod = _lin(dit, "time_projection.1", F.silu(t)).unflatten(2, (6, dim))
    context = _lin(dit, "text_embedding.2", F.gelu(_lin(dit, "text_embedding.0", context), approximate="tanh"))
    freqs = _rope_table(dim // heads, f - num_ref, h, w)
    ref = num_ref * h * w  # reference tokens: their own RoPE, no hint
    if num_ref:
        freqs = torch.cat([_rope_table(dim // heads, num_ref, h, w, reference=True), freqs])
    hints = []
    if vace_context is not None:
        c = F.conv3d(vace_context[None], vace["vace_patch_embedding.weight"], vace["vace_patch_embedding.bias"],
                     stride=patch).flatten(2).transpose(1, 2)
        c = torch.cat([c, c.new_zeros(1, x.shape[1] - ref - c.shape[1], dim)], dim=1)  # padded to x's tokens
        for n in range(len(vace_layers)):
            p = f"vace_blocks.{n}."
            if n == 0:
                c = _lin(vace, p + "before_proj", c) + x[:, ref:]
            c = _block(vace, p, c, context, t_mod[:, ref:], freqs[ref:], heads)
            hints.append(_lin(vace, p + "after_proj", c))
    for i in range(sum(k.endswith(".modulation") and k.startswith("blocks.") for k in dit)):
        x = _block(dit, f"blocks.{i}.", x, context, t_mod, freqs, heads)
        if hints and i in vace_layers:
            x = torch.cat([x[:, :ref], x[:, ref:] + hints[list(vace_layers).index(i)]], dim=1)
    shift, scale = (dit["head.modulation"].unsqueeze(0) + t.unsqueeze(2)).chunk(2, dim=2)
    x = _lin(dit, "head.head", F.layer_norm(x, (dim,), eps=EPS) * (1 + scale.squeeze(2)) + shift.squeeze(2))
    pt, ph, pw = patch
    x = x.reshape(1, f, h, w, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(1, x.shape[1], f * pt, h * ph, w * pw)


def reference_chunk(dit, vace, noise, first_latent, scene, score, context, scheduler, steps, vace_layers, heads,
                    preceding=None, preceding_scene=None, reference=None):
    """``generate_single_iteration`` without reference frames: denoise (1, 48, F, h, w) ``noise`` with latent 0
    clamped to ``first_latent`` (1, 48, 1, h, w) at timestep 0; ``preceding`` (1, 48, p, h, w) clean latents
    appended after the window at timestep 0, their readouts ``preceding_scene`` (48, p, h, w) appended to the hint's
    ``scene`` (48, F, h, w); ``score`` (48, F + p, h, w); ``reference`` (1, 48, R, h, w) clean latents prepended
    at timestep 0 with their own RoPE positions."""
    if preceding_scene is not None:
        scene = torch.cat([scene, preceding_scene], dim=1)
    vace_context = torch.cat([scene, score], dim=0)
    num_t, num_p = noise.shape[2], 0 if preceding is None else preceding.shape[2]
    num_r = 0 if reference is None else reference.shape[2]
    latents = noise.clone()
    latents[:, :, :1] = first_latent
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        target = t.float().repeat(num_t)
        target[0] = 0
        timestep = torch.cat([torch.zeros(num_r), target, torch.zeros(num_p)])
        parts = [p for p in (reference, latents, preceding) if p is not None]
        flow = reference_forward(dit, vace, torch.cat(parts, dim=2), timestep, context, vace_context, vace_layers,
                                 heads, num_ref=num_r)
        latents = scheduler.step(flow[:, :, num_r : num_r + num_t], t, latents, return_dict=False)[0]
        latents[:, :, :1] = first_latent
    return latents


# ------------------------------------------------------------------------------------------------ reference frames
def visible_points(points, intrinsics, cam_to_world, image_hw, latent_hw):
    """``visible_points_from_lpc``: the points (N, 3) inside the camera's latent image in front of it (no
    occlusion test), intrinsics at ``image_hw`` scaled to ``latent_hw``; numpy float32 (M, 3)."""
    K = intrinsics.double().clone()
    K[0] *= latent_hw[1] / image_hw[1]
    K[1] *= latent_hw[0] / image_hw[0]
    world2cam = torch.inverse(cam_to_world.double())
    cam = points.double() @ world2cam[:3, :3].T + world2cam[:3, 3]
    z = cam[:, 2]
    u = cam[:, 0] * K[0, 0] / z + K[0, 2]
    v = cam[:, 1] * K[1, 1] / z + K[1, 2]
    keep = (z > 0) & (u >= 0) & (u < latent_hw[1]) & (v >= 0) & (v < latent_hw[0])
    return points[keep].float().numpy()


def select_reference(target_points, frame_visible_points: dict, max_frames=4, threshold=0.04, voxel=0.1):
    """``select_reference_latents``: indices of the earlier frames whose visible voxels overlap the union of the
    targets' by IoU >= ``threshold``, best first, at most ``max_frames``."""
    import numpy as np

    def voxels(p):
        return set(map(tuple, np.floor(p / voxel).astype(np.int32).tolist()))

    targets = voxels(np.concatenate([p for p in target_points if len(p)], axis=0))
    scored = []
    for index, points in frame_visible_points.items():
        other = voxels(points) if len(points) else set()
        iou = len(targets & other) / len(targets | other) if targets | other else 0.0
        if iou >= threshold:
            scored.append((index, iou))
    scored.sort(key=lambda item: item[1], reverse=True)
    return [i for i, _ in scored[:max_frames]]
