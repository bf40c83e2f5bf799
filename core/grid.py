"""Cell geometry and the two layouts a sample is written in.

Aspect rule: every cell of a sample has one shape. `square` (Graph200K): R x R. `query`: the
query row's source image aspect a = w / h, clamped to [1 / max_aspect, max_aspect], at area
~ R^2: h = round(R / sqrt(a) / 16) * 16, w = round(R * sqrt(a) / 16) * 16 (both >= 16). Each
cell image is centre-cropped to that aspect, then resized - no padding, no stretching - with the
method of its node type's resample kind (core/node_types.py): Lanczos for continuous
images (photos, depth, normals), the line-preserving max over each footprint for edge and line
maps, nearest neighbour for masks and label maps (only their original values survive).

Buckets (`export.buckets`, a list of cell sizes): a sample takes the bucket whose aspect is
nearest its query image's, so a 3:4 portrait is cut into a 3:4 cell and keeps its whole subject
(a square crop would drop a quarter of its height). `export.max_grid_pixels` caps a grid's area:
a sample with many rows gets smaller cells, and its record says their size.

Layouts:
- grid: one composite PNG (`grid.png`), rows top to bottom, columns left to right;
- sequence: the separate cells as `r<row>c<col>.png` fields plus the same JSON record (roles,
  row, column); its field set depends on the grid shape, so each (rows, cols) shape is its own
  shard set (`shards_seq/<split>/<rows>x<cols>/`), which keeps every shard set's fields uniform
  (HF datasets infers its features from the first samples).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

ALIGN = 16  # VAE x patch size


def cell_shape(cell_size: int, aspect: float = 1.0, max_aspect: float = 2.0) -> tuple[int, int]:
    """(height, width) of a cell: area ~ cell_size^2, aspect ~ w / h clamped, sides divisible by 16."""
    a = min(max(aspect, 1.0 / max_aspect), max_aspect)
    h = max(ALIGN, round(cell_size / math.sqrt(a) / ALIGN) * ALIGN)
    w = max(ALIGN, round(cell_size * math.sqrt(a) / ALIGN) * ALIGN)
    return h, w


def nearest_bucket(aspect: float, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The (width, height) bucket whose aspect is nearest `aspect` (w / h) on a log scale (a 2:1
    image is as far from 1:1 as a 1:2 one); ties go to the earlier bucket."""
    return min(buckets, key=lambda b: abs(math.log((b[0] / b[1]) / aspect)))


def capped(hw: tuple[int, int], rows: int, cols: int, max_pixels: int | None) -> tuple[int, int]:
    """`hw` scaled down (aspect kept, sides multiples of 16, at least 16) so that a rows x cols grid
    of such cells holds at most `max_pixels` pixels; unchanged when it already fits or no cap."""
    h, w = hw
    if not max_pixels or rows * cols * h * w <= max_pixels:
        return hw
    scale = math.sqrt(max_pixels / (rows * cols * h * w))
    return max(ALIGN, int(h * scale) // ALIGN * ALIGN), max(ALIGN, int(w * scale) // ALIGN * ALIGN)


def fit_cell(rgb: np.ndarray, hw: tuple[int, int], kind: str = "continuous") -> np.ndarray:
    """Centre-crop to the aspect of hw, then resize to hw by `kind` (continuous: Lanczos)."""
    th, tw = hw
    h, w = rgb.shape[:2]
    if w * th > h * tw:  # too wide: crop width
        cw, ch = max(1, round(h * tw / th)), h
    else:
        cw, ch = w, max(1, round(w * th / tw))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])
    if crop.shape[:2] == (th, tw):
        return crop
    if kind == "continuous":
        return np.asarray(Image.fromarray(crop).resize((tw, th), Image.LANCZOS))
    from core.map_resize import resize_map

    return resize_map(crop, th, tw, kind)


def compose_grid(cells: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Row-major equal-shape cells -> one image."""
    h, w = cells[0].shape[:2]
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, cell in enumerate(cells):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
    return grid


def sequence_field(row: int, col: int) -> str:
    return f"r{row}c{col}.png"


def shape_set(rows: int, cols: int) -> str:
    """Name of the sequence shard set of a grid shape."""
    return f"{rows}x{cols}"
