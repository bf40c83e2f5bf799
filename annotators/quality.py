"""Quality gates: measures that tell a degenerate annotator output from a usable one.

Each annotator calls these beside its output with thresholds from its own Params and sets
`NodeOutput.quality` to a reason (None = usable). The reasons:

  no_person     a pose with no detected person (the skeleton map is black)
  empty_mask    a mask / segmentation / foreground that covers (almost) nothing
  full_mask     a mask that covers (almost) the whole image
  constant_map  a depth or normal map with (almost) no spread of values
  few_edges     an edge or line map with almost no edge pixels
  no_box        a detection / grounding with no box
  no_op         an edit or degradation whose output is within the no-op distance of its input
  flat_image    a source photo that is flat, near-constant or tiny (annotators/image_quality.py)
  low_quality   a source photo below a learned quality score set in params (image_quality_clip)
  low_confidence  a detector-backed output whose model scores (person / presence score, mask
                probability, box score, predicted IoU) are below the annotator's thresholds: the
                output is not empty, but the model itself does not believe it (`score_quality`)

All measures are in 8-bit units (16-bit maps are scaled by 1/257), so one threshold reads the
same on every map.

Where the gate looks (`gate_region`, a param of every gated annotator): the exporter centre-crops
each cell to its aspect, so with square cells (Graph200K, `export.aspect: square`) only the centre
square of a map reaches a sample. A mask or watermark near the border of a 4:3 photo is cut away
and the cell is blank or a no-op, so by default the gates measure that centre square
("centre_square"); "full" measures the whole map (for `export.aspect: query`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators.base import AnnotatorParams

GateRegion = Literal["centre_square", "full"]


class GateParams(AnnotatorParams):
    """Base of the params of gated annotators: the region the quality gate measures."""

    gate_region: GateRegion = Field("centre_square")


def centre_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the centre square, as the exporter's centre crop to a square takes it."""
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    return y0, y0 + side, x0, x0 + side


def gate_view(arr: np.ndarray, region: str = "centre_square") -> np.ndarray:
    """The part of a map a gate measures: its centre square, or all of it."""
    if region == "full" or arr is None:
        return arr
    y0, y1, x0, x1 = centre_box(*arr.shape[:2])
    return arr[y0:y1, x0:x1]

REASONS = ("no_person", "empty_mask", "full_mask", "constant_map", "few_edges", "no_box", "no_op", "flat_image",
           "low_quality", "low_confidence")


def as_8bit(arr: np.ndarray) -> np.ndarray:
    """float32 view of a map in 0..255 units (uint16 scaled down)."""
    a = np.asarray(arr)
    if a.dtype == np.uint16:
        return a.astype(np.float32) / 257.0
    return a.astype(np.float32)


def strong_fraction(arr: np.ndarray, threshold: float = 128.0) -> float:
    """Fraction of pixels whose brightest channel reaches `threshold` (edge / line maps)."""
    a = as_8bit(arr)
    if a.ndim == 3:
        a = a.max(axis=2)
    return float((a >= threshold).mean()) if a.size else 0.0


def edge_quality(arr: np.ndarray, min_fraction: float, threshold: float = 128.0) -> str | None:
    """`few_edges` when fewer than `min_fraction` of the pixels are edges (>= threshold)."""
    return "few_edges" if strong_fraction(arr, threshold) < min_fraction else None


def mask_quality(mask: np.ndarray, min_fraction: float, max_fraction: float = 1.0) -> str | None:
    """`empty_mask` / `full_mask` from the covered fraction of a boolean (or non-zero) mask."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.any(axis=2)
    covered = float((m != 0).mean()) if m.size else 0.0
    if covered < min_fraction:
        return "empty_mask"
    if covered > max_fraction:
        return "full_mask"
    return None


def value_spread(arr: np.ndarray) -> float:
    """Robust spread of a map: the 1st to 99th percentile range, in 8-bit units (max over channels)."""
    a = as_8bit(arr)
    if a.ndim == 2:
        a = a[..., None]
    lo, hi = np.percentile(a.reshape(-1, a.shape[-1]), [1, 99], axis=0)
    return float(np.max(hi - lo))


def relative_spread(pred: np.ndarray) -> float:
    """1st-99th percentile range of a float prediction over its largest magnitude (0 when all zero)."""
    a = np.asarray(pred, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0
    lo, hi = np.percentile(finite, [1, 99])
    scale = max(abs(lo), abs(hi))
    return float((hi - lo) / scale) if scale > 0 else 0.0


def constant_quality(arr: np.ndarray, min_spread: float) -> str | None:
    """`constant_map` when the spread of values is below `min_spread` (8-bit units)."""
    return "constant_map" if value_spread(arr) < min_spread else None


def changed_fraction(source: np.ndarray, output: np.ndarray, delta: float) -> float:
    """Fraction of pixels whose largest channel difference exceeds `delta` (8-bit units).

    A fraction rather than a mean difference: a small local edit (a shape, a watermark: 0.4 % of
    the pixels, mean difference 0.1) is a real edit, while a hue rotation of a grey photo changes
    nothing at all. An output of another shape (a rotation) is first brought to the source's
    shape with area interpolation."""
    import cv2

    a, b = as_8bit(source), as_8bit(output)
    if b.shape[:2] != a.shape[:2]:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    a = a if a.ndim == 3 else a[..., None]
    b = b if b.ndim == 3 else b[..., None]
    diff = np.abs(a - b).max(axis=2)  # grey against RGB broadcasts over the channels
    return float((diff > delta).mean()) if diff.size else 0.0


def no_op_quality(source: np.ndarray, output: np.ndarray, min_changed: float, delta: float) -> str | None:
    """`no_op` when fewer than `min_changed` of the pixels differ from the source by more than `delta`."""
    return "no_op" if changed_fraction(source, output, delta) < min_changed else None


def score_quality(scores: dict[str, float], minimums: dict[str, float]) -> str | None:
    """`low_confidence` when any model score is below its minimum (a minimum of 0 never holds back).

    `scores` and `minimums` share keys; a key missing from `scores` counts as 0 (the model
    reported nothing)."""
    return "low_confidence" if any(scores.get(k, 0.0) < m for k, m in minimums.items()) else None


def rounded(value: float, digits: int = 4) -> float:
    """A stored score: rounded so float noise between runs never changes the meta's bytes."""
    return round(float(value), digits)
