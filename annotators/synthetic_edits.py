"""Synthetic global and local edit families: open-domain-style edit pairs with known labels.

Each family is a parameter sampler, a pure apply function and a few instruction
phrasings filled from the parameters, so a mining benchmark gets ground-truth task
labels (the family) and instruction texts for free. `apply_edit` is the entry point; it is
deterministic in (image, family, seed, overrides). Node types `edit_<family>` are
registered in the group "synthetic_edit", and one annotator `edit_<family>` per family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import cv2
import numpy as np
from pydantic import Field, model_validator

from annotators.base import Annotator, NodeOutput, Resources, seed_for
from annotators.quality import GateParams, gate_view, no_op_quality
from annotators.registry import register
from core.node_types import register_node_type

Params = dict[str, Any]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (40, 170, 60), "blue": (30, 70, 220), "yellow": (245, 215, 40),
    "orange": (245, 130, 20), "purple": (130, 50, 170), "pink": (240, 110, 170), "cyan": (40, 200, 220),
    "white": (250, 250, 250), "black": (15, 15, 15),
}
DUOTONE_SHADOWS = ("navy", "maroon", "forest green", "deep purple", "charcoal")
DUOTONE_HIGHLIGHTS = ("orange", "pink", "yellow", "cyan", "cream")
_DUOTONE_RGB = {"navy": (20, 30, 90), "maroon": (100, 20, 40), "forest green": (20, 70, 40),
                "deep purple": (60, 20, 90), "charcoal": (40, 40, 45), "orange": (255, 160, 60),
                "pink": (255, 150, 200), "yellow": (255, 230, 90), "cyan": (120, 235, 245), "cream": (250, 240, 210)}
POSITIONS = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75),
             "bottom right": (0.75, 0.75), "centre": (0.5, 0.5)}


@dataclass(frozen=True)
class EditFamily:
    """`key` names the word of `words(params)` every phrasing states (tests check it is there)."""

    name: str
    kind: str  # stylisation | colour | geometric | local
    sample: Callable[[np.random.Generator, tuple[int, int]], Params]
    apply: Callable[[np.ndarray, Params], np.ndarray]
    phrasings: tuple[str, ...]
    words: Callable[[Params], dict[str, str]]
    key: str
    description: str
    # The params that change what the edit does (flip axis, hue bucket, shape colour and place), as
    # {name: value}: two edits with equal `transform_key` are one transformation; magnitudes that only
    # change how strongly it shows (a sepia strength, a rotation's degrees) are left out.
    meaning: Callable[[Params], dict[str, str]] = lambda p: {}


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def strength_word(value: float, cuts: tuple[float, float]) -> str:
    return "subtle" if value < cuts[0] else "moderate" if value < cuts[1] else "strong"


# ---------------------------------------------------------------- stylisation

def _stylize_sample(rng, shape):
    return {"sigma_s": int(rng.integers(30, 121)), "sigma_r": round(float(rng.uniform(0.3, 0.6)), 3)}


def _stylize_apply(image, p):
    return cv2.stylization(image, sigma_s=p["sigma_s"], sigma_r=p["sigma_r"])


def _pencil_sample(rng, shape):
    return {"colour": bool(rng.random() < 0.4), "sigma_s": int(rng.integers(40, 90)),
            "sigma_r": round(float(rng.uniform(0.05, 0.1)), 3),
            "shade": round(float(rng.uniform(0.07, 0.1)), 3)}  # a lower shade factor darkens the paper


def _pencil_apply(image, p):
    grey, colour = cv2.pencilSketch(image, sigma_s=p["sigma_s"], sigma_r=p["sigma_r"], shade_factor=p["shade"])
    return colour if p["colour"] else np.repeat(grey[..., None], 3, axis=2)


def _cartoon_sample(rng, shape):
    return {"levels": int(rng.integers(3, 7)), "smoothing": int(rng.integers(2, 5)),
            "line_block": int(rng.choice([7, 9, 11]))}


def _cartoon_apply(image, p):
    smooth = image
    for _ in range(p["smoothing"]):  # repeated small bilateral filters flatten regions, keep edges
        smooth = cv2.bilateralFilter(smooth, 7, 40, 7)
    step = 256.0 / p["levels"]
    lut = np.clip(np.floor(np.arange(256) / step) * step + step / 2, 0, 255).astype(np.uint8)
    flat = cv2.LUT(smooth, lut)
    grey = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 5)
    lines = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, p["line_block"], 5)
    return np.where(lines[..., None] == 0, 0, flat).astype(np.uint8)


# ---------------------------------------------------------------- colour grading

def _hue_sample(rng, shape):
    return {"degrees": int(rng.choice([60, 90, 120, 150, 180, 210, 240, 270, 300]))}


def _hue_apply(image, p):
    hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + p["degrees"], 360.0)
    return to_uint8(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0)


def _curves_sample(rng, shape):
    return {"style": str(rng.choice(["s_curve", "fade"])), "amount": int(rng.choice([30, 50, 70, 90]))}


def tone_curve(style: str, amount: float) -> np.ndarray:
    """256-entry LUT. s_curve blends towards a smoothstep; fade lifts blacks and dims whites."""
    x = np.arange(256) / 255.0
    if style == "s_curve":
        y = (1 - amount) * x + amount * (x * x * (3 - 2 * x))
    elif style == "fade":
        y = 0.25 * amount + x * (1 - 0.35 * amount)
    else:
        raise ValueError(f"curves style must be 's_curve' or 'fade', got {style!r}")
    return to_uint8(y * 255.0)


def _curves_apply(image, p):
    return cv2.LUT(image, tone_curve(p["style"], p["amount"] / 100.0))


_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


def _sepia_sample(rng, shape):
    return {"strength": int(rng.choice([50, 60, 70, 80, 90, 100]))}


def _sepia_apply(image, p):
    x = image.astype(np.float32)
    toned = cv2.transform(x, _SEPIA)
    a = p["strength"] / 100.0
    return to_uint8((1 - a) * x + a * toned)


def _duotone_sample(rng, shape):
    return {"shadow": str(rng.choice(DUOTONE_SHADOWS)), "highlight": str(rng.choice(DUOTONE_HIGHLIGHTS))}


def _duotone_apply(image, p):
    t = luma(image)[..., None]
    dark, light = (np.asarray(_DUOTONE_RGB[p[k]], np.float32) for k in ("shadow", "highlight"))
    return to_uint8(dark + t * (light - dark))


def _temperature_sample(rng, shape):
    return {"direction": str(rng.choice(["warmer", "cooler"])), "amount": int(rng.choice([10, 20, 30, 40]))}


def _temperature_apply(image, p):
    a = p["amount"] / 100.0 * (1 if p["direction"] == "warmer" else -1)
    gains = np.array([1 + a, 1 + 0.2 * a, 1 - a], np.float32)  # R up / B down for warm
    return to_uint8(image.astype(np.float32) * gains)


# ---------------------------------------------------------------- geometric

def _flip_sample(rng, shape):
    return {"axis": str(rng.choice(["horizontal", "vertical"]))}


def _flip_apply(image, p):
    return np.ascontiguousarray(image[:, ::-1] if p["axis"] == "horizontal" else image[::-1])


def _zoom_sample(rng, shape):
    return {"zoom": float(rng.choice([1.25, 1.5, 2.0])), "anchor": str(rng.choice(list(POSITIONS)))}


def zoom_window(shape: tuple[int, int], zoom: float, anchor: str) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the crop that `zoom` towards `anchor` keeps, inside the image."""
    h, w = shape
    cw, ch = round(w / zoom), round(h / zoom)
    fx, fy = POSITIONS[anchor]
    x = int(np.clip(round(fx * w - cw / 2), 0, w - cw))
    y = int(np.clip(round(fy * h - ch / 2), 0, h - ch))
    return x, y, cw, ch


