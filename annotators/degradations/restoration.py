"""VIRAL restoration sources: `watermark` (procedural logo + text), `rain_streaks`, `low_light`."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, pick, size_scale, sub_range, to_uint8
from annotators.degradations.weather import lighten, streak_layer

# ---------------------------------------------------------------- watermark

_SYLLABLES = ("pix", "lum", "nova", "stock", "foto", "arc", "vis", "kel", "zen", "mir", "ora", "tek", "lux", "dri")
_SUFFIXES = ("images", "photo", "studio", "media", "stock", "pictures", "creative", "")
_LOGOS = ("circle", "ring", "square", "triangle", "star", "hexagon", "none")
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN)


def brand_text(rng: np.random.Generator) -> str:
    name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
    suffix = str(rng.choice(_SUFFIXES))
    text = f"{name} {suffix}".strip()
    return text.upper() if rng.random() < 0.5 else text.capitalize()


def polygon(centre: float, radius: float, sides: int, star: bool = False, phase: float = -np.pi / 2) -> np.ndarray:
    count = sides * 2 if star else sides
    angles = phase + np.arange(count) * 2 * np.pi / count
    radii = np.where(np.arange(count) % 2 == 1, radius * 0.45, radius) if star else np.full(count, radius)
    return np.stack([centre + radii * np.cos(angles), centre + radii * np.sin(angles)], 1).round().astype(np.int32)


def draw_logo(canvas: np.ndarray, logo: str, side: int) -> None:
    """Draw a filled (or ring) logo in the side x side square at the canvas's left, value 1."""
    c, r = (side - 1) / 2.0, side * 0.45
    if logo == "circle":
        cv2.circle(canvas, (round(c), round(c)), round(r), 1.0, -1, cv2.LINE_AA)
    elif logo == "ring":
        cv2.circle(canvas, (round(c), round(c)), round(r * 0.85), 1.0, max(2, side // 8), cv2.LINE_AA)
    elif logo == "square":
        lo, hi = round(c - r * 0.8), round(c + r * 0.8)
        cv2.rectangle(canvas, (lo, lo), (hi, hi), 1.0, -1)
    elif logo in ("triangle", "star", "hexagon"):
        points = {"triangle": polygon(c, r, 3), "star": polygon(c, r, 5, star=True), "hexagon": polygon(c, r, 6)}[logo]
        cv2.fillPoly(canvas, [points], 1.0, cv2.LINE_AA)


def watermark_stamp(text: str, logo: str, font: int, width: int) -> np.ndarray:
    """Float32 alpha stamp of the logo then the text, about `width` px wide."""
    (tw, th), base = cv2.getTextSize(text, font, 1.0, 2)
    logo_side_units = (th + base) * 1.6 if logo != "none" else 0.0
    font_scale = width / max(tw + logo_side_units * 1.15, 1.0)
    thickness = max(1, round(font_scale * 2))
    (tw, th), base = cv2.getTextSize(text, font, font_scale, thickness)
    side = round(logo_side_units * font_scale)
    gap = round(side * 0.15)
    h = max(side, th + base) + 2 * thickness + 2
    stamp = np.zeros((h, side + gap + tw + 2 * thickness + 2), np.float32)
    if side:
        logo_canvas = np.zeros((side, side), np.float32)
        draw_logo(logo_canvas, logo, side)
        top = (h - side) // 2
        stamp[top:top + side, :side] = logo_canvas
    baseline_y = (h + th) // 2
    cv2.putText(stamp, text, (side + gap, baseline_y), font, font_scale, 1.0, thickness, cv2.LINE_AA)
    return stamp


def rotate_stamp(stamp: np.ndarray, angle: float) -> np.ndarray:
    h, w = stamp.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(np.ceil(h * sin + w * cos)), int(np.ceil(h * cos + w * sin))
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(stamp, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=0)


def _sample_watermark(rng, severity, shape):
    colour_kind = rng.choice(["white", "white", "black", "colour"])
    colour = {"white": [255, 255, 255], "black": [0, 0, 0]}.get(str(colour_kind)) or \
        [int(v) for v in rng.integers(0, 256, size=3)]
    return {
        "text": brand_text(rng),
        "logo": str(rng.choice(_LOGOS)),
        "font": int(rng.choice(_FONTS)),
        "colour": colour,
        "opacity": pick(rng, 0.3, 0.8, 3),
        "scale": pick(rng, 0.2, 0.6, 3),  # stamp width / image width
        "angle": pick(rng, -30.0, 30.0, 2) if rng.random() < 0.4 else 0.0,
        "x": pick(rng, 0.0, 1.0, 3),  # position within the free room, as fractions
        "y": pick(rng, 0.0, 1.0, 3),
        "tiled": bool(rng.random() < 0.25),
    }


def _apply_watermark(image, p, rng):
    h, w = image.shape[:2]
    width = max(8, round(p["scale"] * w * (0.5 if p["tiled"] else 1.0)))
    stamp = watermark_stamp(p["text"], p["logo"], p["font"], width)
    if p["angle"]:
        stamp = rotate_stamp(stamp, p["angle"])
    sh, sw = min(stamp.shape[0], h), min(stamp.shape[1], w)
    stamp = stamp[:sh, :sw]
    alpha = np.zeros((h, w), np.float32)
    if p["tiled"]:
        # A regular grid of stamps, offset row by row, like stock-photo previews.
        step_y, step_x = sh * 2, sw + sw // 2
        oy, ox = round(p["y"] * step_y), round(p["x"] * step_x)
        for row, y0 in enumerate(range(oy - step_y, h, step_y)):
            for x0 in range(ox - step_x + (row % 2) * (step_x // 2), w, step_x):
                top, bottom, left, right = max(y0, 0), min(y0 + sh, h), max(x0, 0), min(x0 + sw, w)
                if bottom <= top or right <= left:
                    continue  # this tile falls outside the image
                crop = stamp[top - y0:bottom - y0, left - x0:right - x0]
                alpha[top:bottom, left:right] = np.maximum(alpha[top:bottom, left:right], crop)
    else:
        y0, x0 = round(p["y"] * (h - sh)), round(p["x"] * (w - sw))
        alpha[y0:y0 + sh, x0:x0 + sw] = stamp
    a = (alpha * p["opacity"])[..., None]
    out = to_uint8(image.astype(np.float32) * (1 - a) + np.asarray(p["colour"], np.float32) * a)
    ys, xs = np.nonzero(alpha > 0)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
    return out, {"bbox": bbox}


# ---------------------------------------------------------------- rain streaks

def _sample_rain_streaks(rng, severity, shape):
    scale = size_scale(shape)
    angle = pick(rng, 65.0, 115.0, 2)
    density = by_severity((0.002, 0.004, 0.007, 0.011, 0.016), severity)
    layers = []
    for depth in range(int(rng.integers(2, 4))):  # far layers: denser, shorter, fainter
        near = depth / 2.0
        layers.append({
            "density": round(density * (1.5 - 0.5 * near) * float(rng.uniform(0.7, 1.3)), 5),
            "length": max(3, round((12 + 30 * near) * scale * float(rng.uniform(0.8, 1.25)))),
            "angle": round(angle + float(rng.uniform(-4, 4)), 2),
            "width": round(max(1.0, (1.0 + 1.5 * near) * scale), 3),
            "opacity": round((0.35 + 0.35 * near) * float(rng.uniform(0.85, 1.15)), 3),
        })
    return {"layers": layers, "veil": pick(rng, *sub_range(0.0, 0.25, severity), 3)}


def _apply_rain_streaks(image, p, rng):
    out = lighten(image.astype(np.float32), np.ones(image.shape[:2], np.float32), p["veil"], (200.0, 205.0, 215.0))
    for layer in p["layers"]:
        mask = streak_layer(image.shape[:2], layer["density"], layer["length"], layer["angle"], layer["width"], rng)
        out = lighten(out, mask, layer["opacity"], colour=(235.0, 238.0, 245.0))
    return to_uint8(out)


# ---------------------------------------------------------------- low light

def _sample_low_light(rng, severity, shape):
    return {
        "exposure": pick(rng, *sub_range(0.04, 0.3, 6 - severity)),  # linear-light gain
        "gamma": 2.2,
        "photons": pick(rng, *sub_range(100.0, 1000.0, 6 - severity), 1),  # expected count at full white
        "read_noise": pick(rng, 0.001, 0.004, 5),  # linear-light std
    }


def _apply_low_light(image, p, rng):
    # A short exposure: scale linear light, then shot (Poisson) and read (Gaussian) noise.
    linear = np.power(image.astype(np.float32) / 255.0, p["gamma"]) * p["exposure"]
    noisy = rng.poisson(linear * p["photons"]).astype(np.float32) / p["photons"]
    noisy += rng.standard_normal(noisy.shape, dtype=np.float32) * p["read_noise"]
    return to_uint8(np.power(np.clip(noisy, 0.0, 1.0), 1.0 / p["gamma"]) * 255.0)


OPS = (
    DegradationOp("watermark", _sample_watermark, _apply_watermark, "procedural logo+text watermark",
                  severities=None, derived=("bbox",)),
    DegradationOp("rain_streaks", _sample_rain_streaks, _apply_rain_streaks, "layered rain streaks over a veil",
                  stochastic=True),
    DegradationOp("low_light", _sample_low_light, _apply_low_light, "short exposure with shot and read noise",
                  stochastic=True),
)
