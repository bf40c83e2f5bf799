"""Foreground/background annotators: from an open-world mask map, and mediapipe's real selfie model."""

from __future__ import annotations

import numpy as np
import pytest

import annotators.foreground as fg


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


def _mask_map(h, w):
    m = np.zeros((h, w, 3), np.uint8)
    m[10:60, 20:120] = (230, 25, 75)   # large object
    m[100:120, 200:230] = (60, 180, 75)  # small object
    return m


def test_foreground_from_mask_union(astronaut):
    h, w = astronaut.shape[:2]
    (out,) = fg.ForegroundFromMask().annotate([{"image": astronaut, "mask": _mask_map(h, w)}], ["a"])
    assert set(out) == set(fg.FOREGROUND_NODES)
    m = out["foreground_mask"].array
    assert m.shape == (h, w) and m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    assert np.count_nonzero(m) == 50 * 100 + 20 * 30
    f, b = out["foreground"].array, out["background"].array
    assert f.shape == b.shape == astronaut.shape and f.dtype == b.dtype == np.uint8
    inside = m > 0
    assert np.array_equal(f[inside], astronaut[inside]) and not f[~inside].any()
    assert np.array_equal(b[~inside], astronaut[~inside]) and not b[inside].any()
    assert np.array_equal(f + b, astronaut)  # the two halves tile the image exactly


def test_foreground_largest_object_only(astronaut):
    h, w = astronaut.shape[:2]
    a = fg.ForegroundFromMask({"select": "largest"})
    (out,) = a.annotate([{"image": astronaut, "mask": _mask_map(h, w)}], ["a"])
    m = out["foreground_mask"].array > 0
    assert m[10:60, 20:120].all() and not m[100:120, 200:230].any()
    assert out["foreground_mask"].meta["area_fraction"] == pytest.approx(5000 / (h * w), abs=1e-6)


def test_foreground_resizes_a_smaller_mask_and_handles_empty(astronaut):
    h, w = astronaut.shape[:2]
    small = np.zeros((h // 2, w // 2, 3), np.uint8)
    small[: h // 4, : w // 4] = (1, 2, 3)
    (out,) = fg.ForegroundFromMask().annotate([{"image": astronaut, "mask": small}], ["a"])
    assert out["foreground_mask"].array.shape == (h, w)
    assert (out["foreground_mask"].array > 0).mean() == pytest.approx(1 / 4, abs=0.01)  # top-left quarter
    (empty,) = fg.ForegroundFromMask({"select": "largest"}).annotate(
        [{"image": astronaut, "mask": np.zeros_like(astronaut)}], ["a"])
    assert not empty["foreground_mask"].array.any() and np.array_equal(empty["background"].array, astronaut)


def test_params_reject_unknown_keys():
    with pytest.raises(Exception, match="colour"):
        fg.ForegroundFromMask({"colour": 1})


@pytest.fixture(scope="module")
def mediapipe_annotator():
    a = fg.ForegroundMediapipe()
    a.load()
    return a


def test_mediapipe_selfie_mask_covers_the_astronaut(mediapipe_annotator, astronaut):
    (out,) = mediapipe_annotator.annotate([{"image": astronaut}], ["astro"])
    m = out["foreground_mask"].array
    assert m.shape == astronaut.shape[:2] and m.dtype == np.uint8
    person = m > 0
    # Face and chest of the astronaut are foreground; the flag strip, the sky above her head and
    # the model rocket behind her are background.
    assert person[70:140, 185:275].mean() > 0.95
    assert person[300:480, 150:350].mean() > 0.95
    assert person[:250, :20].mean() < 0.05
    assert person[:15, :].mean() < 0.05
    assert person[0:200, 390:460].mean() < 0.1
    assert 0.3 < person.mean() < 0.75
    again = mediapipe_annotator.annotate([{"image": astronaut}], ["astro"])[0]
    assert np.array_equal(again["foreground"].array, out["foreground"].array)


def test_mediapipe_output_matches_source_size(mediapipe_annotator):
    from skimage import data

    img = np.ascontiguousarray(data.chelsea()[:, :401])  # odd width, not the model's input size
    (out,) = mediapipe_annotator.annotate([{"image": img}], ["cat"])
    for node in fg.FOREGROUND_NODES:
        assert out[node].array.shape[:2] == img.shape[:2]


def test_mediapipe_holds_back_a_confident_mask_without_a_person(mediapipe_annotator):
    """The selfie model cuts the cat out as confidently as a person; BlazePose finds no person."""
    from skimage import data

    cat = data.chelsea()
    out = mediapipe_annotator.annotate([{"image": cat}], ["cat"])[0]
    assert {node: o.quality for node, o in out.items()} == dict.fromkeys(fg.FOREGROUND_NODES, "low_confidence")
    conf = out["foreground_mask"].meta["confidence"]
    assert conf["mask_mean_probability"] > 0.9 and conf["mask_confident_share"] > 0.5  # the mask alone passes
    assert conf["person_score"] == 0.0 and conf["presence_score"] == 0.0
    assert out["foreground_mask"].array.any()  # kept for the report, never sampled
    old = fg.ForegroundMediapipe({"min_person_score": 0.0, "min_presence": 0.0, "min_confident_share": 0.0})
    old.load()  # no person check (the check is not even run): what was kept before
    assert old._person is None
    before = old.annotate([{"image": cat}], ["cat"])[0]["foreground_mask"]
    assert before.quality is None and set(before.meta["confidence"]) == {"mask_mean_probability",
                                                                         "mask_confident_share"}


def test_mediapipe_keeps_the_astronaut_with_its_scores(mediapipe_annotator, astronaut):
    (out,) = mediapipe_annotator.annotate([{"image": astronaut}], ["astro"])
    assert all(o.quality is None for o in out.values())
    conf = out["foreground_mask"].meta["confidence"]
    p = fg.MediapipeForegroundParams()
    assert conf["person_score"] >= p.min_person_score and conf["presence_score"] >= p.min_presence
    assert conf["mask_confident_share"] >= p.min_confident_share and conf["mask_mean_probability"] > 0.9
    assert all(v == round(v, 4) for v in conf.values())


def test_mask_confidence_statistics():
    prob = np.array([[0.0, 0.2, 0.6], [0.95, 1.0, 0.7]], np.float32)
    assert fg.mask_confidence(prob, 0.5) == {"mask_mean_probability": pytest.approx(0.8125, abs=1e-4),
                                             "mask_confident_share": 0.5}
    assert fg.mask_confidence(np.zeros((4, 4), np.float32), 0.5) == {"mask_mean_probability": 0.0,
                                                                     "mask_confident_share": 0.0}
