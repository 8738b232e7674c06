"""What a scene is made of: materials, motions, boxes, spheres and the window (plain frozen dataclasses).

:class:`~mirage.scenes.scene.Scene` packs them into tensors; :mod:`mirage.scenes.placement` draws random ones.
Lengths are metres, angles radians, times seconds, colours RGB in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

__all__ = ["PATTERNS", "SKY", "NUM_ROOM_FACES", "WALLS", "Uniform", "Material", "Motion", "Box", "Sphere", "Window",
           "SceneLayout"]

PATTERNS = ("plain", "checker", "stripes", "tiles", "dots")
SKY = -1                     # surface id of rays that leave the room through the window
NUM_ROOM_FACES = 6           # surface ids 0..5: x-, x+, y-, y+, floor (z-), ceiling (z+)
WALLS = {"x-": 0, "x+": 1, "y-": 2, "y+": 3}
_NUM_WAVES = 4               # sinusoids per random material in the smooth colour noise


class Uniform:
    """Draws from a torch.Generator (never the global RNG) as python floats."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def __call__(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def integer(self, n: int) -> int:
        return int(torch.randint(n, (), generator=self.generator))

    def sign(self) -> float:
        return 1.0 if self.integer(2) else -1.0


@dataclass(frozen=True)
class Material:
    """Procedural surface texture, evaluated at texture coordinates (s, t) in metres on the surface.

    ``pattern`` mixes ``base`` and ``accent``: "checker", "stripes" (accent on the first ``line`` of each
    cell), "tiles" (running-bond tiles with accent grout of width ``line``), "dots" (accent discs of radius
    ``line``) or "plain". ``scale`` is the cell size in metres, ``angle`` rotates the pattern (radians).
    ``cell_jitter`` varies the brightness per cell; ``noise`` adds smooth colour variation
    ``noise * tint * mean_k sin(2 pi (kx s + ky t) + phase)`` with ``waves = ((kx, ky, phase), ...)``.
    """

    base: tuple[float, float, float] = (0.7, 0.7, 0.7)
    accent: tuple[float, float, float] = (0.35, 0.35, 0.35)
    pattern: str = "plain"
    scale: float = 0.5
    angle: float = 0.0
    line: float = 0.1
    cell_jitter: float = 0.0
    noise: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    waves: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"Material.pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"Material.scale must be a positive number of metres, got {self.scale}")
        if not 0.0 <= self.line <= 1.0:
            raise ValueError(f"Material.line must be in [0, 1] (a fraction of a cell), got {self.line}")
        for name in ("base", "accent", "tint"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"Material.{name} must be 3 numbers (RGB), got {getattr(self, name)}")
        if any(len(w) != 3 for w in self.waves):
            raise ValueError(f"Material.waves must be (kx, ky, phase) triples, got {self.waves}")

    @classmethod
    def random(cls, generator: torch.Generator, patterns: Sequence[str] = PATTERNS) -> Material:
        """A random material; ``patterns`` restricts the pattern kinds drawn from."""
        u = Uniform(generator)
        pattern = patterns[u.integer(len(patterns))]
        base = tuple(u(0.2, 0.9) for _ in range(3))
        # Accents differ from the base by a clearly visible amount so patterns are never invisible.
        accent = tuple(min(max(b + u.sign() * u(0.25, 0.5), 0.05), 0.95) for b in base)
        line = {"tiles": u(0.04, 0.12), "stripes": u(0.3, 0.6), "dots": u(0.15, 0.35)}.get(pattern, 0.1)
        waves = tuple(_random_wave(u) for _ in range(_NUM_WAVES))
        return cls(
            base=base, accent=accent, pattern=pattern, scale=u(0.2, 0.9), angle=u(-0.4, 0.4) * u.integer(2),
            line=line, cell_jitter=0.0 if pattern == "plain" else u(0.05, 0.25), noise=u(0.04, 0.15),
            tint=tuple(u(0.3, 1.0) for _ in range(3)), waves=waves,
        )


