"""Degradation operators, their annotators and online rendering, on real photos (skimage.data)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import annotators  # noqa: E402,F401  (installs the torchvision shim, registers built-ins)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from skimage import data  # noqa: E402

from annotators.base import seed_for  # noqa: E402
from annotators.degradations.annotators import DEGRADATION_ANNOTATORS  # noqa: E402
from annotators.degradations.operators import (DEGRADATIONS, GRAPH200K_DEGRADATIONS,  # noqa: E402
                                               RESTORATION_SOURCES, degrade)
from annotators.degradations.online import render_node  # noqa: E402
from annotators.registry import get, producers  # noqa: E402
from core.node_types import get_node_type  # noqa: E402


def _photo(name: str, height: int, width: int) -> np.ndarray:
    image = cv2.resize(getattr(data, name)(), (width, height), interpolation=cv2.INTER_AREA)
    image.setflags(write=False)  # inputs from Arrow / the object store are read-only; ops must copy
    return image


PHOTOS = {
    "astronaut": _photo("astronaut", 256, 256),
    "chelsea": _photo("chelsea", 192, 288),  # non-square catches H/W mix-ups
    "coffee": _photo("coffee", 224, 256),
}
ASTRONAUT = PHOTOS["astronaut"]
ALL_OPS = sorted(DEGRADATIONS)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def high_freq_fraction(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Share of spectral energy (mean removed) above `cutoff` of the Nyquist radius."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2
    h, w = grey.shape
    fy, fx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return float(spectrum[np.hypot(fx, fy) > cutoff].sum() / spectrum.sum())


def laplacian_var(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def mean_saturation(image: np.ndarray) -> float:
    return float(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1].mean())


def streak_direction(before: np.ndarray, after: np.ndarray) -> float:
    """Dominant line direction of the added layer, in degrees counter-clockwise (y up), mod 180."""
    diff = cv2.cvtColor(after, cv2.COLOR_RGB2GRAY).astype(np.float64) - cv2.cvtColor(before, cv2.COLOR_RGB2GRAY)
    gx, gy = cv2.Sobel(diff, cv2.CV_64F, 1, 0), cv2.Sobel(diff, cv2.CV_64F, 0, 1)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    gradient = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))  # image coords, y down
    return (-(gradient + 90.0)) % 180.0  # lines run across the gradient; flip y to go counter-clockwise


def angle_gap(a: float, b: float) -> float:
    d = abs(a - b) % 180.0
    return min(d, 180.0 - d)


# ------------------------------------------------------------------ registry and generic contract

def test_registry_covers_graph200k_and_viral_nodes():
    assert len(GRAPH200K_DEGRADATIONS) == 32
    assert set(DEGRADATIONS) == set(GRAPH200K_DEGRADATIONS) | set(RESTORATION_SOURCES)
    for node in DEGRADATIONS:
        get_node_type(node)  # every name is a registered node type
    assert DEGRADATIONS["compression"].severities == (1, 3) and DEGRADATIONS["quantization"].severities == (1, 3)


@pytest.mark.parametrize("photo", sorted(PHOTOS))
@pytest.mark.parametrize("node", ALL_OPS)
def test_operator_contract(node, photo):
    image = PHOTOS[photo]
    out, params = degrade(node, image, seed=7)
    expected = image.shape[1::-1] + (3,) if node in ("rotate90", "rotate270") else image.shape
    assert out.shape == expected and out.dtype == np.uint8
    assert not np.array_equal(out, image), "a degradation must change the image"
    again, params_again = degrade(node, image, seed=7)
    assert np.array_equal(out, again) and params == params_again
    # The recorded params replay to the same bytes.
    replay, _ = degrade(node, image, seed=7, **params)
    assert np.array_equal(out, replay)
    assert "severity" in params
    assert json.loads(json.dumps(params)) == params  # stored as JSON meta, must round-trip exactly
    op = DEGRADATIONS[node]
    if op.severities is not None:
        low, high = op.severities
        assert low <= params["severity"] <= high
    if op.stochastic:
        other, other_params = degrade(node, image, seed=8, severity=params["severity"])
        assert not np.array_equal(out, other)


def test_severity_validation_and_defaults():
    with pytest.raises(ValueError):
        degrade("compression", ASTRONAUT, seed=0, severity=4)
    with pytest.raises(ValueError):
        degrade("JPEG", ASTRONAUT, seed=0, severity=0)
    with pytest.raises(ValueError):
        degrade("SRx2", ASTRONAUT, seed=0, severity=2)
    with pytest.raises(ValueError, match="no parameter"):
        degrade("JPEG", ASTRONAUT, seed=0, qualty=10)
    with pytest.raises(KeyError):
        degrade("NotADegradation", ASTRONAUT, seed=0)
    for node in ("Elastic", "Frost"):
        assert degrade(node, ASTRONAUT, seed=3)[1]["severity"] == 4
    seen = {degrade("GaussianNoise", ASTRONAUT, seed=s)[1]["severity"] for s in range(40)}
    assert seen == {1, 2, 3, 4, 5}


def test_published_ranges_hold_for_every_seed():
    big = np.zeros((512, 512, 3), np.uint8) + 128
    for seed in range(25):
        assert 10 <= degrade("JPEG", big, seed=seed)[1]["quality"] <= 40
        assert 10 <= degrade("GaussianNoise", big, seed=seed)[1]["sigma"] <= 50
        p = degrade("GaussianBlur", big, seed=seed)[1]
        assert p["ksize"] == 15 and 2 <= p["sigma"] <= 4
        assert 0.3 <= degrade("LowLight", big, seed=seed)[1]["scale"] <= 0.4
        assert 40 <= degrade("Rain", big, seed=seed)[1]["value"] <= 200
        p = degrade("Inpainting", big, seed=seed)[1]
        assert 20 <= p["strokes"] <= 50 and p["thickness"] == [10, 20]
    assert degrade("Barrel", big, seed=0)[1] | {} == {"k1": 0.1, "k2": 0.05, "severity": None}
    assert degrade("Pincushion", big, seed=0)[1] == {"k1": -0.1, "k2": -0.05, "severity": None}


# ------------------------------------------------------------------ each operator does its job

@pytest.mark.parametrize("node,k", [("rotate90", 1), ("rotate180", 2), ("rotate270", 3)])
def test_rotations_are_exact(node, k):
    image = PHOTOS["chelsea"]
    assert np.array_equal(degrade(node, image, seed=0)[0], np.rot90(image, k))


def test_jpeg_quality_falls_with_severity():
    scores = [psnr(ASTRONAUT, degrade("JPEG", ASTRONAUT, seed=1, severity=s)[0]) for s in (1, 3, 5)]
    assert scores[0] > scores[1] > scores[2] > 20
    low_q = degrade("JPEG", ASTRONAUT, seed=1, quality=10)[0]
    high_q = degrade("JPEG", ASTRONAUT, seed=1, quality=40)[0]
    assert psnr(ASTRONAUT, low_q) < psnr(ASTRONAUT, high_q)


def test_webp_compression_falls_with_severity():
    scores = [psnr(ASTRONAUT, degrade("compression", ASTRONAUT, seed=1, severity=s)[0]) for s in (1, 2, 3)]
    assert scores[0] > scores[1] > scores[2]


def test_quantization_limits_levels():
    for severity, levels in ((1, 16), (2, 8), (3, 4)):
        out, p = degrade("quantization", ASTRONAUT, seed=0, severity=severity)
        assert p["levels"] == levels
        assert all(len(np.unique(out[..., c])) <= levels for c in range(3))


def test_super_resolution_sources_lose_high_frequencies():
    original = high_freq_fraction(ASTRONAUT)
    x2 = high_freq_fraction(degrade("SRx2", ASTRONAUT, seed=0)[0])
    x4 = high_freq_fraction(degrade("SRx4", ASTRONAUT, seed=0)[0])
    assert x4 < x2 < original
    assert x4 < 0.5 * original


@pytest.mark.parametrize("node", ["blur", "GaussianBlur", "Defocus"])
def test_blurs_remove_detail_more_with_severity(node):
    detail = [laplacian_var(degrade(node, ASTRONAUT, seed=2, severity=s)[0]) for s in (1, 5)]
    assert detail[1] < detail[0] < laplacian_var(ASTRONAUT)


def test_motion_blur_smears_along_its_angle():
    out, p = degrade("blur", ASTRONAUT, seed=0, severity=5, angle=0.0)
    grey_in, grey_out = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(float) for x in (ASTRONAUT, out))
    # A horizontal smear removes horizontal gradients much more than vertical ones.
    dx_ratio = np.abs(np.diff(grey_out, axis=1)).mean() / np.abs(np.diff(grey_in, axis=1)).mean()
    dy_ratio = np.abs(np.diff(grey_out, axis=0)).mean() / np.abs(np.diff(grey_in, axis=0)).mean()
    assert dx_ratio < 0.6 * dy_ratio


def test_oversharpen_adds_detail():
    assert laplacian_var(degrade("oversharpen", ASTRONAUT, seed=0, severity=3)[0]) > 2 * laplacian_var(ASTRONAUT)


def test_pixelate_makes_flat_blocks():
    out, p = degrade("pixelate", ASTRONAUT, seed=0, severity=5)
    same = lambda x: float((x[:, 1:] == x[:, :-1]).all(-1).mean())  # noqa: E731
    assert same(out) > 0.6 > same(ASTRONAUT)


def test_mosaic_changes_only_its_rectangles():
    out, p = degrade("mosaic", ASTRONAUT, seed=4, severity=3)
    inside = np.zeros(ASTRONAUT.shape[:2], bool)
    for x, y, w, h in p["rects"]:
        inside[y:y + h, x:x + w] = True
    assert np.array_equal(out[~inside], ASTRONAUT[~inside])
    assert (out[inside] != ASTRONAUT[inside]).any(-1).mean() > 0.5


def test_gaussian_noise_adds_the_stated_sigma():
    out, p = degrade("GaussianNoise", ASTRONAUT, seed=3, severity=2)
    mid = (ASTRONAUT > 70) & (ASTRONAUT < 185)  # away from clipping
    residual = out.astype(float)[mid] - ASTRONAUT.astype(float)[mid]
    assert abs(residual.std() / p["sigma"] - 1) < 0.1
    assert abs(residual.mean()) < 1.5


def test_poisson_noise_variance_follows_photon_count():
    out, p = degrade("PoissonNoise", ASTRONAUT, seed=3, severity=1)
    x = ASTRONAUT.astype(float)
    mid = (x > 60) & (x < 160)
    residual = out.astype(float)[mid] - x[mid]
    expected = (255.0 * x[mid] / p["peak"]).mean()  # Var[255 N / peak] with N ~ Poisson(x peak / 255)
    assert abs(residual.var() / expected - 1) < 0.15
    darker = degrade("PoissonNoise", ASTRONAUT, seed=3, severity=5)[0].astype(float)[mid] - x[mid]
    assert darker.var() > 5 * residual.var()


def test_salt_and_pepper_hits_the_stated_fraction():
    out, p = degrade("SPNoise", ASTRONAUT, seed=5, severity=4)
    salt = (out == 255).all(-1) & ~(ASTRONAUT == 255).all(-1)
    pepper = (out == 0).all(-1) & ~(ASTRONAUT == 0).all(-1)
    changed = (out != ASTRONAUT).any(-1)
    assert np.array_equal(changed, changed & (salt | pepper | (out == 255).all(-1) | (out == 0).all(-1)))
    assert abs(changed.mean() - p["amount"]) < 0.01 and abs(salt.mean() - pepper.mean()) < 0.01


@pytest.mark.parametrize("node,direction", [("contrast_strengthen", 1), ("contrast_weaken", -1)])
def test_contrast_moves_the_right_way(node, direction):
    std = lambda x: float(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).std())  # noqa: E731
    values = [std(ASTRONAUT)] + [std(degrade(node, ASTRONAUT, seed=0, severity=s)[0]) for s in (1, 5)]
    assert all(direction * (b - a) > 0 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("node,direction", [("saturate_strengthen", 1), ("saturate_weaken", -1)])
def test_saturation_moves_the_right_way(node, direction):
    values = [mean_saturation(ASTRONAUT)] + [mean_saturation(degrade(node, ASTRONAUT, seed=0, severity=s)[0])
                                             for s in (1, 5)]
    assert all(direction * (b - a) > 0 for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("node,direction", [("brighten", 1), ("darken", -1), ("LowLight", -1), ("low_light", -1)])
def test_brightness_moves_the_right_way(node, direction):
    values = [ASTRONAUT.mean()] + [degrade(node, ASTRONAUT, seed=0, severity=s)[0].mean() for s in (1, 5)]
    assert all(direction * (b - a) > 0 for a, b in zip(values, values[1:]))


def test_lowlight_scales_by_the_stated_factor():
    out, p = degrade("LowLight", ASTRONAUT, seed=9)
    assert abs(out.mean() / ASTRONAUT.mean() - p["scale"]) < 0.01


def test_viral_low_light_is_dark_and_noisy():
    out, p = degrade("low_light", ASTRONAUT, seed=9, severity=3)
    assert out.mean() < 0.75 * ASTRONAUT.mean()
    clean, _ = degrade("low_light", ASTRONAUT, seed=9, severity=3, photons=1e9, read_noise=0.0)
    assert np.abs(out.astype(float) - clean).mean() > 1.0  # shot + read noise on top of the exposure


def test_gray_matches_the_grayscale_annotator():
    out, _ = degrade("gray", PHOTOS["coffee"], seed=0)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    stored = get("grayscale")().annotate([{"image": PHOTOS["coffee"]}], ["c"])[0]["gray"].array
    assert np.array_equal(out[..., 0], stored)
    assert "degrade_gray" not in DEGRADATION_ANNOTATORS and producers()["gray"] == ["grayscale"]


def test_colour_distortion_shuffles_or_sets_a_channel():
    modes = set()
    for seed in range(12):
        out, p = degrade("ColorDistortion", ASTRONAUT, seed=seed)
        modes.add(p["mode"])
        if p["mode"] == "shuffle":
            assert p["permutation"] != [0, 1, 2] and np.array_equal(out, ASTRONAUT[..., p["permutation"]])
        else:
            assert (out[..., p["channel"]] == p["value"]).all()
            others = [c for c in range(3) if c != p["channel"]]
            assert np.array_equal(out[..., others], ASTRONAUT[..., others])
    assert modes == {"shuffle", "set"}


def test_inpainting_masks_the_stated_fraction():
    image = _photo("astronaut", 512, 512)
    fractions = []
    for severity in (1, 5):
        out, p = degrade("Inpainting", image, seed=11, severity=severity)
        changed = (out != image).any(-1)
        assert changed.mean() <= p["masked_fraction"] <= (out == 0).all(-1).mean()
        # With a fill colour absent from the photo the holes are exactly the stated fraction.
        marked, q = degrade("Inpainting", image, seed=11, severity=severity, fill=[255, 0, 255])
        holes = (marked == [255, 0, 255]).all(-1)
        assert holes.mean() == pytest.approx(p["masked_fraction"], abs=1e-6)
        assert q["masked_fraction"] == p["masked_fraction"]
        assert np.array_equal(marked[~holes], image[~holes])
        fractions.append(p["masked_fraction"])
    assert 0.02 < fractions[0] < fractions[1] < 0.8


def _marker_centroid(image: np.ndarray) -> np.ndarray:
    hit = (image[..., 1] > 200) & (image[..., 0] < 80) & (image[..., 2] < 80)
    ys, xs = np.nonzero(hit)
    return np.array([xs.mean(), ys.mean()])


def test_barrel_and_pincushion_move_corners_in_opposite_directions():
    image = ASTRONAUT.copy()
    h, w = image.shape[:2]
    cv2.circle(image, (round(0.82 * w), round(0.18 * h)), 6, (0, 255, 0), -1)  # a marker near a corner
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    r0 = np.linalg.norm(_marker_centroid(image) - centre)
    r_barrel = np.linalg.norm(_marker_centroid(degrade("Barrel", image, seed=0)[0]) - centre)
    r_pin = np.linalg.norm(_marker_centroid(degrade("Pincushion", image, seed=0)[0]) - centre)
    assert r_barrel < r0 - 3 and r_pin > r0 + 3
    barrel = degrade("Barrel", image, seed=0)[0]
    assert (barrel[0, 0] == 0).all() and (barrel[h // 2, w // 2] == image[h // 2, w // 2]).all()


def test_elastic_warps_locally_but_keeps_content():
    out, p = degrade("Elastic", ASTRONAUT, seed=2)
    assert p["severity"] == 4
    smooth = lambda x: cv2.GaussianBlur(x, (0, 0), 4)  # noqa: E731
    # Pixels move by a few px: fine detail no longer lines up, coarse content still does.
    assert psnr(ASTRONAUT, out) < 25 and psnr(smooth(ASTRONAUT), smooth(out)) > psnr(ASTRONAUT, out) + 5
    stronger, _ = degrade("Elastic", ASTRONAUT, seed=2, severity=5)
    assert psnr(ASTRONAUT, stronger) < psnr(ASTRONAUT, degrade("Elastic", ASTRONAUT, seed=2, severity=1)[0])


def test_rain_adds_bright_streaks_at_the_stated_angle_and_density():
    light, p_light = degrade("Rain", ASTRONAUT, seed=6, value=40.0, angle=75.0)
    heavy, p_heavy = degrade("Rain", ASTRONAUT, seed=6, value=200.0, angle=75.0)
    assert (light >= ASTRONAUT).all() and (heavy >= ASTRONAUT).all()  # streaks only lighten
    changed = lambda x: float((x.astype(int) - ASTRONAUT > 8).any(-1).mean())  # noqa: E731
    assert changed(heavy) > 2.5 * changed(light) > 0
    assert angle_gap(streak_direction(ASTRONAUT, heavy), 75.0) < 10


def test_viral_rain_streaks_follow_their_angle():
    out, p = degrade("rain_streaks", ASTRONAUT, seed=3, severity=4)
    assert (out >= ASTRONAUT).all()
    mean_angle = float(np.mean([layer["angle"] for layer in p["layers"]]))
    assert angle_gap(streak_direction(ASTRONAUT, out), mean_angle) < 12


def test_frost_blends_a_cold_textured_layer():
    out, p = degrade("Frost", ASTRONAUT, seed=1)
    x = ASTRONAUT.astype(float)
    assert (out.astype(float) >= p["image_weight"] * x - 1).all()  # frost is added, never subtracted
    blue_minus_red = lambda y: float(y[..., 2].astype(float).mean() - y[..., 0].astype(float).mean())  # noqa: E731
    assert blue_minus_red(out) > blue_minus_red(ASTRONAUT) + 5
    frost_layer = out.astype(float) - p["image_weight"] * x
    assert frost_layer.std() > 10  # a texture, not a flat veil
    mild, _ = degrade("Frost", ASTRONAUT, seed=1, severity=1)
    assert (mild >= ASTRONAUT).all()


def test_watermark_changes_only_its_box_and_respects_opacity():
    for seed in range(6):
        out, p = degrade("watermark", ASTRONAUT, seed=seed, tiled=False)
        x0, y0, x1, y1 = p["bbox"]
        inside = np.zeros(ASTRONAUT.shape[:2], bool)
        inside[y0:y1, x0:x1] = True
        assert np.array_equal(out[~inside], ASTRONAUT[~inside])
        delta = np.abs(out.astype(int) - ASTRONAUT)
        assert delta[inside].max() <= p["opacity"] * 255 + 1
        assert (delta[inside].max(-1) > 0).mean() > 0.02
        assert (x1 - x0) > 0.15 * ASTRONAUT.shape[1] and p["text"]
    tiled, p = degrade("watermark", ASTRONAUT, seed=0, tiled=True)
    x0, y0, x1, y1 = p["bbox"]
    assert (x1 - x0) * (y1 - y0) > 0.6 * ASTRONAUT.shape[0] * ASTRONAUT.shape[1]


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_tiled_watermarks_cover_the_image_for_any_draw(photo):
    image = PHOTOS[photo]
    for seed in range(30):
        out, p = degrade("watermark", image, seed=seed, tiled=True)
        x0, y0, x1, y1 = p["bbox"]
        assert out.shape == image.shape and (x1 - x0) > 0.7 * image.shape[1] and (y1 - y0) > 0.6 * image.shape[0]


def test_watermarks_vary_with_the_seed():
    params = [degrade("watermark", ASTRONAUT, seed=s)[1] for s in range(10)]
    assert len({p["text"] for p in params}) > 5 and len({p["logo"] for p in params}) > 2
    assert len({(p["x"], p["y"]) for p in params}) == 10


# ------------------------------------------------------------------ annotators and online rendering

def test_annotators_are_registered_and_record_params():
    assert set(DEGRADATION_ANNOTATORS) == set(DEGRADATIONS) - {"gray"}
    cls = get("degrade_JPEG")
    assert cls.produces == ("JPEG",)
    result = cls({"severity": 2}).annotate([{"image": ASTRONAUT}, {"image": PHOTOS["coffee"]}], ["a", "b"])
    node = result[0]["JPEG"]
    assert node.meta["severity"] == 2 and node.meta["params"]["quality"] >= 29
    expected, _ = degrade("JPEG", ASTRONAUT, seed=seed_for("a", "JPEG"), severity=2)
    assert np.array_equal(node.array, expected)
    assert result[1]["JPEG"].array.shape == PHOTOS["coffee"].shape


def test_generated_classes_pickle_by_reference():
    import pickle

    cls = get("degrade_Frost")
    assert pickle.loads(pickle.dumps(cls)) is cls
    annotator = pickle.loads(pickle.dumps(cls({"severity": 2})))
    assert annotator.params.severity == 2 and type(annotator.params) is cls.Params
    assert cls.params_hash(cls.Params(severity=2)) != cls.params_hash(cls.Params(severity=3))


def test_annotator_params_are_validated():
    with pytest.raises(ValueError):
        get("degrade_compression").Params(severity=5)
    with pytest.raises(ValueError):
        get("degrade_SRx4").Params(severity=1)
    with pytest.raises(ValueError, match="no parameter"):
        get("degrade_JPEG").Params(overrides={"qualty": 3})
    with pytest.raises(ValueError):
        get("degrade_JPEG").Params(colour=1)  # unknown key
    fixed = get("degrade_JPEG")({"overrides": {"quality": 12}, "seed": 5})
    out = fixed.annotate([{"image": ASTRONAUT}], ["x"])[0]["JPEG"]
    assert out.meta["params"]["quality"] == 12
    assert np.array_equal(out.array, degrade("JPEG", ASTRONAUT, seed=5, quality=12)[0])


def test_online_rendering_matches_the_annotator():
    for node in ("Inpainting", "watermark", "Frost"):
        stored = get(f"degrade_{node}")().annotate([{"image": ASTRONAUT}], ["img-1"])[0][node]
        array, meta = render_node(node, ASTRONAUT, "img-1")
        assert np.array_equal(array, stored.array)
        assert meta["params"] == stored.meta["params"] and meta["severity"] == stored.meta["severity"]
        assert meta["seed"] == seed_for("img-1", node)
    array, meta = render_node("GaussianNoise", ASTRONAUT, "img-1", {"severity": 5, "seed": 3})
    assert meta["severity"] == 5 and np.array_equal(array, degrade("GaussianNoise", ASTRONAUT, seed=3, severity=5)[0])
    with pytest.raises(KeyError):
        render_node("depth", ASTRONAUT, "img-1")
