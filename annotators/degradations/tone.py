"""Tone and colour: contrast, brightness, `LowLight` (scale U(0.3,0.4)), saturation, `gray`, `ColorDistortion`."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, pick, sub_range, to_uint8


def to_hsv(image: np.ndarray) -> np.ndarray:
    """Float HSV with H in degrees and S, V in [0, 1] (no 8-bit rounding of the hue)."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def from_hsv(hsv: np.ndarray) -> np.ndarray:
    hsv[..., 1:] = np.clip(hsv[..., 1:], 0.0, 1.0)
    return to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


def _contrast(name: str, factors: tuple[float, ...]) -> DegradationOp:
    def sample(rng, severity, shape):
        return {"factor": by_severity(factors, severity)}

    def apply(image, p, rng):
        # Scale about the mean luma so overall brightness stays put.
        x = image.astype(np.float32)
        mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())
        return to_uint8((x - mean) * p["factor"] + mean)

    return DegradationOp(name, sample, apply, f"contrast scaled about the mean luma ({name})")


def _saturation(name: str, factors: tuple[float, ...]) -> DegradationOp:
    def sample(rng, severity, shape):
        return {"factor": by_severity(factors, severity)}

    def apply(image, p, rng):
        hsv = to_hsv(image)
        hsv[..., 1] *= p["factor"]
        return from_hsv(hsv)

    return DegradationOp(name, sample, apply, f"HSV saturation scaled ({name})")


def _sample_brighten(rng, severity, shape):
    return {"delta": by_severity((0.1, 0.2, 0.3, 0.4, 0.5), severity)}


def _apply_brighten(image, p, rng):
    hsv = to_hsv(image)
    hsv[..., 2] += p["delta"]
    return from_hsv(hsv)


# darken: a gamma on V, so shadows sink more than highlights (LowLight is a flat scale).
def _sample_darken(rng, severity, shape):
    return {"gamma": by_severity((1.4, 1.8, 2.2, 2.7, 3.2), severity)}


def _apply_darken(image, p, rng):
    hsv = to_hsv(image)
    hsv[..., 2] = np.power(hsv[..., 2], p["gamma"])
    return from_hsv(hsv)


# LowLight: published scale U(0.3, 0.4); higher severity takes the darker slice.
def _sample_lowlight(rng, severity, shape):
    return {"scale": pick(rng, *sub_range(0.3, 0.4, 6 - severity))}


def _apply_lowlight(image, p, rng):
    return to_uint8(image.astype(np.float32) * p["scale"])


def _sample_none(rng, severity, shape):
    return {}


def _apply_gray(image, p, rng):
    # Same conversion as annotators/color.py (BT.601), replicated to three channels.
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


# ColorDistortion: published as a channel shuffle or one channel set to 0 / 1 (0 / 255 here).
_PERMUTATIONS = ([0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0])


def _sample_colour(rng, severity, shape):
    if rng.random() < 0.5:
        return {"mode": "shuffle", "permutation": list(_PERMUTATIONS[int(rng.integers(len(_PERMUTATIONS)))])}
    return {"mode": "set", "channel": int(rng.integers(3)), "value": int(rng.choice([0, 255]))}


def _apply_colour(image, p, rng):
    if p["mode"] == "shuffle":
        return np.ascontiguousarray(image[..., p["permutation"]])
    if p["mode"] == "set":
        out = image.copy()
        out[..., p["channel"]] = p["value"]
        return out
    raise ValueError(f"ColorDistortion mode must be 'shuffle' or 'set', got {p['mode']!r}")


OPS = (
    _contrast("contrast_strengthen", (1.25, 1.5, 1.75, 2.0, 2.5)),
    _contrast("contrast_weaken", (0.8, 0.65, 0.5, 0.4, 0.3)),
    DegradationOp("brighten", _sample_brighten, _apply_brighten, "HSV value raised by delta"),
    DegradationOp("darken", _sample_darken, _apply_darken, "gamma > 1 on HSV value"),
    DegradationOp("LowLight", _sample_lowlight, _apply_lowlight, "RGB scaled by U(0.3, 0.4)"),
    _saturation("saturate_strengthen", (1.3, 1.6, 2.0, 2.5, 3.0)),
    _saturation("saturate_weaken", (0.8, 0.6, 0.45, 0.3, 0.15)),
    DegradationOp("gray", _sample_none, _apply_gray, "BT.601 luma on three channels", severities=None),
    DegradationOp("ColorDistortion", _sample_colour, _apply_colour, "channel shuffle or one channel set to 0/255",
                  severities=None),
)
