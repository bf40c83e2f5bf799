"""Resizing a map by what it holds, so its structure survives the resize.

Three kinds (declared per node type in core/node_types.py, `resample`):
- "lines": edge and line maps, skeletons, box outlines. Shrinking takes the maximum over each
  target pixel's footprint where the footprint holds at least half a line crossing (the
  footprints partition the source), so a one-pixel line stays one pixel wide and keeps its
  intensity instead of averaging away (`line_resize`); enlarging repeats pixels.
- "labels": masks, segmentations, label maps. Nearest neighbour: only original values survive.
- "continuous": photos, depth, normals. Area when shrinking, linear when enlarging.
"""

from __future__ import annotations

import numpy as np

from core.node_types import RESAMPLE_KINDS


def _starts(source: int, target: int) -> np.ndarray:
    """First source index of each of `target` footprints partitioning range(source)."""
    return (np.arange(target, dtype=np.int64) * source) // target


def line_resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an edge / line map so one-pixel lines stay one pixel wide and keep their strength.

    Shrinking: the source is partitioned into one footprint per target pixel; the target pixel
    takes its footprint's maximum when the footprint holds at least half of a one-pixel line
    crossing it (its sum >= 0.5 x max x sqrt(footprint area)), else 0.
    The maximum keeps a thin line's intensity (an average would spread it into faint dots); the
    half-crossing rule drops footprints a line only clips at a corner, so a line does not thicken
    into a staircase. Along each column of footprints a line leaves at least half a crossing in
    one of them, so it stays 8-connected. Enlarging repeats pixels.
    """
    src_h, src_w = arr.shape[:2]
    th, tw = min(height, src_h), min(width, src_w)
    out = arr
    if (th, tw) != (src_h, src_w):
        grey = arr.ndim == 3 and all(np.array_equal(arr[..., 0], arr[..., k]) for k in range(1, arr.shape[2]))
        if grey:  # an edge map decoded as RGB: one channel's work, repeated
            one = line_resize(np.ascontiguousarray(arr[..., 0]), height, width)
            return np.repeat(one[..., None], arr.shape[2], axis=2)
        ys, xs = _starts(src_h, th), _starts(src_w, tw)

        def pooled(ufunc, a, dtype=None):
            return ufunc.reduceat(ufunc.reduceat(a, ys, axis=0, dtype=dtype), xs, axis=1, dtype=dtype)

        # the line test runs on the brightest channel; the kept value is each channel's own maximum
        strength = arr if arr.ndim == 2 else np.maximum.reduce([arr[..., k] for k in range(arr.shape[2])])
        peak = pooled(np.maximum, strength).astype(np.float64)
        mass = pooled(np.add, strength, np.float64 if arr.dtype.kind == "f" else np.uint64).astype(np.float64)
        area = np.outer(np.diff(np.append(ys, src_h)), np.diff(np.append(xs, src_w))).astype(np.float64)
        keep = mass >= 0.5 * peak * np.sqrt(area)
        channel_peak = pooled(np.maximum, arr)
        out = np.where(keep if arr.ndim == 2 else keep[..., None], channel_peak, 0).astype(arr.dtype)
    if height > src_h:
        out = np.take(out, _starts(src_h, height), axis=0)  # source row of each target row
    if width > src_w:
        out = np.take(out, _starts(src_w, width), axis=1)
    return np.ascontiguousarray(out)


def resize_map(arr: np.ndarray, height: int, width: int, kind: str) -> np.ndarray:
    """Resize an H x W (x C) array to (height, width) with the method of `kind`."""
    import cv2

    if arr.shape[:2] == (height, width):
        return arr
    if kind == "lines":
        return line_resize(arr, height, width)
    if kind == "labels":
        return cv2.resize(arr, (width, height), interpolation=cv2.INTER_NEAREST)
    if kind == "continuous":
        shrink = height * width < arr.shape[0] * arr.shape[1]
        return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    raise ValueError(f"unknown resample kind {kind!r}; one of {', '.join(RESAMPLE_KINDS)}")
