"""`Inpainting` source: free-form brush strokes (published 20-50 strokes, thickness 10-20 px) filled with black."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, size_scale, sub_range


def stroke_mask(shape: tuple[int, int], strokes: int, thickness: tuple[int, int], max_step: int,
                rng: np.random.Generator) -> np.ndarray:
    """Random-walk polylines, 2-5 vertices each; returns a uint8 0/1 mask."""
    h, w = shape
    mask = np.zeros((h, w), np.uint8)
    vertices = rng.integers(2, 6, size=strokes)
    starts = rng.uniform([0, 0], [w, h], size=(strokes, 2))
    widths = rng.integers(thickness[0], thickness[1] + 1, size=strokes)
    for start, n, width in zip(starts, vertices, widths):
        steps = rng.uniform(-max_step, max_step, size=(n - 1, 2))
        points = np.vstack([start, start + np.cumsum(steps, axis=0)])
        points = np.clip(points, 0, [w - 1, h - 1]).round().astype(np.int32)
        cv2.polylines(mask, [points], False, 1, int(width), cv2.LINE_8)
    return mask


def _sample(rng, severity, shape):
    scale = size_scale(shape)
    low, high = sub_range(20, 51, severity)
    return {
        "strokes": int(rng.integers(int(np.ceil(low)), int(np.ceil(high)))),
        "thickness": [max(1, round(10 * scale)), max(1, round(20 * scale))],
        "max_step": max(4, round(80 * scale)),
        "fill": 0,
    }


def _apply(image, p, rng):
    mask = stroke_mask(image.shape[:2], p["strokes"], tuple(p["thickness"]), p["max_step"], rng)
    out = image.copy()
    out[mask.astype(bool)] = p["fill"]
    return out, {"masked_fraction": round(float(mask.mean()), 6)}


OPS = (
    DegradationOp("Inpainting", _sample, _apply, "brush-stroke holes filled with a flat value",
                  stochastic=True, derived=("masked_fraction",)),
)