def _zoom_apply(image, p):
    x, y, cw, ch = zoom_window(image.shape[:2], p["zoom"], p["anchor"])
    return cv2.resize(image[y:y + ch, x:x + cw], (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)


def _rotate_sample(rng, shape):
    return {"degrees": int(rng.choice([10, 15, 20, 30])),
            "direction": str(rng.choice(["clockwise", "counterclockwise"]))}


def rotation_matrix(shape: tuple[int, int], degrees: float, direction: str) -> np.ndarray:
    """Rotation about the centre, zoomed just enough that no empty corner shows."""
    h, w = shape
    theta = np.deg2rad(degrees)
    fill = np.cos(theta) + np.sin(theta) * max(h / w, w / h)
    angle = -degrees if direction == "clockwise" else degrees  # OpenCV: positive = counter-clockwise
    return cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, fill)


def _rotate_apply(image, p):
    h, w = image.shape[:2]
    m = rotation_matrix((h, w), p["degrees"], p["direction"])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


# ---------------------------------------------------------------- local

def _vignette_sample(rng, shape):
    return {"strength": int(rng.choice([40, 55, 70, 85]))}


def vignette_mask(shape: tuple[int, int], strength: float) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((x - (w - 1) / 2) / (w / 2), (y - (h - 1) / 2) / (h / 2)) / np.sqrt(2)  # 0 centre, 1 corner
    return 1.0 - strength * np.clip((r - 0.35) / 0.65, 0, 1) ** 2


