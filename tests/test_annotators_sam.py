"""SAM annotators through their real class path with a tiny random-initialised SAM."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import annotators.sam as sam_mod
from annotators import render
from annotators.base import seed_for
from core.weights import MissingWeightsError


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256 x 256 keeps the test fast


@pytest.fixture(scope="module")
def chelsea():
    from skimage import data

    return np.ascontiguousarray(data.chelsea()[::2, ::2])  # 150 x 226, not square


@pytest.fixture(scope="module")
def auto():
    # Random weights predict low IoU/stability: thresholds at 0 so that masks come out at all.
    a = sam_mod.SamAuto({"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                         "max_masks": 8})
    a.load_random("tiny")
    return a


@pytest.fixture(scope="module")
def boxes_annotator():
    a = sam_mod.SamBoxes()
    a.load_random("tiny")
    return a


LENIENT = {"min_predicted_iou": 0.0, "min_stability_score": 0.0}  # SAM's bar off: random weights never reach it


def _sharing(cls, model, params):
    """Another annotator of `cls` on the same (already built) tiny model."""
    a = cls(params)
    a._set_model(model)
    return a


def test_sam_auto_renders_distinct_coloured_masks(auto, chelsea):
    (out,) = auto.annotate([{"image": chelsea}], ["img0"])
    assert set(out) == {"sam2_mask"}
    node = out["sam2_mask"]
    assert node.array.shape == chelsea.shape and node.array.dtype == np.uint8
    meta = node.meta
    assert 1 <= meta["n_masks"] <= 8 and len(meta["masks"]) == meta["n_masks"]
    colours = {tuple(m["colour"]) for m in meta["masks"]}
    assert len(colours) == meta["n_masks"]  # one distinct colour per mask
    painted = {tuple(c) for c in node.array.reshape(-1, 3)} - {(0, 0, 0)}
    assert painted and painted <= colours
    areas = [m["area"] for m in meta["masks"]]
    assert areas == sorted(areas, reverse=True)


def test_sam_auto_stores_scores_and_gates_on_sams_bar(auto, chelsea):
    node = auto.annotate([{"image": chelsea}], ["img0"])[0]["sam2_mask"]
    masks = node.meta["masks"]
    assert all({"predicted_iou", "stability_score"} <= set(m) for m in masks)
    areas = [m["area"] for m in masks]
    expected = sum(m["predicted_iou"] * a for m, a in zip(masks, areas)) / sum(areas)
    assert node.meta["confidence"]["predicted_iou"] == pytest.approx(expected, abs=1e-4)
    # the fixture's generator keeps every mask (thresholds 0); the node gate still holds SAM's bar
    assert node.meta["confidence"]["predicted_iou"] < 0.88 and node.quality == "low_confidence"
    lenient = _sharing(sam_mod.SamAuto, auto._model, {"points_per_side": 4, "pred_iou_thresh": 0.0,
                                                      "stability_score_thresh": 0.0, "max_masks": 8, **LENIENT})
    again = lenient.annotate([{"image": chelsea}], ["img0"])[0]["sam2_mask"]
    assert again.quality is None and again.meta == node.meta


def test_sam_auto_is_deterministic(auto, chelsea):
    a = auto.annotate([{"image": chelsea}], ["x"])[0]["sam2_mask"]
    b = auto.annotate([{"image": chelsea}], ["x"])[0]["sam2_mask"]
    assert np.array_equal(a.array, b.array) and a.meta == b.meta


def test_sam_boxes_produces_mask_and_interactive_pair(boxes_annotator, astronaut):
    h, w = astronaut.shape[:2]
    meta = {"boxes": [[60, 10, 200, 250], [5, 5, 40, 60], [-20, 100, 90, 400]],
            "labels": ["person", "flag", "arm"], "scores": [0.9, 0.8, 0.7]}
    (out,) = boxes_annotator.annotate([{"image": astronaut, "bbox_json.meta": meta}], ["astro"])
    assert set(out) == {"mask", "interactive_seg_source", "interactive_seg_mask"}

    mask = out["mask"]
    assert mask.array.shape == (h, w, 3) and mask.array.dtype == np.uint8
    assert mask.meta["names"] == ["person", "flag", "arm"]
    assert mask.meta["boxes"][2] == [0.0, 100.0, 90.0, float(h)]  # clipped to the image
    colours = {tuple(c) for c in mask.meta["colours"]}
    assert len(colours) == 3
    painted = {tuple(c) for c in mask.array.reshape(-1, 3)} - {(0, 0, 0)}
    assert painted <= colours

    src, tgt = out["interactive_seg_source"], out["interactive_seg_mask"]
    assert src.array.shape == astronaut.shape and src.array.dtype == np.uint8
    assert tgt.array.shape == (h, w) and tgt.array.dtype == np.uint8
    assert set(np.unique(tgt.array)) <= {0, 255}
    # The red box is drawn on the chosen box's outline and nowhere else.
    x0, y0, x1, y1 = (int(v) for v in src.meta["box"])
    changed = np.any(src.array != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any()
    assert xs.min() >= x0 - 4 and xs.max() <= x1 + 4 and ys.min() >= y0 - 4 and ys.max() <= y1 + 4
    assert np.all(src.array[changed] == render.RED)
    assert src.meta == tgt.meta
    expected = sam_mod.choose_interactive(mask.meta["boxes"], h, w, seed_for("astro", "interactive_seg_source"),
                                          0.01, 0.8)
    assert src.meta["index"] == expected


def test_sam_boxes_is_deterministic_and_batches(boxes_annotator, astronaut, chelsea):
    meta = {"boxes": [[10, 10, 100, 120]], "labels": ["cat"], "scores": [1.0]}
    items = [{"image": astronaut, "bbox_json.meta": meta}, {"image": chelsea, "bbox_json.meta": meta}]
    a = boxes_annotator.annotate(items, ["a", "b"])
    b = boxes_annotator.annotate(items, ["a", "b"])
    assert len(a) == 2 and a[1]["mask"].array.shape == chelsea.shape
    for x, y in zip(a, b):
        for node in x:
            assert np.array_equal(x[node].array, y[node].array) and x[node].meta == y[node].meta


def test_sam_boxes_without_boxes_are_stored_as_no_box(boxes_annotator, astronaut):
    for meta in ({"boxes": [], "labels": []}, {"boxes": [[5, 5, 5, 9]]}):  # none, degenerate boxes only
        out = boxes_annotator.annotate([{"image": astronaut, "bbox_json.meta": meta}], ["e"])[0]
        assert {node: o.quality for node, o in out.items()} == dict.fromkeys(
            ("mask", "interactive_seg_source", "interactive_seg_mask"), "no_box")
        assert not out["mask"].array.any() and out["mask"].array.shape == astronaut.shape
    lenient = _sharing(sam_mod.SamBoxes, boxes_annotator._model, LENIENT)
    ok = lenient.annotate([{"image": astronaut, "bbox_json.meta": {"boxes": [[10, 10, 200, 220]]}}], ["k"])
    assert all(o.quality is None for o in ok[0].values())


def test_sam_boxes_store_sams_scores_and_hold_back_doubtful_masks(boxes_annotator, astronaut):
    meta = {"boxes": [[60, 10, 200, 250], [5, 5, 40, 60]], "labels": ["person", "flag"], "scores": [0.9, 0.8]}
    out = boxes_annotator.annotate([{"image": astronaut, "bbox_json.meta": meta}], ["astro"])[0]
    mask = out["mask"].meta
    ious, stability = mask["predicted_iou"], mask["stability_score"]
    assert len(ious) == len(stability) == 2
    assert all(v == round(v, 4) for v in ious + stability)
    conf = mask["confidence"]
    assert min(ious) <= conf["predicted_iou"] <= max(ious)
    assert min(stability) <= conf["stability_score"] <= max(stability)
    # random weights predict low IoU: below SAM's own bar (0.88 / 0.95), all three nodes are held back
    assert conf["predicted_iou"] < sam_mod.SAM_MIN_PREDICTED_IOU
    assert {node: o.quality for node, o in out.items()} == dict.fromkeys(
        ("mask", "interactive_seg_source", "interactive_seg_mask"), "low_confidence")
    pick = out["interactive_seg_mask"].meta["index"]
    assert out["interactive_seg_mask"].meta["predicted_iou"] == ious[pick]
    assert out["interactive_seg_source"].meta == out["interactive_seg_mask"].meta
    lenient = _sharing(sam_mod.SamBoxes, boxes_annotator._model, LENIENT)
    kept = lenient.annotate([{"image": astronaut, "bbox_json.meta": meta}], ["astro"])[0]
    assert all(o.quality is None for o in kept.values())
    assert np.array_equal(kept["mask"].array, out["mask"].array) and kept["mask"].meta == out["mask"].meta
    # one threshold at a time: a bar just above the stored IoU holds back, just below keeps
    def mask_quality_at(min_iou):
        params = {"min_stability_score": 0.0, "min_predicted_iou": min_iou}
        a = _sharing(sam_mod.SamBoxes, boxes_annotator._model, params)
        return a.annotate([{"image": astronaut, "bbox_json.meta": meta}], ["astro"])[0]["mask"].quality

    assert mask_quality_at(conf["predicted_iou"] + 1e-4) == "low_confidence"
    assert mask_quality_at(conf["predicted_iou"]) is None


def test_choose_interactive_prefers_mid_sized_boxes():
    boxes = [[0, 0, 100, 100], [0, 0, 1, 1], [10, 10, 50, 50]]
    picks = {sam_mod.choose_interactive(boxes, 100, 100, s, 0.01, 0.8) for s in range(20)}
    assert picks == {2}


@pytest.mark.parametrize("cls", [sam_mod.SamAuto, sam_mod.SamBoxes])
def test_load_without_weights_names_the_checkpoint(cls, tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        cls({"model_type": "vit_b"}, models_dir=tmp_path).load()
    assert "ybelkada/segment-anything" in str(err.value) and "sam_vit_b_01ec64.pth" in str(err.value)


def test_registered():
    from annotators import registry

    assert registry.get("sam_auto") is sam_mod.SamAuto
    assert registry.get("sam_boxes").requires == ("image", "bbox_json")


def test_sam_entities_use_seeded_random_colours(chelsea):
    ent = sam_mod.SamEntities({"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
                               "max_masks": 8})
    ent.load_random("tiny")
    a = ent.annotate([{"image": chelsea}], ["cat-1"])[0]["entity_seg"]
    b = ent.annotate([{"image": chelsea}], ["cat-2"])[0]["entity_seg"]
    assert a.array.shape == chelsea.shape and a.array.dtype == np.uint8
    n = a.meta["n_masks"]
    assert n >= 1
    assert [tuple(e["colour"]) for e in a.meta["entities"]] == render.distinct_colours(
        n, seed=seed_for("cat-1", "entity_seg"))
    # Same masks, other image id: other colours (VIRAL's "random distinct colour per entity").
    assert [e["area"] for e in a.meta["entities"]] == [e["area"] for e in b.meta["entities"]]
    assert [e["colour"] for e in a.meta["entities"]] != [e["colour"] for e in b.meta["entities"]]
    assert all({"predicted_iou", "stability_score"} <= set(e) for e in a.meta["entities"])
    assert a.quality == "low_confidence" and a.meta["confidence"]["predicted_iou"] < 0.88
    assert np.array_equal(a.array, ent.annotate([{"image": chelsea}], ["cat-1"])[0]["entity_seg"].array)


def test_checkpoint_lookup_finds_bare_and_repo_layouts(tmp_path):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    assert sam_mod.sam_checkpoint_path("vit_b", tmp_path) == tmp_path / "sam_vit_b_01ec64.pth"
    nested = tmp_path / "ybelkada--segment-anything" / "checkpoints"
    nested.mkdir(parents=True)
    (nested / "sam_vit_h_4b8939.pth").write_bytes(b"x")
    assert sam_mod.sam_checkpoint_path("vit_h", tmp_path) == nested / "sam_vit_h_4b8939.pth"
    with pytest.raises(MissingWeightsError, match="sam_vit_l_0b3195.pth"):
        sam_mod.sam_checkpoint_path("vit_l", tmp_path)


def test_sam2_auto_through_transformers_pipeline():
    from skimage import data

    image = np.ascontiguousarray(data.coffee()[::4, ::4])  # 100 x 150
    a = sam_mod.Sam2Auto({"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0})
    a.load_random("tiny")
    (out,) = a.annotate([{"image": image}], ["c"])
    node = out["sam2_mask"]
    assert node.array.shape == image.shape and node.array.dtype == np.uint8
    assert node.meta["n_masks"] >= 1
    painted = {tuple(c) for c in node.array.reshape(-1, 3)} - {(0, 0, 0)}
    assert painted and painted <= {tuple(m["colour"]) for m in node.meta["masks"]}
    assert np.array_equal(a.annotate([{"image": image}], ["c"])[0]["sam2_mask"].array, node.array)
    ious = [m["predicted_iou"] for m in node.meta["masks"]]
    assert min(ious) <= node.meta["confidence"]["predicted_iou"] <= max(ious)
    assert node.quality == ("low_confidence" if node.meta["confidence"]["predicted_iou"] < 0.88 else None)
    with pytest.raises(MissingWeightsError, match="facebook/sam2.1-hiera-large"):
        sam_mod.Sam2Auto(models_dir="/nonexistent-models").load()


def test_sam_auto_works_after_transformers_probed_torchvision():
    """segment_anything's NMS must work whatever imported torchvision first (fresh interpreter)."""
    import subprocess
    import sys

    code = ("import annotators.grounding\nfrom transformers import Owlv2ForObjectDetection\n"
            "import numpy as np, annotators.sam as s\n"
            "a = s.SamAuto({'points_per_side': 2, 'pred_iou_thresh': 0.0, 'stability_score_thresh': 0.0})\n"
            "a.load_random('tiny')\n"
            "print(a.annotate([{'image': np.full((64, 64, 3), 90, np.uint8)}], ['x'])[0]['sam2_mask'].meta['n_masks'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
