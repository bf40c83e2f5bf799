"""What a degradation operator is: a parameter sampler plus a pure apply function.

Splitting sampling from applying makes every output reproducible from its record:
`sample` turns (severity, image shape, rng) into explicit parameters, and `apply` uses only
those parameters plus a random stream derived from the seed (for noise fields, stroke
positions, ...). Replaying `degrade(node, image, seed=s, **params)` gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

Params = dict[str, Any]
Sampler = Callable[[np.random.Generator, "int | None", tuple[int, int]], Params]
Applier = Callable[[np.ndarray, Params, np.random.Generator], "np.ndarray | tuple[np.ndarray, Params]"]


@dataclass(frozen=True)
class DegradationOp:
    """One operator. `severities` is the inclusive allowed range, or None when it has none.

    `derived` names values that `apply` measures and reports (e.g. the masked fraction);
    they are recorded with the params and ignored when a record is replayed.
    `stochastic` says whether the output depends on the seed beyond the sampled params.
    """

    name: str
    sample: Sampler
    apply: Applier
    description: str
    severities: tuple[int, int] | None = (1, 5)
    default_severity: int | None = None  # used when severity is None; None = seeded random
    stochastic: bool = False
    derived: tuple[str, ...] = field(default_factory=tuple)


def pick(rng: np.random.Generator, low: float, high: float, digits: int = 4) -> float:
    """A uniform draw rounded so the recorded value reproduces the output exactly."""
    return round(float(rng.uniform(low, high)), digits)


def sub_range(low: float, high: float, severity: int, levels: int = 5) -> tuple[float, float]:
    """The severity-th of `levels` equal slices of a published range [low, high]."""
    step = (high - low) / levels
    return low + step * (severity - 1), low + step * severity


def by_severity(table: tuple, severity: int):
    return table[severity - 1]


def size_scale(shape: tuple[int, int], reference: int = 512) -> float:
    """Pixel sizes are published for ~512 px images; scale them with the short side."""
    return min(shape) / reference


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
