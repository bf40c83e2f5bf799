"""Geometric degradations: exact rotations, radial lens distortion (`Barrel`, `Pincushion`), `Elastic`."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, size_scale


def _rotation(quarter_turns: int) -> DegradationOp:
    def sample(rng, severity, shape):
        return {"k": quarter_turns, "direction": "counterclockwise"}

    def apply(image, p, rng):
        return np.ascontiguousarray(np.rot90(image, k=p["k"]))

    return DegradationOp(f"rotate{90 * quarter_turns}", sample, apply,
                         f"np.rot90 by {90 * quarter_turns} degrees counter-clockwise", severities=None)


def radial_maps(shape: tuple[int, int], k1: float, k2: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse maps for r_src = r (1 + k1 r^2 + k2 r^4), r normalised by the half diagonal.

    k > 0 samples from further out, so content shrinks towards the centre more at the rim
    (barrel); k < 0 stretches the rim outwards (pincushion).
    """
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    norm = np.hypot(cx, cy)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = (x - cx) / norm, (y - cy) / norm
    r2 = xn * xn + yn * yn
    factor = 1.0 + k1 * r2 + k2 * r2 * r2
    return (xn * factor * norm + cx).astype(np.float32), (yn * factor * norm + cy).astype(np.float32)


def _lens(name: str, k1: float, k2: float) -> DegradationOp:
    def sample(rng, severity, shape):
        return {"k1": k1, "k2": k2}

    def apply(image, p, rng):
        map_x, map_y = radial_maps(image.shape[:2], p["k1"], p["k2"])
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    return DegradationOp(name, sample, apply, f"radial distortion k1={k1}, k2={k2}", severities=None)


def smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-std smooth random field: white noise on a coarse grid, blurred, bicubic up."""
    h, w = shape
    step = max(1.0, sigma / 4.0)
    gh, gw = max(2, int(np.ceil(h / step))), max(2, int(np.ceil(w / step)))
    coarse = rng.uniform(-1.0, 1.0, size=(gh, gw)).astype(np.float32)
    coarse = cv2.GaussianBlur(coarse, (0, 0), sigma / step, borderType=cv2.BORDER_REFLECT)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


# Elastic: not published beyond "severity 4"; alpha = displacement std in px at 512 px.
def _sample_elastic(rng, severity, shape):
    scale = size_scale(shape)
    return {"alpha": round(by_severity((1.5, 3.0, 4.5, 6.0, 8.0), severity) * scale, 3),
            "sigma": round(24.0 * scale, 3)}


def _apply_elastic(image, p, rng):
    h, w = image.shape[:2]
    dx = smooth_field((h, w), p["sigma"], rng) * p["alpha"]
    dy = smooth_field((h, w), p["sigma"], rng) * p["alpha"]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image, x + dx, y + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


OPS = (
    _rotation(1),
    _rotation(2),
    _rotation(3),
    _lens("Barrel", 0.1, 0.05),
    _lens("Pincushion", -0.1, -0.05),
    DegradationOp("Elastic", _sample_elastic, _apply_elastic, "smooth random elastic warp",
                  default_severity=4, stochastic=True),
)
