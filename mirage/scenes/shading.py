"""Surface colour: procedural patterns, smooth noise and Lambert shading with fixed lights; the sky gradient.

Colour depends on the surface point alone, never on the viewing direction, so two views of a static point
agree exactly up to floating-point error.
"""

from __future__ import annotations

import math

import torch

from mirage.scenes.elements import Material

__all__ = ["shade", "sky_color"]


def _cell_hash(i: torch.Tensor, j: torch.Tensor, salt: int) -> torch.Tensor:
    """Pseudo-random value in [0, 1) per integer cell, a pure function of (i, j, salt)."""
    x = torch.sin(i * 12.9898 + j * 78.233 + salt * 37.719) * 43758.5453
    return x - torch.floor(x)


def shade(m: Material, salt: int, st, normal, points, light_direction, lamp):
    """Colour (N, 3) of material ``m`` at texture coordinates st (N, 2), normals and points (N, 3)."""
    s, t = st.unbind(-1)
    u, v = s / m.scale, t / m.scale
    if m.angle:
        c, n = math.cos(m.angle), math.sin(m.angle)
        u, v = c * u + n * v, -n * u + c * v
    if m.pattern == "tiles":
        v_cell = torch.floor(v)
        u = u + 0.5 * torch.remainder(v_cell, 2.0)   # running bond: odd rows shift by half a tile
    i, j = torch.floor(u), torch.floor(v)
    fu, fv = u - i, v - j
    if m.pattern == "checker":
        mix = torch.remainder(i + j, 2.0)
    elif m.pattern == "stripes":
        mix = (fu < m.line).float()
    elif m.pattern == "tiles":
        mix = ((fu < m.line) | (fv < m.line)).float()
    elif m.pattern == "dots":
        mix = ((fu - 0.5) ** 2 + (fv - 0.5) ** 2 < m.line ** 2).float()
    else:
        mix = torch.zeros_like(u)
    base = torch.tensor(m.base, device=points.device)
    accent = torch.tensor(m.accent, device=points.device)
    color = base + (accent - base) * mix[:, None]
    if m.cell_jitter:
        color = color * (1.0 + m.cell_jitter * (_cell_hash(i, j, salt) - 0.5))[:, None]
    if m.noise and m.waves:
        wave_sum = sum(torch.sin(2 * math.pi * (kx * s + ky * t) + phase) for kx, ky, phase in m.waves)
        color = color + (m.noise / len(m.waves)) * wave_sum[:, None] * torch.tensor(m.tint, device=points.device)
    to_lamp = lamp - points
    lamp_distance2 = (to_lamp * to_lamp).sum(-1).clamp(min=1e-6)
    lamp_cosine = ((normal * to_lamp).sum(-1) * lamp_distance2.rsqrt()).clamp(min=0.0)
    sun_cosine = (normal @ light_direction).clamp(min=0.0)
    shade = 0.5 + 0.25 * sun_cosine + 0.6 * lamp_cosine / (1.0 + 0.08 * lamp_distance2)
    return color * shade[:, None]


def sky_color(d: torch.Tensor, sky: torch.Tensor) -> torch.Tensor:
    """Sky colour as a function of the ray direction only (points at infinity look the same from anywhere)."""
    unit = d / d.norm(dim=-1, keepdim=True)
    height = unit[..., 2].clamp(0.0, 1.0).sqrt()
    clouds = 0.06 * torch.sin(9.0 * unit[..., 0]) * torch.sin(7.0 * unit[..., 1] + 3.0 * unit[..., 2])
    return torch.lerp(sky[0], sky[1], height[..., None]) + clouds[..., None]
