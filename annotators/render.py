"""Rendering shared by the segmentation, SAM and grounding annotators.

Pure numpy/OpenCV functions: colour palettes, coloured mask maps, box drawings and the
VIRAL target renderings (red interactive box, filled white detection rectangle).
Every colour choice is a function of its inputs (and an explicit seed), never of global state.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

Box = Sequence[float]  # [x0, y0, x1, y1] in source pixels, x1/y1 exclusive-ish (float)

RED = (255, 0, 0)
WHITE = (255, 255, 255)
_GOLDEN = 0.618033988749895


def distinct_colours(n: int, seed: int | None = None) -> list[tuple[int, int, int]]:
    """`n` well-separated, saturated RGB colours, never black or white.

    Hues step by the golden ratio so neighbours in the list differ strongly; with a seed
    the start hue and the order are drawn from it (VIRAL's "random distinct colour per
    entity"), without one the list is the same for every call.
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(seed) if seed is not None else None
    start = float(rng.random()) if rng is not None else 0.0
    colours = []
    for i in range(n):
        hue = (start + i * _GOLDEN) % 1.0
        # Cycle saturation/value a little so that hues that come round again stay apart.
        sat = (0.95, 0.65, 0.8)[(i // 7) % 3]
        val = (0.95, 0.75, 0.6)[(i // 21) % 3]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((int(round(r * 255)), int(round(g * 255)), int(round(b * 255))))
    if rng is not None:
        order = rng.permutation(n)
        colours = [colours[i] for i in order]
    return colours


def semantic_palette(num_classes: int = 256) -> np.ndarray:
    """Fixed class -> colour table (num_classes x 3 uint8), the same for every image and run.

    Built with the bit-interleaving label colormap used by PASCAL-style tools, shifted by one
    so that class 0 is not black (every pixel of a semantic map has a class; black would
    read as "nothing").
    """
    table = np.zeros((num_classes, 3), dtype=np.uint8)
    for cls in range(num_classes):
        label = cls + 1
        r = g = b = 0
        for shift in range(7, -1, -1):
            r |= ((label >> 0) & 1) << shift
            g |= ((label >> 1) & 1) << shift
            b |= ((label >> 2) & 1) << shift
            label >>= 3
        table[cls] = (r, g, b)
    return table


def colour_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """H x W integer class map -> H x W x 3 RGB through a palette (classes beyond it wrap)."""
    return palette[np.asarray(labels, dtype=np.int64) % len(palette)]


def colour_masks(masks: Sequence[np.ndarray], colours: Sequence[tuple[int, int, int]],
                 height: int, width: int) -> np.ndarray:
    """Paint binary masks on black, largest first so small objects stay visible on top."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    order = sorted(range(len(masks)), key=lambda i: (-int(np.count_nonzero(masks[i])), i))
    for i in order:
        canvas[np.asarray(masks[i], dtype=bool)] = colours[i]
    return canvas


def line_thickness(height: int, width: int, fraction: float = 0.004, minimum: int = 2) -> int:
    """Stroke width that stays visible after the grid resizes a cell to ~512 px."""
    return max(minimum, int(round(fraction * max(height, width))))


def _int_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return (int(np.clip(round(x0), 0, width - 1)), int(np.clip(round(y0), 0, height - 1)),
            int(np.clip(round(x1), 0, width - 1)), int(np.clip(round(y1), 0, height - 1)))


def clip_box(box: Box, height: int, width: int) -> list[float]:
    """Order the corners and clip them to the image: [x0, y0, x1, y1] with 0 <= x <= width."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return [float(np.clip(x0, 0, width)), float(np.clip(y0, 0, height)),
            float(np.clip(x1, 0, width)), float(np.clip(y1, 0, height))]


def draw_boxes(height: int, width: int, boxes: Sequence[Box],
               colours: Sequence[tuple[int, int, int]], thickness: int | None = None) -> np.ndarray:
    """Box outlines, one colour each, on black (Graph200K's `bbox` condition)."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    t = thickness or line_thickness(height, width)
    for box, colour in zip(boxes, colours):
        x0, y0, x1, y1 = _int_box(box, height, width)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), tuple(int(c) for c in colour), t)
    return canvas


def draw_red_box(image: np.ndarray, box: Box, thickness: int | None = None) -> np.ndarray:
    """A copy of the image with a visible red box around one object (VIRAL's interactive source)."""
    h, w = image.shape[:2]
    out = np.ascontiguousarray(image.copy())
    t = thickness or line_thickness(h, w, fraction=0.006, minimum=3)
    x0, y0, x1, y1 = _int_box(box, h, w)
    cv2.rectangle(out, (x0, y0), (x1, y1), RED, t)
    return out


def filled_rectangles(height: int, width: int, boxes: Sequence[Box]) -> np.ndarray:
    """H x W uint8: filled white (255) rectangles on black (VIRAL's detection target)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    for box in boxes:
        x0, y0, x1, y1 = _int_box(box, height, width)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), 255, thickness=-1)
    return canvas


def binary_mask_image(mask: np.ndarray) -> np.ndarray:
    """bool/0-1 mask -> H x W uint8 0/255 (lossless PNG-friendly grey map)."""
    return np.where(np.asarray(mask, dtype=bool), np.uint8(255), np.uint8(0))