def _vignette_apply(image, p):
    return to_uint8(image.astype(np.float32) * vignette_mask(image.shape[:2], p["strength"] / 100.0)[..., None])


def _focus_sample(rng, shape):
    return {"region": str(rng.choice(list(POSITIONS))), "radius": int(rng.choice([25, 30, 35])),
            "blur_sigma": round(float(rng.uniform(4.0, 8.0)), 2)}


def focus_mask(shape: tuple[int, int], region: str, radius_percent: float) -> np.ndarray:
    """Float mask, 1 inside the kept ellipse (radius as % of each side), feathered edge."""
    h, w = shape
    fx, fy = POSITIONS[region]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot((x - fx * w) / (radius_percent / 100 * w), (y - fy * h) / (radius_percent / 100 * h))
    return np.clip((1.15 - d) / 0.15, 0, 1)


def _focus_apply(image, p):
    sigma = p["blur_sigma"] * min(image.shape[:2]) / 512
    blurred = cv2.GaussianBlur(image, (0, 0), max(sigma, 1.0)).astype(np.float32)
    keep = focus_mask(image.shape[:2], p["region"], p["radius"])[..., None]
    return to_uint8(keep * image + (1 - keep) * blurred)


def _shape_sample(rng, shape):
    return {"shape": str(rng.choice(["circle", "square", "triangle", "star"])),
            "colour": str(rng.choice(list(COLOURS))), "position": str(rng.choice(list(POSITIONS))),
            "size": int(rng.choice([15, 20, 25]))}


def shape_polygon(kind: str, cx: float, cy: float, r: float) -> np.ndarray:
    if kind == "square":
        count, radii, phase = 4, np.full(4, r * 1.2), np.pi / 4
    elif kind == "triangle":
        count, radii, phase = 3, np.full(3, r * 1.2), -np.pi / 2
    else:  # star
        count, radii, phase = 10, np.where(np.arange(10) % 2, r * 0.45, r * 1.1), -np.pi / 2
    angles = phase + np.arange(count) * 2 * np.pi / count
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).round().astype(np.int32)


