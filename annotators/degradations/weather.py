"""Weather: `Rain` (published value U(40,200)) and `Frost` (procedural ice texture, default severity 4)."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, pick, size_scale, sub_range, to_uint8


def streak_layer(shape: tuple[int, int], density: float, length: int, angle_deg: float, width: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Float32 map in [0, 1]: drops (a `density` share of pixels) drawn as straight streaks.

    Same picture as motion-blurring a sparse drop map, but drawn as anti-aliased segments,
    which is several times faster than a large 2-D convolution.
    """
    h, w = shape
    count = int(rng.binomial(h * w, min(max(density, 0.0), 1.0)))
    half = np.array([np.cos(np.deg2rad(angle_deg)), -np.sin(np.deg2rad(angle_deg))]) * (length - 1) / 2
    # Centres over a margin around the frame, so streaks also enter from the borders.
    margin = abs(half).max()
    area = (w + 2 * margin) * (h + 2 * margin)
    centres = rng.uniform([-margin, -margin], [w + margin, h + margin], size=(round(count * area / (h * w)), 2))
    lines = np.stack([centres - half, centres + half], axis=1).round().astype(np.int32)
    layer = np.zeros((h, w), np.float32)
    cv2.polylines(layer, list(lines), False, 1.0, 1, cv2.LINE_AA)
    if width > 1.0:
        layer = cv2.GaussianBlur(layer, (0, 0), (width - 1.0) / 2.0 + 0.3) * width
    return np.clip(layer, 0.0, 1.0)


def lighten(x: np.ndarray, layer: np.ndarray, opacity: float, colour=(255.0, 255.0, 255.0)) -> np.ndarray:
    """Float image moved towards `colour` by layer * opacity, never darker (in place)."""
    a = (layer * np.float32(opacity))[..., None]
    x += np.maximum(np.asarray(colour, np.float32) - x, 0.0) * a
    return x


def screen(image: np.ndarray, layer: np.ndarray, opacity: float, colour=(255.0, 255.0, 255.0)) -> np.ndarray:
    return to_uint8(lighten(image.astype(np.float32), layer, opacity, colour))


# Rain: `value` follows the published U(40, 200) (drop density = value / 25600 per pixel).
def _sample_rain(rng, severity, shape):
    scale = size_scale(shape)
    return {
        "value": pick(rng, *sub_range(40.0, 200.0, severity), 2),
        "length": max(3, round(pick(rng, 15.0, 35.0) * scale)),
        "angle": pick(rng, 60.0, 120.0, 2),  # degrees from the horizontal; 90 = vertical
        "width": round(max(1.0, 2.0 * scale), 3),
        "opacity": pick(rng, 0.6, 0.9, 3),
    }


def _apply_rain(image, p, rng):
    layer = streak_layer(image.shape[:2], p["value"] / 25600.0, p["length"], p["angle"], p["width"], rng)
    return screen(image, layer, p["opacity"])


def fractal_noise(shape: tuple[int, int], base_cells: int, octaves: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of bicubic-upsampled random grids, halving amplitude per octave; float32 in [0, 1]."""
    h, w = shape
    total = np.zeros((h, w), np.float32)
    amplitude, cells = 1.0, base_cells
    for _ in range(octaves):
        grid = rng.random((cells, max(2, round(cells * w / h))), dtype=np.float32)
        total += amplitude * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amplitude, cells = amplitude / 2, cells * 2
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def frost_texture(shape: tuple[int, int], crystals: int, crystal_length: float, rng: np.random.Generator) -> np.ndarray:
    """Ice on glass: clumpy fractal haze plus many needle crystals with side branches; [0, 1]."""
    h, w = shape
    haze = fractal_noise(shape, 3, 6, rng)
    centres = rng.uniform([0, 0], [w, h], size=(crystals, 2))
    angles = rng.uniform(0, np.pi, size=crystals)
    lengths = rng.uniform(0.3, 1.0, size=crystals) * crystal_length
    direction = np.stack([np.cos(angles), np.sin(angles)], axis=1) * lengths[:, None] / 2
    segments = [np.stack([centres - direction, centres + direction], axis=1)]
    for turn in (np.pi / 3, -np.pi / 3):  # side branches at 60 degrees, as in hexagonal ice
        side = np.stack([np.cos(angles + turn), np.sin(angles + turn)], axis=1) * lengths[:, None] / 3
        segments.append(np.stack([centres, centres + side], axis=1))
    lines = np.concatenate(segments).round().astype(np.int32)
    canvas = np.zeros((h, w), np.float32)
    cv2.polylines(canvas, list(lines), False, 1.0, 1, cv2.LINE_AA)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.7)
    # Ice grows in from the pane's edges and clumps around nuclei (the haze's thick spots);
    # crystals show mostly where the ice is thick.
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rim = np.maximum(np.abs(x / max(w - 1, 1) - 0.5), np.abs(y / max(h - 1, 1) - 0.5)) * 2  # 0 centre, 1 edge
    thickness = np.clip(haze * 0.8 + rim ** 2 * 0.5, 0.0, 1.0)
    return np.clip(0.75 * thickness ** 1.6 + 0.55 * canvas * thickness, 0.0, 1.0)


_FROST_MIX = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image, frost) weights


def _sample_frost(rng, severity, shape):
    a, b = by_severity(_FROST_MIX, severity)
    h, w = shape
    return {"image_weight": a, "frost_weight": b, "crystals": round(h * w / 60),
            "crystal_length": round(14 * size_scale(shape), 2), "tint": [0.86, 0.93, 1.0]}


def _apply_frost(image, p, rng):
    texture = frost_texture(image.shape[:2], p["crystals"], p["crystal_length"], rng)
    frost = texture[..., None] * (np.asarray(p["tint"], np.float32) * 255.0)
    return to_uint8(p["image_weight"] * image.astype(np.float32) + p["frost_weight"] * frost)


OPS = (
    DegradationOp("Rain", _sample_rain, _apply_rain, "rain streaks, drop density value/25600", stochastic=True),
    DegradationOp("Frost", _sample_frost, _apply_frost, "procedural frost texture blended over the image",
                  default_severity=4, stochastic=True),
)