def _random_wave(u: Uniform) -> tuple[float, float, float]:
    freq, direction = u(0.15, 2.0), u(0.0, 2.0 * math.pi)
    return (freq * math.cos(direction), freq * math.sin(direction), u(0.0, 2.0 * math.pi))


@dataclass(frozen=True)
class Motion:
    """Periodic motion of an object's centre about its rest centre, as a function of time in seconds.

    "linear": ``offset = vector * sin(2 pi t / period + phase)`` (back and forth, at most |vector|);
    "circular": ``offset = radius * (cos(w t + phase), sin(w t + phase), 0)`` with ``w = 2 pi / period``.
    """

    kind: str = "linear"
    vector: tuple[float, float, float] = (0.5, 0.0, 0.0)
    radius: float = 0.3
    period: float = 4.0
    phase: float = 0.0

    def __post_init__(self):
        if self.kind not in ("linear", "circular"):
            raise ValueError(f"Motion.kind must be 'linear' or 'circular', got {self.kind!r}")
        if not (self.period > 0 and math.isfinite(self.period)):
            raise ValueError(f"Motion.period must be positive seconds, got {self.period}")
        if len(self.vector) != 3:
            raise ValueError(f"Motion.vector must be 3 numbers, got {self.vector}")

    @property
    def extent(self) -> float:
        """Largest distance of the centre from its rest position."""
        return math.hypot(*self.vector) if self.kind == "linear" else abs(self.radius)

    def offset(self, times: torch.Tensor) -> torch.Tensor:
        """(*times.shape, 3) displacement from the rest centre at ``times`` seconds."""
        angle = (2.0 * math.pi / self.period) * times + self.phase
        if self.kind == "linear":
            return torch.sin(angle)[..., None] * torch.tensor(self.vector, dtype=times.dtype, device=times.device)
        zero = torch.zeros_like(angle)
        return self.radius * torch.stack([torch.cos(angle), torch.sin(angle), zero], dim=-1)


@dataclass(frozen=True)
class Box:
    """Box with half extents ``half_size`` about ``center``, rotated by ``yaw`` (radians) about world z."""

    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw: float = 0.0
    material: Material = field(default_factory=Material)
    motion: Motion | None = None

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.half_size[0], self.half_size[1])


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    material: Material = field(default_factory=Material)
    motion: Motion | None = None

    @property
    def footprint_radius(self) -> float:
        return self.radius


@dataclass(frozen=True)
class Window:
    """Opening in wall ``wall`` ("x-", "x+", "y-", "y+"): ``u`` spans the wall's horizontal coordinate
    (y for x-walls, x for y-walls) and ``z`` the height, both (low, high) in metres."""

    wall: str
    u: tuple[float, float]
    z: tuple[float, float]

    def __post_init__(self):
        if self.wall not in WALLS:
            raise ValueError(f"Window.wall must be one of {tuple(WALLS)}, got {self.wall!r}")
        if not (self.u[0] < self.u[1] and self.z[0] < self.z[1]):
            raise ValueError(f"Window ranges must be (low, high) with low < high, got u={self.u} z={self.z}")


class SceneLayout(Protocol):
    """What the ray caster and the camera paths read of a scene (:class:`~mirage.scenes.scene.Scene` has it).

    Written here, below both, so that :mod:`~mirage.scenes.raycast` and :mod:`~mirage.scenes.trajectories` need
    not import the scene module that imports them.
    """

    seed: int
    room_size: tuple[float, float, float]
    objects: Sequence[Box | Sphere]
    sky_colors: Sequence[Sequence[float]]

    @property
    def bounds(self) -> torch.Tensor: ...

    @property
    def light_direction(self) -> torch.Tensor: ...

    @property
    def free_region(self) -> tuple[float, float, float, float]: ...