def _shape_apply(image, p):
    h, w = image.shape[:2]
    fx, fy = POSITIONS[p["position"]]
    cx, cy, r = fx * w, fy * h, p["size"] / 200 * min(h, w)  # size = diameter as % of the short side
    out = image.copy()
    colour = tuple(int(c) for c in COLOURS[p["colour"]])
    if p["shape"] == "circle":
        cv2.circle(out, (round(cx), round(cy)), round(r), colour, -1, cv2.LINE_AA)
    else:
        cv2.fillPoly(out, [shape_polygon(p["shape"], cx, cy, r)], colour, cv2.LINE_AA)
    return out


# ---------------------------------------------------------------- the families

def _m(*names: str) -> Callable[[Params], dict[str, str]]:
    """The meaning of an edit: these params, as strings."""
    return lambda p: {n: str(p[n]).lower() for n in names}


def hue_bucket(degrees: int) -> int:
    """The nearest multiple of 60 (halves up: 90 -> 120, 150 -> 180): shifts 30 degrees apart look
    alike, and opposite turns (60 and 300) never share a bucket."""
    return int((int(degrees) + 30) // 60) * 60


def transform_key(family: str, params: Params) -> str:
    """`edit_<family>` plus the params that change its meaning: the label quadruplets pair by."""
    meaning = EDIT_FAMILIES[family].meaning(params)
    return f"edit_{family}" + "".join(f"/{k}={v}" for k, v in sorted(meaning.items()))


def _w(**fixed: Callable[[Params], str]) -> Callable[[Params], dict[str, str]]:
    return lambda p: {k: f(p) for k, f in fixed.items()}


EDIT_FAMILIES: dict[str, EditFamily] = {f.name: f for f in (
    EditFamily("stylize", "stylisation", _stylize_sample, _stylize_apply,
               ("Turn the photo into a {strength} painterly illustration.",
                "Make this look like a watercolour painting, {strength} effect.",
                "Apply a {strength} artistic stylisation to the picture.",
                "Render the image as a {strength} painted artwork."),
               _w(strength=lambda p: strength_word(p["sigma_s"], (60, 90))), "strength",
               "cv2.stylization (edge-preserving painterly filter)"),
    EditFamily("pencil_sketch", "stylisation", _pencil_sample, _pencil_apply,
               ("Convert the photo into a {kind}.", "Make it look like a {kind} drawn by hand.",
                "Redraw this picture as a {kind}."),
               _w(kind=lambda p: "coloured pencil sketch" if p["colour"] else "black and white pencil sketch"),
               "kind", "cv2.pencilSketch (grey or colour)", _m("colour")),
    EditFamily("cartoon", "stylisation", _cartoon_sample, _cartoon_apply,
               ("Cartoonise the image with {levels} tone levels per colour.",
                "Make it look like a cartoon with flat colours ({levels} levels) and dark outlines.",
                "Turn this into a comic-style drawing using {levels} colour levels."),
               _w(levels=lambda p: str(p["levels"])), "levels",
               "bilateral flattening + colour levels + adaptive-threshold outlines"),
    EditFamily("hue_rotate", "colour", _hue_sample, _hue_apply,
               ("Rotate the hue by {degrees} degrees.", "Shift every colour {degrees} degrees around the colour wheel.",
                "Change the colours by turning the hue {degrees} degrees."),
               _w(degrees=lambda p: str(p["degrees"])), "degrees", "HSV hue rotation",
               lambda p: {"degrees": str(hue_bucket(p["degrees"]))}),
    EditFamily("curves", "colour", _curves_sample, _curves_apply,
               ("Apply a {look} tone curve at {amount}% strength.", "Give the photo a {look} look ({amount}%).",
                "Adjust the curves for a {look} result, {amount} percent."),
               _w(look=lambda p: "punchy S-curve" if p["style"] == "s_curve" else "faded matte",
                  amount=lambda p: str(p["amount"])), "amount", "tone curve: S-curve contrast or faded blacks",
               _m("style")),
    EditFamily("sepia", "colour", _sepia_sample, _sepia_apply,
               ("Add a sepia tone at {strength}% strength.", "Make it look like an old sepia photograph ({strength}%).",
                "Apply a {strength} percent sepia filter."),
               _w(strength=lambda p: str(p["strength"])), "strength", "sepia matrix blended with the original"),
    EditFamily("duotone", "colour", _duotone_sample, _duotone_apply,
               ("Make it a {shadow} and {highlight} duotone.",
                "Recolour the image as a duotone from {shadow} shadows to {highlight} highlights.",
                "Apply a two-colour {shadow}/{highlight} gradient map."),
               _w(shadow=lambda p: p["shadow"], highlight=lambda p: p["highlight"]), "shadow",
               "luma mapped onto a two-colour gradient", _m("shadow", "highlight")),
    EditFamily("temperature", "colour", _temperature_sample, _temperature_apply,
               ("Make the colours {direction} by {amount}%.", "Shift the white balance {amount} percent {direction}.",
                "Give the photo a {direction} colour temperature ({amount}%)."),
               _w(direction=lambda p: p["direction"], amount=lambda p: str(p["amount"])), "direction",
               "white-balance gains: red up and blue down (warmer) or the reverse", _m("direction")),
    EditFamily("flip", "geometric", _flip_sample, _flip_apply,
               ("Flip the image {axis}ly.", "Mirror the picture {axis}ly.", "Make a {axis} flip of the photo."),
               _w(axis=lambda p: p["axis"]), "axis", "horizontal or vertical mirror", _m("axis")),
    EditFamily("zoom_crop", "geometric", _zoom_sample, _zoom_apply,
               ("Zoom in {zoom}x on the {anchor}.", "Crop to the {anchor} with a {zoom}x zoom.",
                "Magnify the {anchor} of the picture {zoom} times."),
               _w(zoom=lambda p: f"{p['zoom']:g}", anchor=lambda p: p["anchor"]), "zoom", "crop and upscale",
               _m("anchor")),
    EditFamily("rotate", "geometric", _rotate_sample, _rotate_apply,
               ("Rotate the picture {degrees} degrees {direction}.", "Tilt the photo {direction} by {degrees} degrees.",
                "Turn the image {degrees} degrees {direction}, cropping the corners."),
               _w(degrees=lambda p: str(p["degrees"]), direction=lambda p: p["direction"]), "degrees",
               "small rotation zoomed to fill the frame", _m("direction")),
    EditFamily("vignette", "local", _vignette_sample, _vignette_apply,
               ("Add a dark vignette at {strength}% strength.",
                "Darken the corners with a {strength} percent vignette.",
                "Apply a vignette effect ({strength}%) around the edges."),
               _w(strength=lambda p: str(p["strength"])), "strength", "radial darkening towards the corners"),
    EditFamily("blur_background", "local", _focus_sample, _focus_apply,
               ("Blur everything except the {region} of the image.",
                "Keep the {region} sharp and blur the rest.", "Add a shallow depth of field focused on the {region}."),
               _w(region=lambda p: p["region"]), "region", "Gaussian blur outside a kept ellipse", _m("region")),
    EditFamily("add_shape", "local", _shape_sample, _shape_apply,
               ("Add a {colour} {shape} in the {position}.",
                "Draw a {colour} {shape} at the {position} of the picture.",
                "Put a solid {colour} {shape} in the {position} of the image."),
               _w(colour=lambda p: p["colour"], shape=lambda p: p["shape"], position=lambda p: p["position"]),
               "colour", "a filled shape drawn at a named position",
               _m("shape", "colour", "position")),
)}


def apply_edit(family: str, image: np.ndarray, *, seed: int, **overrides: Any) -> tuple[np.ndarray, str, dict]:
    """Apply one edit family; returns (H x W x 3 uint8, instruction text, params used).

    Overrides replace sampled parameters by name. The phrasing is drawn from its own
    stream, so overriding a parameter changes the wording only where it names the value.
    """
    try:
        fam = EDIT_FAMILIES[family]
    except KeyError:
        raise KeyError(f"unknown edit family {family!r}; known: {', '.join(EDIT_FAMILIES)}") from None
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"apply_edit expects an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    param_rng, text_rng = (np.random.default_rng([seed % 2**64, stream]) for stream in (0, 1))
    params = fam.sample(param_rng, image.shape[:2])
    unknown = set(overrides) - set(params)
    if unknown:
        raise ValueError(f"edit {family} has no parameter(s) {sorted(unknown)}; it takes {sorted(params)}")
    params.update(overrides)
    out = fam.apply(np.ascontiguousarray(image), params)
    instruction = fam.phrasings[int(text_rng.integers(len(fam.phrasings)))].format(**fam.words(params))
    return out, instruction, params


# ---------------------------------------------------------------- node types and annotators

for _family in EDIT_FAMILIES.values():
    register_node_type(f"edit_{_family.name}", "synthetic_edit",
                       f"synthetic {_family.kind} edit: {_family.description}")


class EditParams(GateParams):
    """overrides: fixed edit parameters by name; seed: None = seed_for(image_id, node_type).

    no_op_min_changed / no_op_delta: the edit is a no-op (quality `no_op`: never sampled, never
    mined) when fewer than `no_op_min_changed` of its pixels differ from the source by more than
    `no_op_delta` (8-bit units; annotators/quality.py), inside `gate_region` (default the centre
    square the exporter keeps). Defaults 0.1 % and 4: a hue rotation of a grey photo changes 0 %,
    the smallest real edit here (add_shape) about 1 %.
    """

    family: ClassVar[str] = ""
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(None, ge=0)
    no_op_min_changed: float = Field(0.001, ge=0.0, le=1.0)
    no_op_delta: float = Field(4.0, ge=0.0, le=255.0)

    @model_validator(mode="after")
    def _check_overrides(self):
        known = EDIT_FAMILIES[self.family].sample(np.random.default_rng(0), (64, 64))
        unknown = set(self.overrides) - set(known)
        if unknown:
            raise ValueError(f"edit {self.family} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}")
        return self


class EditAnnotator(Annotator):
    """Base of the generated `edit_<family>` annotators."""

    family: ClassVar[str]
    version = "2"  # 2: meta.transform_key
    resources = Resources(batch_size=16, concurrency=2, num_cpus=1.0)

    def annotate(self, inputs, image_ids):
        node = f"edit_{self.family}"
        out = []
        for item, image_id in zip(inputs, image_ids):
            seed = self.params.seed if self.params.seed is not None else seed_for(image_id, node)
            array, instruction, params = apply_edit(self.family, item["image"], seed=seed, **self.params.overrides)
            p = self.params
            quality = no_op_quality(gate_view(item["image"], p.gate_region), gate_view(array, p.gate_region),
                                    p.no_op_min_changed, p.no_op_delta)
            meta = {"family": self.family, "instruction": instruction, "params": params,
                    "transform_key": transform_key(self.family, params)}
            out.append({node: NodeOutput(array, meta, quality)})
        return out


def _make(family: EditFamily) -> type[EditAnnotator]:
    name = "Edit_" + family.name
    params = type(name + "Params", (EditParams,), {"family": family.name, "__module__": __name__,
                                                    "__qualname__": name + "Params"})
    cls = type(name, (EditAnnotator,), {
        "name": f"edit_{family.name}", "produces": (f"edit_{family.name}",), "family": family.name,
        "Params": params, "__module__": __name__, "__qualname__": name,
        "__doc__": f"Synthetic edit `{family.name}`: {family.description}.",
    })
    globals()[name], globals()[name + "Params"] = cls, params
    return register(cls)


EDIT_ANNOTATORS: dict[str, type[EditAnnotator]] = {name: _make(f) for name, f in EDIT_FAMILIES.items()}
