"""Grounding annotators: answer parsing, rendering, and the real Qwen2.5-VL path with a tiny random model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import annotators.grounding as gr
from annotators.base import seed_for
from core.weights import MissingWeightsError

TINY_PIXELS = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}


# ----------------------------------------------------------------------------- parsing

def test_parse_plain_json_list():
    text = '[{"bbox_2d": [10, 20, 110, 220], "label": "Cat"}, {"bbox_2d": [0, 0, 5, 5], "label": "ball"}]'
    assert gr.parse_grounding_answer(text) == [([10.0, 20.0, 110.0, 220.0], "cat"), ([0.0, 0.0, 5.0, 5.0], "ball")]


def test_parse_fenced_answer_with_prose_and_other_keys():
    text = ('Sure! Here are the objects:\n```json\n[\n {"bbox": [1, 2, 3, 4], "name": "red  car"},\n'
            ' {"box_2d": [5, 6, 7, 8]}\n]\n```\nLet me know if you need more.')
    assert gr.parse_grounding_answer(text) == [([1.0, 2.0, 3.0, 4.0], "red car"), ([5.0, 6.0, 7.0, 8.0], "object")]


def test_parse_truncated_list_keeps_complete_objects():
    text = '```json\n[{"bbox_2d": [1, 2, 30, 40], "label": "dog"}, {"bbox_2d": [5, 6, 7'
    assert gr.parse_grounding_answer(text) == [([1.0, 2.0, 30.0, 40.0], "dog")]


def test_parse_dict_wrapper_and_garbage():
    assert gr.parse_grounding_answer('{"objects": [{"bbox_2d": [1, 1, 9, 9], "label": "a"}]}') == [
        ([1.0, 1.0, 9.0, 9.0], "a")]
    assert gr.parse_grounding_answer('{"bbox_2d": [1, 1, 9, 9], "label": "solo"}') == [([1.0, 1.0, 9.0, 9.0], "solo")]
    for junk in ["", "no objects here", "[1, 2, 3]", '[{"bbox_2d": [1, 2, 3], "label": "x"}]',
                 '[{"bbox_2d": ["a", 2, 3, 4]}]', "{{{", '[{"bbox_2d": [1, 2, 3, NaN]}]']:
        assert gr.parse_grounding_answer(junk) == []


def test_to_source_pixels_modes():
    assert gr.to_source_pixels([14, 28, 56, 112], "absolute", (224, 112), (448, 56)) == [7.0, 56.0, 28.0, 224.0]
    assert gr.to_source_pixels([0, 500, 1000, 1000], "relative_1000", (1, 1), (200, 300)) == [0.0, 100.0, 300.0, 200.0]


def test_tidy_detections_clips_dedupes_and_orders():
    raw = [([-5, -5, 50, 50], "a", 0.5), ([-5, -5, 50, 50], "a", 0.4), ([10, 10, 10.5, 40], "thin", 0.9),
           ([60, 70, 20, 30], "swapped", 0.8), ([0, 0, 500, 500], "big", 0.1)]
    boxes, labels, scores = gr.tidy_detections(raw, 100, 80, max_boxes=3)
    assert labels == ["swapped", "a", "big"]
    assert boxes == [[20.0, 30.0, 60.0, 70.0], [0.0, 0.0, 50.0, 50.0], [0.0, 0.0, 80.0, 100.0]]
    assert scores == [0.8, 0.5, 0.1]


# ----------------------------------------------------------------------------- rendering

def test_detection_nodes_render_boxes_and_one_category():
    boxes = [[10.0, 10.0, 40.0, 30.0], [50.0, 5.0, 90.0, 60.0], [0.0, 50.0, 20.0, 70.0]]
    labels = ["cat", "dog", "cat"]
    nodes = gr.detection_nodes(80, 100, boxes, labels, [1.0] * 3, "img-1", "m")
    assert set(nodes) == set(gr.GROUNDING_NODES)
    assert nodes["bbox_json"].array is None and nodes["bbox_json"].meta["boxes"] == boxes
    bbox = nodes["bbox"].array
    assert bbox.shape == (80, 100, 3) and bbox.dtype == np.uint8
    assert tuple(bbox[10, 25]) == tuple(nodes["bbox"].meta["colours"][0])  # top edge of box 0
    assert not bbox[20, 25].any()  # inside a box outline stays black
    target = nodes["detection_target"]
    expected = sorted({"cat", "dog"})[seed_for("img-1", "detection_target") % 2]
    assert target.meta["category"] == expected
    assert target.array.shape == (80, 100) and set(np.unique(target.array)) == {0, 255}
    chosen = [b for b, lab in zip(boxes, labels) if lab == expected]
    assert target.meta["boxes"] == chosen
    filled = np.zeros((80, 100), bool)
    for x0, y0, x1, y1 in chosen:
        filled[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = True
    assert np.array_equal(target.array > 0, filled)


def test_detection_nodes_without_objects_are_black():
    nodes = gr.detection_nodes(20, 30, [], [], [], "x", "m")
    assert nodes["detection_target"].meta["category"] is None
    assert not nodes["bbox"].array.any() and not nodes["detection_target"].array.any()


# ----------------------------------------------------------------------------- Qwen2.5-VL

@pytest.fixture(scope="module")
def qwen():
    a = gr.GroundingQwenVL({**TINY_PIXELS, "max_new_tokens": 12})
    a.load_random("tiny")
    return a


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [data.astronaut(), np.ascontiguousarray(data.chelsea()[:, :401])]


def test_qwen_grounding_runs_the_model_and_returns_all_nodes(qwen, photos):
    out = qwen.annotate([{"image": im} for im in photos], ["a", "b"])
    assert len(out) == 2
    for im, nodes in zip(photos, out):
        assert set(nodes) == set(gr.GROUNDING_NODES)
        meta = nodes["bbox_json"].meta
        assert isinstance(meta["answer"], str) and meta["answer"]  # the random model did generate text
        assert len(meta["boxes"]) == len(meta["labels"]) == len(meta["scores"])
        assert nodes["bbox"].array.shape == im.shape and nodes["bbox"].array.dtype == np.uint8
        assert nodes["detection_target"].array.shape == im.shape[:2]
    again = qwen.annotate([{"image": im} for im in photos], ["a", "b"])
    assert [o["bbox_json"].meta for o in again] == [o["bbox_json"].meta for o in out]


def test_qwen_answer_confidence_is_stored_and_gates(qwen, photos):
    out = qwen.annotate([{"image": im} for im in photos], ["a", "b"])
    texts, _, confidences = qwen._vlm.generate_scored(photos, qwen.instruction(), qwen.params.max_new_tokens)
    assert texts == [o["bbox_json"].meta["answer"] for o in out]  # the scored run answers the same
    for nodes, c in zip(out, confidences):
        assert nodes["bbox_json"].meta["confidence"] == {"answer_confidence": c}
        assert 0.0 < c < 0.1  # a random model: close to one over its ~100-token vocabulary
    # a parsed answer the model does not believe is held back; the same answer with no known
    # confidence (or a confident one) is kept
    answer = '[{"bbox_2d": [1, 1, 20, 20], "label": "cat"}]'
    doubtful = qwen.detections_from_answer(answer, (100, 100), (100, 100), "z", confidences[0])
    assert {o.quality for o in doubtful.values()} == {"low_confidence"}
    assert doubtful["bbox_json"].meta["boxes"] == [[1.0, 1.0, 20.0, 20.0]]
    sure = qwen.detections_from_answer(answer, (100, 100), (100, 100), "z", 0.93)
    assert {o.quality for o in sure.values()} == {None}
    assert {o.quality for o in qwen.detections_from_answer(answer, (100, 100), (100, 100), "z").values()} == {None}


def test_qwen_model_input_size_maps_boxes_back(qwen, photos):
    answers, sizes = qwen._vlm.generate([photos[1]], qwen.instruction(), 2)
    mh, mw = sizes[0]
    assert mh % 28 == 0 and mw % 28 == 0 and mh * mw <= TINY_PIXELS["max_pixels"]
    h, w = photos[1].shape[:2]
    answer = f'[{{"bbox_2d": [0, 0, {mw // 2}, {mh}], "label": "cat"}}]'
    nodes = qwen.detections_from_answer(answer, (mh, mw), (h, w), "b")
    (box,) = nodes["bbox_json"].meta["boxes"]
    assert box[0] == 0 and box[1] == 0 and box[3] == h and box[2] == pytest.approx(w / 2, abs=0.5 * w / mw + 0.01)
    assert nodes["detection_target"].meta["category"] == "cat"


def test_qwen_closed_category_list_filters_labels(photos):
    a = gr.GroundingQwenVL({"categories": ["Cat"], **TINY_PIXELS})
    assert "Cat" in a.instruction()
    answer = '[{"bbox_2d": [1, 1, 20, 20], "label": "cat"}, {"bbox_2d": [2, 2, 30, 30], "label": "sofa"}]'
    nodes = a.detections_from_answer(answer, (100, 100), (100, 100), "z")
    assert nodes["bbox_json"].meta["labels"] == ["cat"]


def test_qwen_load_without_weights_names_the_repo(tmp_path):
    with pytest.raises(MissingWeightsError, match="Qwen/Qwen2.5-VL-7B-Instruct"):
        gr.GroundingQwenVL(models_dir=tmp_path).load()


# ----------------------------------------------------------------------------- OWLv2

def test_class_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 0, 1, 0])
    assert gr.class_nms(boxes, scores, labels, 0.5) == [0, 2, 3]
    assert gr.class_nms(boxes, scores, labels, 0.95) == [0, 1, 2, 3]


@pytest.fixture(scope="module")
def owl():
    a = gr.GroundingOwlv2({"threshold": 0.3, "categories": ["cat", "person", "rocket"], "nms_iou": 0.3})
    a.load_random("tiny")
    return a


def test_owlv2_detects_with_the_real_model_path(owl, photos):
    out = owl.annotate([{"image": im} for im in photos], ["a", "b"])
    n_boxes = 0
    for im, nodes in zip(photos, out):
        h, w = im.shape[:2]
        assert set(nodes) == set(gr.GROUNDING_NODES)
        meta = nodes["bbox_json"].meta
        n_boxes += len(meta["boxes"])
        assert set(meta["labels"]) <= {"cat", "person", "rocket"}
        assert meta["scores"] == sorted(meta["scores"], reverse=True) and all(s >= 0.3 for s in meta["scores"])
        for x0, y0, x1, y1 in meta["boxes"]:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for i in range(len(meta["boxes"])):
            for j in range(i):
                if meta["labels"][i] == meta["labels"][j]:
                    assert gr.box_iou(meta["boxes"][i], meta["boxes"][j]) <= 0.3
        assert nodes["bbox"].array.shape == im.shape and nodes["detection_target"].array.shape == (h, w)
        if meta["boxes"]:
            assert nodes["detection_target"].meta["category"] in meta["labels"]
            assert nodes["detection_target"].array.any()
    assert n_boxes > 0  # the tiny model's random scores pass the threshold somewhere
    again = owl.annotate([{"image": im} for im in photos], ["a", "b"])
    assert [o["bbox_json"].meta for o in again] == [o["bbox_json"].meta for o in out]


def test_owlv2_top_score_is_stored_and_gates(owl, photos):
    out = owl.annotate([{"image": photos[0]}], ["a"])[0]
    meta = out["bbox_json"].meta
    assert meta["scores"] and meta["confidence"] == {"top_score": max(meta["scores"])}
    assert meta["confidence"]["top_score"] >= gr.Owlv2Params().min_top_score
    assert {o.quality for o in out.values()} == {None}
    strict = gr.GroundingOwlv2({**owl.params.model_dump(), "min_top_score": meta["confidence"]["top_score"] + 1e-4})
    strict._set(owl._model, owl._image_processor, owl._tokenizer)
    held = strict.annotate([{"image": photos[0]}], ["a"])[0]
    assert {o.quality for o in held.values()} == {"low_confidence"}
    assert held["bbox_json"].meta == meta and np.array_equal(held["bbox"].array, out["bbox"].array)


def test_detection_nodes_gate_on_confidence_only_with_boxes():
    low = gr.detection_nodes(20, 30, [[1, 1, 9, 9]], ["cat"], [0.25], "x", "m", {"top_score": 0.25}, {"top_score": 0.3})
    assert {o.quality for o in low.values()} == {"low_confidence"}
    assert low["bbox_json"].meta["confidence"] == {"top_score": 0.25}
    empty = gr.detection_nodes(20, 30, [], [], [], "x", "m", {"top_score": 0.0}, {"top_score": 0.3})
    assert {o.quality for o in empty.values()} == {"no_box"}  # nothing to draw comes first


def test_owlv2_load_without_weights_names_the_repo(tmp_path):
    with pytest.raises(MissingWeightsError, match="google/owlv2-base-patch16-ensemble"):
        gr.GroundingOwlv2(models_dir=tmp_path).load()


def test_owlv2_needs_categories():
    with pytest.raises(Exception, match="categories"):
        gr.GroundingOwlv2({"categories": []})


# ----------------------------------------------------------------------------- caption (same Qwen2.5-VL runner)

def test_caption_runs_the_tiny_vlm_and_is_deterministic(photos):
    import annotators.caption as cap

    a = cap.CaptionQwenVL({**TINY_PIXELS, "max_new_tokens": 8})
    a.load_random("tiny")
    out = a.annotate([{"image": im} for im in photos], ["a", "b"])
    assert [set(o) for o in out] == [{"caption"}] * 2
    for o in out:
        assert o["caption"].array is None
        assert isinstance(o["caption"].meta["text"], str) and o["caption"].meta["text"]
        assert "\n" not in o["caption"].meta["text"]
    again = a.annotate([{"image": im} for im in photos], ["a", "b"])
    assert [o["caption"].meta for o in again] == [o["caption"].meta for o in out]
    assert cap.tidy_caption('```\n"A cat  on a\nsofa."\n```') == "A cat on a sofa."
    with pytest.raises(MissingWeightsError, match="Qwen/Qwen2.5-VL-7B-Instruct"):
        cap.CaptionQwenVL(models_dir="/nonexistent-models").load()


# ----------------------------------------------------------------------------- load() from a models dir

def test_qwen_load_reads_a_models_dir_and_applies_pixel_limits(qwen, photos, tmp_path):
    repo = tmp_path / gr.QWEN_VL_DEFAULT.replace("/", "--")
    qwen._vlm.model.save_pretrained(repo)
    qwen._vlm.processor.save_pretrained(repo)
    loaded = gr.GroundingQwenVL({**TINY_PIXELS, "max_pixels": 12 * 28 * 28, "max_new_tokens": 12},
                                models_dir=tmp_path)
    loaded.load()
    _, sizes = loaded._vlm.generate([photos[0]], "x", 1)
    assert sizes[0][0] * sizes[0][1] <= 12 * 28 * 28
    reference = gr.GroundingQwenVL({**TINY_PIXELS, "max_pixels": 12 * 28 * 28, "max_new_tokens": 12})
    reference._vlm = qwen._vlm.__class__(qwen._vlm.model, loaded._vlm.processor, "cpu")
    a = loaded.annotate([{"image": photos[0]}], ["a"])[0]["bbox_json"].meta
    b = reference.annotate([{"image": photos[0]}], ["a"])[0]["bbox_json"].meta
    assert a == b  # the weights on disk are the ones the tiny model had


def test_owlv2_load_reads_a_models_dir(owl, photos, tmp_path):
    from transformers import Owlv2Processor

    repo = tmp_path / gr.OWLV2_DEFAULT.replace("/", "--")
    owl._model.save_pretrained(repo)
    Owlv2Processor(image_processor=owl._image_processor, tokenizer=owl._tokenizer).save_pretrained(repo)
    loaded = gr.GroundingOwlv2(owl.params, models_dir=tmp_path)
    loaded.load()
    a = loaded.annotate([{"image": photos[1]}], ["b"])[0]["bbox_json"].meta
    b = owl.annotate([{"image": photos[1]}], ["b"])[0]["bbox_json"].meta
    assert a == b
