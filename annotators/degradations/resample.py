"""Resolution loss: `SRx2`, `SRx4` (bicubic down then up), `pixelate`, `mosaic` (pixelated patches)."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, size_scale


def down_up(image: np.ndarray, factor: float, down: int, up: int) -> np.ndarray:
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=down)
    return cv2.resize(small, (w, h), interpolation=up)


def _sr(factor: int) -> DegradationOp:
    def sample(rng, severity, shape):
        return {"factor": factor, "interpolation": "bicubic"}

    def apply(image, p, rng):
        return down_up(image, p["factor"], cv2.INTER_CUBIC, cv2.INTER_CUBIC)

    return DegradationOp(f"SRx{factor}", sample, apply, f"bicubic x{factor} down then up", severities=None)


# pixelate: box-average down, nearest up; keep fractions as in the common corruption benchmark.
def _sample_pixelate(rng, severity, shape):
    return {"keep": by_severity((0.6, 0.5, 0.4, 0.3, 0.25), severity)}


def _apply_pixelate(image, p, rng):
    return down_up(image, 1.0 / p["keep"], cv2.INTER_AREA, cv2.INTER_NEAREST)


# mosaic: not published; read as censoring mosaic, i.e. coarse pixel blocks over a few random
# rectangles (pixelate is the global version).
def _sample_mosaic(rng, severity, shape):
    h, w = shape
    block = max(4, round(by_severity((8, 12, 16, 24, 32), severity) * size_scale(shape)))
    count = by_severity((1, 2, 2, 3, 4), severity)
    rects = []
    for _ in range(count):
        rh, rw = round(h * pick_frac(rng)), round(w * pick_frac(rng))
        y, x = int(rng.integers(0, h - rh + 1)), int(rng.integers(0, w - rw + 1))
        rects.append([x, y, rw, rh])
    return {"block": block, "rects": rects}


def pick_frac(rng) -> float:
    return float(rng.uniform(0.25, 0.5))


def _apply_mosaic(image, p, rng):
    out = image.copy()
    b = p["block"]
    for x, y, rw, rh in p["rects"]:
        patch = image[y:y + rh, x:x + rw]
        small = cv2.resize(patch, (max(1, rw // b), max(1, rh // b)), interpolation=cv2.INTER_AREA)
        out[y:y + rh, x:x + rw] = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_NEAREST)
    return out


OPS = (
    _sr(2),
    _sr(4),
    DegradationOp("pixelate", _sample_pixelate, _apply_pixelate, "global pixelation (area down, nearest up)"),
    DegradationOp("mosaic", _sample_mosaic, _apply_mosaic, "pixel-block mosaic over random rectangles"),
)
