"""Synthetic edit families: contract, determinism, instruction texts, and what each edit does."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import annotators  # noqa: E402,F401

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from skimage import data  # noqa: E402

from annotators.base import seed_for  # noqa: E402
from annotators.degradations.online import render_node  # noqa: E402
from annotators.registry import get  # noqa: E402
from annotators.synthetic_edits import (COLOURS, EDIT_ANNOTATORS, EDIT_FAMILIES, POSITIONS,  # noqa: E402
                                        apply_edit, rotation_matrix, zoom_window)
from core.node_types import get_node_type, names_in_group  # noqa: E402


def _photo(name: str, height: int, width: int) -> np.ndarray:
    image = cv2.resize(getattr(data, name)(), (width, height), interpolation=cv2.INTER_AREA)
    image.setflags(write=False)  # inputs from Arrow / the object store are read-only; edits must copy
    return image


CHELSEA = _photo("chelsea", 192, 288)
ASTRONAUT = _photo("astronaut", 256, 256)
FAMILIES = sorted(EDIT_FAMILIES)


def hsv(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def laplacian_var(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_node_types_are_registered():
    assert sorted(names_in_group("synthetic_edit")) == sorted(f"edit_{f}" for f in EDIT_FAMILIES)
    assert len(EDIT_FAMILIES) >= 12
    assert {f.kind for f in EDIT_FAMILIES.values()} == {"stylisation", "colour", "geometric", "local"}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_contract(family):
    for image in (CHELSEA, ASTRONAUT):
        out, instruction, params = apply_edit(family, image, seed=3)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert not np.array_equal(out, image)
        again = apply_edit(family, image, seed=3)
        assert np.array_equal(out, again[0]) and instruction == again[1] and params == again[2]
        assert np.array_equal(out, apply_edit(family, image, seed=3, **params)[0])  # params replay
        assert json.loads(json.dumps(params)) == params
    fam = EDIT_FAMILIES[family]
    texts, draws = set(), set()
    for seed in range(24):
        image = CHELSEA if family in ("stylize", "cartoon") else ASTRONAUT[:64, :64]  # small where it is cheap
        _, instruction, params = apply_edit(family, image, seed=seed)
        assert fam.words(params)[fam.key] in instruction, (instruction, params)
        texts.add(instruction)
        draws.add(repr(params))
    assert len(texts) >= 3 and len(draws) >= 2  # several phrasings, several parameter values
    with pytest.raises(ValueError, match="no parameter"):
        apply_edit(family, ASTRONAUT, seed=0, not_a_param=1)


def test_instruction_states_every_parameter_where_it_can():
    _, text, p = apply_edit("add_shape", ASTRONAUT, seed=1, shape="star", colour="green", position="top right")
    assert "green" in text and "star" in text and "top right" in text
    _, text, _ = apply_edit("hue_rotate", ASTRONAUT, seed=1, degrees=150)
    assert "150" in text
    _, text, _ = apply_edit("zoom_crop", ASTRONAUT, seed=1, zoom=1.5, anchor="bottom left")
    assert "1.5" in text and "bottom left" in text


def test_hue_rotation_shifts_hue_by_the_stated_degrees():
    for degrees in (90, 180, 270):
        out, _, _ = apply_edit("hue_rotate", ASTRONAUT, seed=0, degrees=degrees)
        a, b = hsv(ASTRONAUT), hsv(out)
        vivid = (a[..., 1] > 0.4) & (a[..., 2] > 0.3)
        shift = np.deg2rad(b[..., 0][vivid] - a[..., 0][vivid])
        measured = np.rad2deg(np.angle(np.exp(1j * shift).mean())) % 360
        assert min(abs(measured - degrees), 360 - abs(measured - degrees)) < 5


def test_curves_change_contrast_as_named():
    grey = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(float)  # noqa: E731
    s_curve = apply_edit("curves", CHELSEA, seed=0, style="s_curve", amount=90)[0]
    fade = apply_edit("curves", CHELSEA, seed=0, style="fade", amount=90)[0]
    assert grey(s_curve).std() > grey(CHELSEA).std() > grey(fade).std()
    assert fade.min() > 40 and fade.max() < 230  # lifted blacks, dimmed whites


def test_sepia_is_warm_and_nearly_single_hued():
    out, _, _ = apply_edit("sepia", ASTRONAUT, seed=0, strength=100)
    r, g, b = (out[..., c].astype(float) for c in range(3))
    assert (r >= g - 1).mean() > 0.99 and (g >= b - 1).mean() > 0.99
    hues = hsv(out)[..., 0][hsv(out)[..., 1] > 0.1]
    assert hues.std() < 10 and 20 < np.median(hues) < 50


def test_duotone_lies_on_the_line_between_its_two_colours():
    out, _, p = apply_edit("duotone", ASTRONAUT, seed=0, shadow="navy", highlight="orange")
    pixels = out.reshape(-1, 3).astype(float)
    centred = pixels - pixels.mean(0)
    singular = np.linalg.svd(centred, compute_uv=False)
    assert singular[1] / singular[0] < 0.02  # rank one: every colour on one gradient
    dark, light = np.array([20, 30, 90]), np.array([255, 160, 60])
    assert np.abs(pixels[pixels[:, 0].argmin()] - dark).max() < 40
    assert np.abs(pixels[pixels[:, 0].argmax()] - light).max() < 60


def test_temperature_moves_red_blue_balance():
    balance = lambda x: float(x[..., 0].astype(float).mean() - x[..., 2].astype(float).mean())  # noqa: E731
    warm = apply_edit("temperature", CHELSEA, seed=0, direction="warmer", amount=20)[0]
    cool = apply_edit("temperature", CHELSEA, seed=0, direction="cooler", amount=20)[0]
    assert balance(warm) > balance(CHELSEA) + 10 > balance(cool) + 20


def test_flip_is_exact():
    assert np.array_equal(apply_edit("flip", CHELSEA, seed=0, axis="horizontal")[0], CHELSEA[:, ::-1])
    assert np.array_equal(apply_edit("flip", CHELSEA, seed=0, axis="vertical")[0], CHELSEA[::-1])


def test_zoom_crop_shows_the_named_region_enlarged():
    for anchor in POSITIONS:
        out, _, p = apply_edit("zoom_crop", CHELSEA, seed=0, zoom=2.0, anchor=anchor)
        x, y, w, h = zoom_window(CHELSEA.shape[:2], 2.0, anchor)
        assert (w, h) == (144, 96)
        back = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(back - CHELSEA[y:y + h, x:x + w]).mean() < 6


def test_rotate_turns_the_stated_way():
    out, _, p = apply_edit("rotate", ASTRONAUT, seed=0, degrees=20, direction="clockwise")
    h, w = ASTRONAUT.shape[:2]
    undo = cv2.invertAffineTransform(rotation_matrix((h, w), 20, "clockwise"))
    restored = cv2.warpAffine(out, undo, (w, h), flags=cv2.INTER_CUBIC)
    core = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert np.abs(restored[core].astype(float) - ASTRONAUT[core]).mean() < 8
    wrong = cv2.invertAffineTransform(rotation_matrix((h, w), 20, "counterclockwise"))
    mixed = cv2.warpAffine(out, wrong, (w, h), flags=cv2.INTER_CUBIC)
    assert np.abs(mixed[core].astype(float) - ASTRONAUT[core]).mean() > 20


def test_vignette_darkens_corners_not_centre():
    out, _, _ = apply_edit("vignette", ASTRONAUT, seed=0, strength=70)
    h, w = ASTRONAUT.shape[:2]
    centre = (slice(h // 2 - 20, h // 2 + 20), slice(w // 2 - 20, w // 2 + 20))
    assert np.array_equal(out[centre], ASTRONAUT[centre])
    corners = [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(-8, None)), (slice(-8, None), slice(0, 8)),
               (slice(-8, None), slice(-8, None))]
    ratio = sum(out[c].astype(float).sum() for c in corners) / sum(ASTRONAUT[c].astype(float).sum() for c in corners)
    assert ratio < 0.45


def test_blur_background_keeps_the_named_region_sharp():
    out, _, p = apply_edit("blur_background", ASTRONAUT, seed=0, region="top left", radius=30)
    h, w = ASTRONAUT.shape[:2]
    kept = (slice(int(0.25 * h) - 15, int(0.25 * h) + 15), slice(int(0.25 * w) - 15, int(0.25 * w) + 15))
    assert np.array_equal(out[kept], ASTRONAUT[kept])
    far = (slice(int(0.65 * h), h), slice(int(0.65 * w), w))
    assert laplacian_var(np.ascontiguousarray(out[far])) < 0.3 * laplacian_var(np.ascontiguousarray(ASTRONAUT[far]))


def test_add_shape_draws_the_named_colour_at_the_named_place():
    for position, (fx, fy) in POSITIONS.items():
        out, _, p = apply_edit("add_shape", CHELSEA, seed=2, colour="cyan", position=position)
        h, w = CHELSEA.shape[:2]
        assert (out[round(fy * h), round(fx * w)] == COLOURS["cyan"]).all()
        changed = (out != CHELSEA).any(-1)
        ys, xs = np.nonzero(changed)
        radius = p["size"] / 200 * min(h, w) * 1.25 + 2
        assert np.abs(xs - fx * w).max() <= radius and np.abs(ys - fy * h).max() <= radius


def test_stylisation_families_differ_in_simple_statistics():
    sat = lambda x: float(hsv(x)[..., 1].mean())  # noqa: E731
    sketch = apply_edit("pencil_sketch", CHELSEA, seed=0, colour=False)[0]
    cartoon = apply_edit("cartoon", CHELSEA, seed=0)[0]
    painted = apply_edit("stylize", CHELSEA, seed=0)[0]
    assert sat(sketch) < 0.02 and sketch.mean() > CHELSEA.mean()  # grey and paper-bright
    assert (cartoon.reshape(-1, 3) == 0).all(-1).mean() > 0.05  # black outlines
    flat = lambda x: float((np.abs(np.diff(x.astype(int), axis=1)) <= 2).all(-1).mean())  # noqa: E731
    assert flat(painted) > flat(CHELSEA) + 0.1  # flattened regions


def test_edit_annotators_and_online_rendering_agree():
    assert set(EDIT_ANNOTATORS) == set(EDIT_FAMILIES)
    cls = get("edit_sepia")
    assert cls.produces == ("edit_sepia",) and get_node_type("edit_sepia").group == "synthetic_edit"
    node = cls().annotate([{"image": ASTRONAUT}], ["img-9"])[0]["edit_sepia"]
    assert set(node.meta) == {"family", "instruction", "params", "transform_key"} and node.meta["family"] == "sepia"
    assert node.meta["transform_key"] == "edit_sepia"  # strength is a magnitude, not a different edit
    array, meta = render_node("edit_sepia", ASTRONAUT, "img-9")
    assert np.array_equal(array, node.array) and meta["instruction"] == node.meta["instruction"]
    assert meta["seed"] == seed_for("img-9", "edit_sepia")
    fixed = get("edit_hue_rotate")({"overrides": {"degrees": 90}}).annotate([{"image": ASTRONAUT}], ["a"])
    assert fixed[0]["edit_hue_rotate"].meta["params"] == {"degrees": 90}
    with pytest.raises(ValueError):
        get("edit_hue_rotate").Params(overrides={"angle": 3})
