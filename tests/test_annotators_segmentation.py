"""Semantic and entity segmentation through the real transformers classes with tiny random models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import annotators.segmentation as seg
from annotators import render
from annotators.base import seed_for
from core.weights import MissingWeightsError


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    # Small and not square; the maps must come back at exactly these sizes.
    return [np.ascontiguousarray(data.astronaut()[::4, ::4]), np.ascontiguousarray(data.chelsea()[::3, :401:3])]


@pytest.fixture(scope="module")
def semantic():
    a = seg.SemanticSegmentation()
    a.load_random("tiny")
    return a


@pytest.fixture(scope="module")
def entity():
    a = seg.EntitySegmentation({"threshold": 0.0, "overlap_mask_area_threshold": 0.0})
    a.load_random("tiny")
    return a


def test_semantic_map_uses_the_fixed_palette(semantic, photos):
    outs = semantic.annotate([{"image": im} for im in photos], ["a", "b"])
    palette = render.semantic_palette()
    for im, out in zip(photos, outs):
        assert set(out) == {"uniformer"}
        node = out["uniformer"]
        assert node.array.shape == im.shape and node.array.dtype == np.uint8
        classes = node.meta["classes"]
        assert classes and sum(c["fraction"] for c in classes) == pytest.approx(1.0, abs=1e-4)
        for c in classes:
            assert c["colour"] == palette[c["label_id"]].tolist()
        painted = {tuple(px) for px in node.array.reshape(-1, 3)}
        assert painted == {tuple(c["colour"]) for c in classes}


def test_semantic_batch_equals_single_and_is_deterministic(semantic, photos):
    batch = semantic.annotate([{"image": im} for im in photos], ["a", "b"])
    single = semantic.annotate([{"image": photos[1]}], ["b"])[0]
    assert np.array_equal(batch[1]["uniformer"].array, single["uniformer"].array)
    again = semantic.annotate([{"image": im} for im in photos], ["a", "b"])
    assert all(np.array_equal(x["uniformer"].array, y["uniformer"].array) for x, y in zip(batch, again))


def test_entity_seg_colours_are_distinct_seeded_and_match_meta(entity, photos):
    out = entity.annotate([{"image": im} for im in photos], ["a", "b"])
    for im, o, iid in zip(photos, out, ["a", "b"]):
        node = o["entity_seg"]
        assert node.array.shape == im.shape and node.array.dtype == np.uint8
        ents = node.meta["entities"]
        assert len(ents) >= 1
        colours = [tuple(e["colour"]) for e in ents]
        assert len(set(colours)) == len(colours)
        assert colours == render.distinct_colours(len(ents), seed=seed_for(iid, "entity_seg"))
        painted = {tuple(px) for px in node.array.reshape(-1, 3)} - {(0, 0, 0)}
        assert painted <= set(colours)
        assert sum(e["area"] for e in ents) <= im.shape[0] * im.shape[1]
    again = entity.annotate([{"image": photos[0]}], ["a"])[0]["entity_seg"]
    assert np.array_equal(again.array, out[0]["entity_seg"].array) and again.meta == out[0]["entity_seg"].meta
    # Another image id draws other colours for the same entities.
    other = entity.annotate([{"image": photos[0]}], ["zz"])[0]["entity_seg"]
    assert [e["area"] for e in other.meta["entities"]] == [e["area"] for e in again.meta["entities"]]
    assert [e["colour"] for e in other.meta["entities"]] != [e["colour"] for e in again.meta["entities"]]


def test_entity_seg_stores_the_area_weighted_score_and_gates(entity, photos):
    node = entity.annotate([{"image": photos[0]}], ["a"])[0]["entity_seg"]
    ents = node.meta["entities"]
    expected = sum(e["score"] * e["area"] for e in ents) / sum(e["area"] for e in ents)
    mean = node.meta["confidence"]["mean_score"]
    assert mean == pytest.approx(expected, abs=1e-4) and mean == round(mean, 4)
    # the fixture keeps every query (threshold 0); the node gate holds the model's own 0.5 bar
    assert node.quality == ("low_confidence" if mean < 0.5 else None)
    for bar, quality in ((mean + 1e-4, "low_confidence"), (mean, None)):
        a = seg.EntitySegmentation({**entity.params.model_dump(), "min_mean_score": bar})
        a._set(entity._model, entity._processor)
        assert a.annotate([{"image": photos[0]}], ["a"])[0]["entity_seg"].quality == quality
    assert seg.entities_confidence([]) == {"mean_score": 0.0}


def test_panoptic_entities_skips_empty_segments():
    segmap = np.array([[1, 1], [3, 0]])
    infos = [{"id": 3, "label_id": 5}, {"id": 1, "label_id": 2}, {"id": 2, "label_id": 9}]
    ents = seg.panoptic_entities(segmap, infos)
    assert [i["id"] for _, i in ents] == [1, 3]
    assert ents[0][0].sum() == 2


@pytest.mark.parametrize("cls,repo", [(seg.SemanticSegmentation, seg.SEMANTIC_DEFAULT),
                                      (seg.EntitySegmentation, seg.ENTITY_DEFAULT)])
def test_load_without_weights_names_the_repo(cls, repo, tmp_path):
    with pytest.raises(MissingWeightsError, match=repo):
        cls(models_dir=tmp_path).load()


def test_params_reject_unknown_keys():
    with pytest.raises(Exception, match="palette"):
        seg.SemanticSegmentation({"palette": "ade"})


@pytest.mark.parametrize("fixture,repo,node", [("semantic", seg.SEMANTIC_DEFAULT, "uniformer"),
                                               ("entity", seg.ENTITY_DEFAULT, "entity_seg")])
def test_load_reads_a_models_dir(fixture, repo, node, photos, tmp_path, request):
    tiny = request.getfixturevalue(fixture)
    folder = tmp_path / repo.replace("/", "--")
    tiny._model.save_pretrained(folder)
    tiny._processor.save_pretrained(folder)
    loaded = type(tiny)(tiny.params, models_dir=tmp_path)
    loaded.load()
    a = loaded.annotate([{"image": photos[1]}], ["b"])[0][node]
    b = tiny.annotate([{"image": photos[1]}], ["b"])[0][node]
    assert np.array_equal(a.array, b.array) and a.meta == b.meta


def test_render_palettes():
    colours = render.distinct_colours(40, seed=3)
    assert len(set(colours)) == 40 and (0, 0, 0) not in colours and (255, 255, 255) not in colours
    assert colours == render.distinct_colours(40, seed=3) != render.distinct_colours(40, seed=4)
    assert render.distinct_colours(5) == render.distinct_colours(5)
    palette = render.semantic_palette(256)
    assert palette.shape == (256, 3) and len({tuple(c) for c in palette}) == 256 and palette[0].any()
    labels = np.array([[0, 1], [149, 300]])
    assert render.colour_labels(labels, palette)[1, 1].tolist() == palette[300 % 256].tolist()


def test_render_masks_and_boxes():
    big = np.zeros((10, 10), bool)
    big[:, :] = True
    small = np.zeros((10, 10), bool)
    small[2:4, 2:4] = True
    canvas = render.colour_masks([small, big], [(1, 2, 3), (4, 5, 6)], 10, 10)
    assert tuple(canvas[2, 2]) == (1, 2, 3) and tuple(canvas[0, 0]) == (4, 5, 6)  # small on top
    assert render.clip_box([12, -3, 2, 20], 10, 10) == [2.0, 0.0, 10.0, 10.0]
    filled = render.filled_rectangles(10, 10, [[2, 3, 5, 6]])
    assert filled.sum() == 255 * 4 * 4 and filled[3:7, 2:6].all()
    img = np.full((20, 20, 3), 7, np.uint8)
    red = render.draw_red_box(img, [5, 5, 15, 15], thickness=1)
    assert tuple(red[5, 10]) == render.RED and tuple(red[10, 10]) == (7, 7, 7) and img[5, 10, 0] == 7
