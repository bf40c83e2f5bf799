"""The registry of degradation operators and the one entry point, `degrade`.

`DEGRADATIONS` maps each node type (Graph200K's 32 plus VIRAL's `watermark`,
`rain_streaks`, `low_light`) to its `DegradationOp`. `degrade` is what both the offline
annotators and the online sampler call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotators.degradations import (blur, compression, geometry, inpaint, noise, resample, restoration, tone,
                                     weather)
from annotators.degradations.spec import DegradationOp

DEGRADATIONS: dict[str, DegradationOp] = {
    op.name: op
    for module in (blur, resample, compression, noise, tone, inpaint, geometry, weather, restoration)
    for op in module.OPS
}

GRAPH200K_DEGRADATIONS = (
    "blur", "compression", "SRx2", "SRx4", "pixelate", "Defocus", "GaussianBlur", "oversharpen",
    "GaussianNoise", "PoissonNoise", "SPNoise", "mosaic", "contrast_strengthen", "contrast_weaken",
    "quantization", "JPEG", "brighten", "darken", "LowLight", "saturate_strengthen", "saturate_weaken",
    "gray", "ColorDistortion", "Inpainting", "rotate90", "rotate180", "rotate270", "Barrel", "Pincushion",
    "Elastic", "Rain", "Frost",
)
RESTORATION_SOURCES = ("watermark", "rain_streaks", "low_light")


def get_op(node_type: str) -> DegradationOp:
    try:
        return DEGRADATIONS[node_type]
    except KeyError:
        raise KeyError(f"unknown degradation {node_type!r}; known: {', '.join(DEGRADATIONS)}") from None


def resolve_severity(op: DegradationOp, severity: int | None, rng: np.random.Generator) -> int | None:
    """Validate a given severity, or choose one: the op's default, else seeded uniform in range."""
    if op.severities is None:
        if severity is not None:
            raise ValueError(f"{op.name} takes no severity (got {severity})")
        return None
    low, high = op.severities
    if severity is None:
        return op.default_severity if op.default_severity is not None else int(rng.integers(low, high + 1))
    if not (isinstance(severity, (int, np.integer)) and low <= severity <= high):
        raise ValueError(f"{op.name} severity must be an int in {low}..{high}, got {severity!r}")
    return int(severity)


def degrade(node_type: str, image: np.ndarray, *, seed: int, severity: int | None = None,
            **overrides: Any) -> tuple[np.ndarray, dict]:
    """Apply one degradation; returns (H x W x 3 uint8, every parameter used incl. severity).

    Overrides replace sampled parameters by name (unknown names are an error); derived
    values a previous call reported (e.g. `masked_fraction`) are accepted and ignored, so a
    recorded dict replays with `degrade(node, image, seed=seed, **recorded)`.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"degrade expects an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    op = get_op(node_type)
    # Two independent streams: parameter draws never shift the apply-time noise and vice versa.
    param_rng, apply_rng = (np.random.default_rng([seed % 2**64, stream]) for stream in (0, 1))
    severity = resolve_severity(op, severity, param_rng)
    params = op.sample(param_rng, severity, image.shape[:2])
    unknown = set(overrides) - set(params) - set(op.derived)
    if unknown:
        raise ValueError(f"{node_type} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update({k: v for k, v in overrides.items() if k not in op.derived})
    result = op.apply(np.ascontiguousarray(image), params, apply_rng)
    out, derived = result if isinstance(result, tuple) else (result, {})
    return out, {**params, **derived, "severity": severity}
