"""Quality gates: maps keep their structure through every resize, degenerate outputs carry a reason."""

import io

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from annotators.base import resize_to
from core.map_resize import line_resize, resize_map
from annotators.quality import changed_fraction, constant_quality, edge_quality, mask_quality, strong_fraction
from core.images import encode_png
from core.grid import fit_cell
from core.node_types import NODE_TYPES, RESAMPLE_KINDS, register_node_type, resample_kind
from pipelines.sampling_params import ExportParams
from pipelines.shards import CellCache, assemble

LINES = [((0.05, 0.1), (0.95, 0.2)), ((0.1, 0.9), (0.8, 0.05)), ((0.5, 0.02), (0.52, 0.98)),
         ((0.02, 0.6), (0.97, 0.63)), ((0.3, 0.3), (0.7, 0.8))]


def line_map(side: int) -> np.ndarray:
    """One-pixel white lines on black (no anti-aliasing), the same lines at any scale."""
    canvas = np.zeros((side, side), np.uint8)
    for (x0, y0), (x1, y1) in LINES:
        p0 = (round(x0 * (side - 1)), round(y0 * (side - 1)))
        p1 = (round(x1 * (side - 1)), round(y1 * (side - 1)))
        cv2.line(canvas, p0, p1, 255, 1, lineType=cv2.LINE_8)
    return canvas


def label_mask(side: int) -> np.ndarray:
    """Five flat colours on black: blobs with curved borders (where interpolation would mix colours)."""
    canvas = np.zeros((side, side, 3), np.uint8)
    colours = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]
    for k, colour in enumerate(colours):
        centre = (round(side * (0.2 + 0.15 * k)), round(side * (0.8 - 0.13 * k)))
        cv2.circle(canvas, centre, round(side * 0.17), colour, -1, lineType=cv2.LINE_8)
    return canvas


def _grid_cells(nodes: list[str], arrays: dict, cell_size: int) -> list[np.ndarray]:
    """Put a one-row sample of `nodes` through the export cell path; return its fitted cells."""
    cells = {(n, "x"): encode_png(arrays[n]) for n in nodes}
    sample = {"key": "train_000000001", "split": "train", "task": "t", "family": "f", "columns": nodes,
              "image_ids": ["x"], "cell_nodes": nodes, "cell_ids": ["x"] * len(nodes), "target_row": 0,
              "target_col": len(nodes) - 1, "instruction": {"layout": "", "task": "", "content": "", "text": ""}}
    out = assemble(sample, CellCache(cells), ExportParams(cell_size=cell_size, aspect="square"), "grid")
    grid = np.asarray(Image.open(io.BytesIO(out["grid.png"])).convert("RGB"))
    return [grid[:, k * cell_size:(k + 1) * cell_size] for k in range(len(nodes))]


@pytest.mark.parametrize("cell_size", [256, 208, 128])
def test_one_pixel_lines_survive_the_export_cell_path(cell_size):
    source = line_map(512)
    (cell,) = _grid_cells(["canny"], {"canny": np.repeat(source[..., None], 3, 2)}, cell_size)
    native = strong_fraction(line_map(cell_size))
    fitted = strong_fraction(cell)
    assert abs(fitted / native - 1) <= 0.2, (fitted, native)
    # the old path (Lanczos for every node) loses most of them: the test can tell the two apart
    lanczos = strong_fraction(fit_cell(np.repeat(source[..., None], 3, 2), (cell_size, cell_size), "continuous"))
    assert lanczos < 0.6 * native


@pytest.mark.parametrize("cell_size", [256, 208])
def test_label_masks_keep_only_their_original_values(cell_size):
    mask = label_mask(500)
    original = {tuple(c) for c in np.unique(mask.reshape(-1, 3), axis=0)}
    cells = _grid_cells(["sam2_mask", "foreground_mask"], {"sam2_mask": mask,
                                                          "foreground_mask": np.where(mask.any(2), 255, 0)
                                                          .astype(np.uint8)}, cell_size)
    assert {tuple(c) for c in np.unique(cells[0].reshape(-1, 3), axis=0)} <= original
    assert set(np.unique(cells[1]).tolist()) <= {0, 255}
    every_colour_kept = {tuple(c) for c in np.unique(cells[0].reshape(-1, 3), axis=0)}
    assert every_colour_kept == original
    lanczos = fit_cell(mask, (cell_size, cell_size), "continuous")
    assert len({tuple(c) for c in np.unique(lanczos.reshape(-1, 3), axis=0)} - original) > 10


def test_resample_kind_is_declared_once_per_node_type():
    assert resample_kind("canny") == resample_kind("hed") == resample_kind("openpose") == "lines"
    assert resample_kind("sam2_mask") == resample_kind("foreground_mask") == resample_kind("uniformer") == "labels"
    assert resample_kind("image") == resample_kind("depth") == resample_kind("normal") == "continuous"
    assert resample_kind("not_registered_plugin_node") == "continuous"
    assert all(t.resample in RESAMPLE_KINDS for t in NODE_TYPES.values())
    with pytest.raises(ValueError, match="resample"):
        register_node_type("bad_kind_node", "condition", "x", resample="bicubic")


def test_line_resize_keeps_values_and_connectivity():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (37, 53), dtype=np.uint8)
    small = line_resize(arr, 10, 20)
    assert small.shape == (10, 20) and set(np.unique(small)) <= set(np.unique(arr)) | {0}
    # a dense footprint keeps its maximum
    assert small[0, 0] == arr[:3, :2].max()  # footprints start at (k * 37) // 10, (k * 53) // 20
    assert line_resize(arr, 74, 106).shape == (74, 106)  # enlarging repeats pixels
    assert set(np.unique(line_resize(arr, 74, 106))) <= set(np.unique(arr))
    # a shrunk line stays one 8-connected component, whatever its slope
    for angle in (3, 20, 33, 45, 61, 88):
        line = np.zeros((512, 512), np.uint8)
        dx, dy = np.cos(np.radians(angle)) * 240, np.sin(np.radians(angle)) * 240
        cv2.line(line, (round(256 - dx), round(256 - dy)), (round(256 + dx), round(256 + dy)), 255, 1)
        for side in (97, 128, 211):
            n, _ = cv2.connectedComponents(line_resize(line, side, side), connectivity=8)
            assert n == 2, (angle, side)
    assert np.array_equal(resize_map(arr, 37, 53, "lines"), arr)
    with pytest.raises(ValueError, match="resample kind"):
        resize_map(arr, 5, 5, "bicubic")


def test_annotator_line_resize_keeps_edges_like_native_detection():
    """Canny at 512 px on a small photo, brought back with the line kind, keeps ~all edge pixels
    (the old linear resize kept about a sixth)."""
    edges = line_map(512)
    back = resize_to(edges, 160, 160, kind="lines")
    linear = resize_to(edges, 160, 160)
    native = strong_fraction(line_map(160))
    assert abs(strong_fraction(back) / native - 1) <= 0.2
    assert strong_fraction(linear) < 0.5 * native


# --- degenerate outputs ------------------------------------------------------------------------

def test_quality_measures():
    flat = np.full((64, 64), 7, np.uint8)
    assert edge_quality(flat, 0.001) == "few_edges" and edge_quality(line_map(64), 0.001) is None
    assert mask_quality(np.zeros((8, 8), bool), 0.01) == "empty_mask"
    assert mask_quality(np.ones((8, 8), bool), 0.01, 0.98) == "full_mask"
    assert mask_quality(np.eye(8, dtype=bool), 0.01, 0.98) is None
    assert constant_quality(np.full((9, 9, 3), 128, np.uint8), 4.0) == "constant_map"
    assert constant_quality(np.full((9, 9), 40000, np.uint16), 4.0) == "constant_map"
    assert constant_quality(skimage.data.camera(), 4.0) is None
    photo = skimage.data.astronaut()
    assert changed_fraction(photo, photo, 4) == 0.0
    assert changed_fraction(photo, np.rot90(photo).copy(), 4) > 0.5  # another shape is compared resized
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    assert changed_fraction(np.repeat(grey[..., None], 3, 2), grey, 4) == 0.0  # grey vs RGB broadcasts


@pytest.fixture(scope="module")
def photo():
    return skimage.data.astronaut()[::2, ::2].copy()  # 256 x 256, a person and colour


@pytest.fixture(scope="module")
def flat():
    return np.full((160, 200, 3), 118, np.uint8)


MODULE_OF = {"canny": "edges_weightfree", "grayscale": "color", "pose_mediapipe": "pose",
             "foreground_mediapipe": "foreground", "image_quality": "image_quality"}


def _one(name: str, image: np.ndarray, params: dict | None = None, load: str = "load"):
    """One image through one annotator (only its module imported: the tests stay quick)."""
    import importlib

    from annotators.registry import get

    module = MODULE_OF.get(name) or ("synthetic_edits" if name.startswith("edit_") else "degradations.annotators")
    importlib.import_module(f"annotators.{module}")
    ann = get(name)(params or {})
    getattr(ann, load)(*(("tiny",) if load == "load_random" else ()))
    return ann.annotate([{"image": image, "image.meta": {}}], ["img0"])[0]


def test_canny_flags_a_flat_image_and_keeps_photo_edges(photo, flat):
    assert _one("canny", flat)["canny"].quality == "few_edges"
    edges = _one("canny", photo)["canny"]
    assert edges.quality is None and edges.array.shape == photo.shape[:2]
    # Graph200K's 512 px setting and detection at the source's own size both stay available
    native = _one("canny", photo, {"resolution": None})["canny"]
    assert native.quality is None and strong_fraction(native.array) > 0.02


@pytest.mark.parametrize("resolution", [64, 512, 1024])
@pytest.mark.parametrize("crop", [(0, 0, 512, 512), (5, 17, 133, 301), (0, 0, 77, 45)])
def test_canny_maps_equal_controlnet_aux_canny_detector(resolution, crop):
    """Canny runs OpenCV itself (importing controlnet_aux costs 5 s of start-up): the maps must stay
    those of controlnet_aux's CannyDetector, bit for bit, at every detection size (stored maps are kept)."""
    from controlnet_aux.canny import CannyDetector

    image = np.ascontiguousarray(skimage.data.astronaut()[crop[0]:crop[2], crop[1]:crop[3]])
    ours = _one("canny", image, {"resolution": resolution})["canny"].array
    ref = CannyDetector()(image, low_threshold=100, high_threshold=200, detect_resolution=resolution,
                          image_resolution=resolution, output_type="np")[..., 0]
    assert (ours == resize_to(np.ascontiguousarray(ref), *image.shape[:2], kind="lines")).all()


def test_model_edge_maps_flag_an_empty_map(photo):
    from annotators.edges_models import Hed

    hed = Hed({"min_edge_fraction": 0.001})
    empty = hed._node_output(np.zeros((64, 64), np.uint8), photo)["hed"]
    assert empty.quality == "few_edges" and empty.array.shape == photo.shape[:2]
    lines = hed._node_output(line_map(512), photo)["hed"]  # detected at 512, source 256: lines kept
    assert lines.quality is None and abs(strong_fraction(lines.array) / strong_fraction(line_map(256)) - 1) < 0.2


def test_pose_without_a_person_is_no_person(photo, flat):
    assert _one("pose_mediapipe", flat)["openpose"].quality == "no_person"
    cup = _one("pose_mediapipe", skimage.data.coffee())["openpose"]
    assert cup.quality == "no_person" and cup.meta["people"] == [] and cup.array.max() == 0
    assert _one("pose_mediapipe", skimage.data.astronaut())["openpose"].quality is None
    from annotators.pose import pose_quality

    assert pose_quality([[(1.0, 2.0, 0.9)] * 3 + [None] * 15], 4) == "no_person"  # three keypoints only
    assert pose_quality([[(1.0, 2.0, 0.9)] * 4 + [None] * 14], 4) is None


def test_depth_of_a_signal_free_prediction_is_constant_map(photo):
    import torch

    from annotators.depth import DepthAnythingV2

    ann = DepthAnythingV2({"resolution": 56})
    ann.load_random("tiny")
    assert ann.annotate([{"image": photo}], ["p"])[0]["depth"].quality is None
    head = ann._model.head.conv3  # the real model with a head that sees nothing: one value everywhere
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(0.7)
    out = ann.annotate([{"image": photo}], ["p"])[0]["depth"]
    assert out.quality == "constant_map" and out.array.shape == photo.shape[:2]
    from annotators.depth import AuxDepthParams
    from annotators.normals import NormalBae

    normal = NormalBae({"resolution": 64})._node_output(np.full((64, 64, 3), 128, np.uint8), photo)["normal"]
    assert normal.quality == "constant_map" and AuxDepthParams().min_spread > 0


@pytest.mark.parametrize("name", ["edit_hue_rotate", "degrade_saturate_strengthen", "degrade_saturate_weaken",
                                  "grayscale"])
def test_colour_edits_of_a_grey_photo_are_no_ops(name, photo):
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    (out,) = _one(name, grey).values()
    assert out.quality == "no_op" and out.array is not None  # kept, so the report can show it
    (coloured,) = _one(name, photo).values()
    assert coloured.quality is None


def test_a_small_real_edit_is_not_a_no_op(photo):
    (shape,) = _one("edit_add_shape", photo).values()
    (mark,) = _one("degrade_watermark", photo).values()
    assert shape.quality is None and mark.quality is None
    (strict,) = _one("edit_add_shape", photo, {"no_op_min_changed": 0.5}).values()
    assert strict.quality == "no_op"  # the distance is a documented param


def test_foreground_of_an_empty_mask_is_empty_mask(photo, flat):
    from annotators.foreground import ForegroundFromMask

    ann = ForegroundFromMask()
    empty = ann.annotate([{"image": photo, "mask": np.zeros_like(photo)}], ["e"])[0]
    assert {o.quality for o in empty.values()} == {"empty_mask"}
    full = ann.annotate([{"image": photo, "mask": np.full_like(photo, 200)}], ["f"])[0]
    assert {o.quality for o in full.values()} == {"full_mask"}
    assert {o.quality for o in _one("foreground_mediapipe", flat, load="load_random").values()} == {"empty_mask"}


def test_low_confidence_is_a_reason_and_compares_each_score_with_its_minimum():
    from annotators.quality import REASONS, rounded, score_quality

    assert "low_confidence" in REASONS
    assert score_quality({"a": 0.4, "b": 0.99}, {"a": 0.5, "b": 0.9}) == "low_confidence"
    assert score_quality({"a": 0.6, "b": 0.8}, {"a": 0.5, "b": 0.9}) == "low_confidence"
    assert score_quality({"a": 0.5, "b": 0.9}, {"a": 0.5, "b": 0.9}) is None  # at the minimum passes
    assert score_quality({}, {"a": 0.1}) == "low_confidence"  # nothing reported counts as 0
    assert score_quality({}, {"a": 0.0}) is None  # a minimum of 0 never holds back
    assert rounded(0.123456789) == 0.1235


def test_grounding_without_boxes_is_no_box():
    from annotators.grounding import detection_nodes

    nodes = detection_nodes(32, 48, [], [], [], "i", "m")
    assert {n: o.quality for n, o in nodes.items()} == dict.fromkeys(("bbox_json", "bbox", "detection_target"),
                                                                       "no_box")
    ok = detection_nodes(32, 48, [[1, 1, 20, 20]], ["cat"], [0.9], "i", "m")
    assert all(o.quality is None for o in ok.values())


def test_image_quality_flags_flat_near_constant_and_tiny_photos(photo, flat):
    node = _one("image_quality", photo)["image_quality"]
    assert node.quality is None and node.array is None and node.meta["sharpness"] > 50
    assert _one("image_quality", flat)["image_quality"].meta["failed"] == ["contrast", "entropy", "sharpness"]
    rng = np.random.default_rng(0)
    noise = np.clip(118 + rng.normal(0, 1.5, flat.shape), 0, 255).astype(np.uint8)
    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.float32)[None, :, None], (160, 1, 3)).astype(np.uint8)
    for image in (flat, noise, gradient, photo[:40, :40]):
        assert _one("image_quality", image)["image_quality"].quality == "flat_image"


# --- mined quadruplets ----------------------------------------------------------------------------

def _mining_corpus():
    """Two edit families of 10 pairs over 16-d unit embeddings; p000's edit barely moves its source
    (a no-op: task vector norm ~0.005, same direction as its family), p003 and p004 share a source."""
    rng = np.random.default_rng(3)
    d, n = 16, 20
    directions = np.eye(d, dtype=np.float32)[:2] * 0.6
    src = rng.normal(size=(n, d)).astype(np.float32)
    src /= np.linalg.norm(src, axis=1, keepdims=True)
    family = np.repeat([0, 1], 10)
    edited = src + directions[family] + rng.normal(scale=0.01, size=(n, d)).astype(np.float32)
    edited[0] = src[0] + directions[0] / 0.6 * 0.005
    src[4], edited[4] = src[3], src[3] + directions[0] * 1.1
    text = np.eye(d, dtype=np.float32)[family + 4] + rng.normal(scale=0.01, size=(n, d)).astype(np.float32)
    ids = [f"p{i:03d}" for i in range(n)]
    source_ids = [f"s{i:03d}" for i in range(n)]
    source_ids[4] = source_ids[3]
    pairs = {"pair_id": ids, "source_id": source_ids, "edited_id": [f"e{i:03d}" for i in range(n)],
             "instruction": [f"edit {f}" for f in family]}
    return pairs, src, edited, text


def test_mined_quadruplets_drop_no_op_and_shared_image_candidates_with_their_reason():
    from mining.config import ClusterCount, FilterParams, KMeansParams, MineParams, NeighbourParams, TaskVectorParams
    from mining.quadruplets import mine

    pairs, src, edited, text = _mining_corpus()
    params = MineParams(task_vectors=TaskVectorParams(normalisation="l2"),  # a no-op keeps its family's direction
                        kmeans=KMeansParams(clusters=ClusterCount(c=0.6, k_min=2), nredo=3),
                        neighbours=NeighbourParams(top_k=4, exclude_same_source=False),
                        filters=FilterParams(tau_visual=0.99, tau_text=0.5))
    res = mine(pairs, src, edited, text, params)
    cand = res.candidates.to_pylist()
    noop = [c for c in cand if "p000" in (c["pair_id_a"], c["pair_id_b"])]
    shared = [c for c in cand if {c["pair_id_a"], c["pair_id_b"]} == {"p003", "p004"}]
    assert noop and all(c["reason"] == "near_zero_task_vector" and not c["pass_task_vector"] for c in noop)
    assert shared and all(c["reason"] == "shared_image" and not c["pass_distinct"] for c in shared)
    kept_pairs = {p for q in res.quadruplets.to_pylist() for p in (q["pair_id_a"], q["pair_id_b"])}
    assert "p000" not in kept_pairs and res.quadruplets.num_rows > 0
    assert all(c["reason"] is None for c in cand if c["pair_id_a"] in kept_pairs and c["pair_id_b"] in kept_pairs
               and c["pass_visual"] and c["pass_text"] and c["pass_distinct"] and c["pass_task_vector"])
    assert res.stats["n_dropped_near_zero_task_vector"] == len(noop)
    assert res.stats["n_dropped_shared_image"] >= len(shared)
    assert res.stats["n_quadruplets"] == sum(c["reason"] is None for c in cand)


# --- report ----------------------------------------------------------------------------------------

def _write_part(root, rel: str, rows: list[dict]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in ("image_id", "node_type", "data", "meta")},
                            schema=pa.schema([("image_id", pa.string()), ("node_type", pa.string()),
                                              ("data", pa.binary()), ("meta", pa.string())])), path)
    return rel


def test_report_quality_section_counts_shows_and_measures_what_was_held_back(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.report import gallery_picks, quality_html, quality_section, read_quality
    from pipelines.tasks import Task

    store, out = tmp_path / "store", tmp_path / "out"
    ids = [f"img{k}" for k in range(5)]
    black = encode_png(np.zeros((256, 192, 3), np.uint8))
    pose = _write_part(store, "nodes/pose_mediapipe/h1/part-00000.parquet",
                       [{"image_id": i, "node_type": "openpose", "data": black, "meta": '{"people": []}'}
                        for i in ids[:3]])
    canny = _write_part(store, "nodes/canny/h2/part-00000.parquet",
                        [{"image_id": "img3", "node_type": "canny", "data": encode_png(line_map(300)), "meta": "{}"}])
    boxes = _write_part(store, "nodes/grounding_owlv2/h3/part-00001.parquet",
                        [{"image_id": "img4", "node_type": "bbox_json", "data": None, "meta": '{"boxes": []}'}])
    held = [("pose_mediapipe", "openpose", "img0", "no_person", pose), ("pose_mediapipe", "openpose", "img1",
                                                                        "no_person", pose),
            ("canny", "canny", "img3", "few_edges", canny), ("grounding_owlv2", "bbox_json", "img4", "no_box", boxes)]
    out.mkdir()
    pq.write_table(pa.table({k: [h[j] for h in held] for j, k in enumerate(
        ("annotator", "node_type", "image_id", "reason", "part"))}), out / "quality.parquet")

    rows = read_quality(out)
    usable = {"image": set(ids), "openpose": {"img2"}, "canny": {"img0", "img1", "img2", "img4"}}
    tasks = [Task("image_to_openpose", ("image", "openpose"), "dense"),
             Task("openpose_to_image", ("openpose", "image"), "conditional"),
             Task("image_to_canny", ("image", "canny"), "dense"), Task("image_to_Rain", ("image", "Rain"), "restore")]
    section = quality_section(rows, store, tmp_path / "report", tasks, usable, online={"Rain"})
    assert section["held_back"] == 4
    assert section["per_annotator_reason"] == {"canny": {"few_edges": 1}, "grounding_owlv2": {"no_box": 1},
                                               "pose_mediapipe": {"no_person": 2}}
    pose_gallery = section["gallery"]["no_person"]
    assert [e["image_id"] for e in pose_gallery] == ["img0", "img1"]
    thumb = np.asarray(Image.open(tmp_path / "report" / pose_gallery[0]["file"]))
    assert thumb.shape[:2] == (128, 96) and thumb.max() == 0  # the blank skeleton map, shown as it is
    edges = np.asarray(Image.open(tmp_path / "report" / section["gallery"]["few_edges"][0]["file"]).convert("L"))
    assert strong_fraction(edges) > 0.5 * strong_fraction(line_map(128))  # lines stay visible in the thumbnail
    assert section["gallery"]["no_box"][0]["meta"] == '{"boxes": []}'
    losses = section["task_losses"]
    assert losses["image_to_openpose"] == {"candidates_before": 3, "candidates_after": 1, "lost_share": 0.6667}
    assert losses["image_to_canny"]["lost_share"] == 0.2 and losses["image_to_Rain"]["lost_share"] == 0.0
    page = quality_html(section)
    assert "no_person" in page and "66.7%" in page and pose_gallery[0]["file"] in page
    assert read_quality(tmp_path / "nowhere") == []
    # round-robin over annotators: one prolific annotator does not fill a reason's gallery
    many = [{"annotator": "a", "reason": "no_op", "node_type": "x", "image_id": f"{k}", "part": ""} for k in range(9)]
    picks = gallery_picks(many + [{"annotator": "b", "reason": "no_op", "node_type": "y", "image_id": "0",
                                   "part": ""}], 3)["no_op"]
    assert [p["annotator"] for p in picks] == ["a", "b", "a"]


# --- benchmarks/quality_counts.py ------------------------------------------------------------------

def test_quality_counts_finds_blank_map_cells_and_no_op_pairs_in_shards(tmp_path):
    import importlib.util
    from pathlib import Path

    from pipelines.shards import write_tar

    spec = importlib.util.spec_from_file_location(
        "quality_counts", Path(__file__).parents[1] / "benchmarks" / "quality_counts.py")
    qc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qc)

    photo = skimage.data.astronaut()[::4, ::4].copy()
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    cells = {("image", "p"): encode_png(photo), ("image", "g"): encode_png(grey),
             ("openpose", "p"): encode_png(np.zeros_like(photo)), ("canny", "p"): encode_png(line_map(128)),
             ("edit_hue_rotate", "g"): encode_png(grey), ("edit_hue_rotate", "p"): encode_png(photo[..., ::-1].copy())}

    def sample(key, columns, ids):
        return {"key": key, "split": "train", "task": "t", "family": "f", "columns": columns, "image_ids": ids,
                "cell_nodes": [n for _ in ids for n in columns], "cell_ids": [i for i in ids for _ in columns],
                "target_row": len(ids) - 1, "target_col": len(columns) - 1,
                "instruction": {"layout": "", "task": "", "content": "", "text": ""}}

    export = ExportParams(cell_size=64, aspect="square")
    cache = CellCache(cells)
    samples = [assemble(sample("train_000000000", ["image", "openpose"], ["p"]), cache, export),
               assemble(sample("train_000000001", ["image", "canny"], ["p"]), cache, export),
               assemble(sample("train_000000002", ["image", "edit_hue_rotate"], ["p", "g"]), cache, export)]
    write_tar(samples, tmp_path / "shards" / "train" / "train-00000.tar")
    result = qc.count(tmp_path)
    assert result["samples"] == 3
    assert result["map_cells"] == {"canny": 1, "openpose": 1} and result["blank_cells"] == {"openpose": 1}
    assert result["pair_cells"] == {"edit_hue_rotate": 2} and result["no_op_pairs"] == {"edit_hue_rotate": 1}
    assert result["held_back_total"] == 0
    # a samples table that still names a held-back node is counted
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"annotator": ["pose_mediapipe"], "node_type": ["openpose"], "image_id": ["p"],
                             "reason": ["no_person"], "part": ["nodes/x/part-0.parquet"]}), tmp_path / "quality.parquet")
    pq.write_table(pa.table({"cell_nodes": [["image", "openpose"], ["image", "canny"]],
                             "cell_ids": [["p", "p"], ["p", "p"]]}), tmp_path / "samples.parquet")
    again = qc.count(tmp_path, tmp_path / "samples.parquet")
    assert again["held_back"] == {"pose_mediapipe": {"no_person": 1}} and again["held_back_cells_in_samples"] == 1


def test_gates_measure_the_centre_square_the_exporter_keeps(photo):
    from annotators.foreground import ForegroundFromMask
    from annotators.pose import pose_quality
    from annotators.quality import centre_box, gate_view

    wide = np.ascontiguousarray(photo[:192])  # 192 x 256: a 4:3 photo
    border = np.zeros_like(wide)
    border[60:130, :28] = 255  # an object on the left edge: 4 % of the photo, cut by a square crop
    (cell,) = _grid_cells(["foreground_mask"], {"foreground_mask": border}, 64)
    assert not cell.any()  # what the old gate let through: a blank mask cell
    centre = ForegroundFromMask().annotate([{"image": wide, "mask": border}], ["w"])[0]
    full = ForegroundFromMask({"gate_region": "full"}).annotate([{"image": wide, "mask": border}], ["w"])[0]
    assert centre["foreground_mask"].quality == "empty_mask" and full["foreground_mask"].quality is None
    assert centre_box(192, 256) == (0, 192, 32, 224) and gate_view(wide, "full") is wide
    # a person standing in the cropped-away margin is no person for the sample
    person = [[(10.0, 40.0 + 10 * k, 0.9) for k in range(6)] + [None] * 12]
    assert pose_quality(person, 4) is None and pose_quality(person, 4, centre_box(192, 256)) == "no_person"
    # a stamp in the top margin of a portrait photo: the edit is a no-op for the square cell
    portrait = np.ascontiguousarray(photo[:, :160])
    stamped = portrait.copy()
    stamped[:40, 40:120] = 255
    (edit,) = _one("edit_add_shape", portrait, {"overrides": {}}).values()
    assert edit.quality is None
    from annotators.quality import no_op_quality

    assert no_op_quality(gate_view(portrait), gate_view(stamped), 0.001, 4) == "no_op"
    assert no_op_quality(portrait, stamped, 0.001, 4) is None


def test_clip_iqa_loads_real_weights_only_and_filters_by_params(tmp_path, photo, flat):
    import json

    import open_clip
    import torch

    from core.weights import MissingWeightsError
    from annotators.image_quality import ImageQualityClip, clip_iqa_scores
    from mining.embed import OpenClipEmbedder

    name = "vicl-tiny-iqa-clip"
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    params = {"model_name": name, "pretrained": "test"}
    with pytest.raises(MissingWeightsError):
        ImageQualityClip(params, models_dir=tmp_path / "empty").load()
    maker = OpenClipEmbedder(name, "test")
    maker.load_random()
    (tmp_path / "models" / "open_clip").mkdir(parents=True)
    torch.save(maker.model.state_dict(), tmp_path / "models" / "open_clip" / f"{name}-test.bin")

    def run(extra):
        ann = ImageQualityClip({**params, **extra}, models_dir=tmp_path / "models")
        ann.load()
        return [o["image_quality_clip"] for o in ann.annotate([{"image": photo}, {"image": flat}], ["a", "b"])]

    scored = run({})
    assert all(0.0 <= o.meta["score"] <= 1.0 and o.quality is None and o.array is None for o in scored)
    assert [o.meta["score"] for o in scored] == [o.meta["score"] for o in run({})]  # deterministic
    assert [o.quality for o in run({"min_score": 1.0})] == ["low_quality", "low_quality"]
    good, bad = np.eye(2, dtype=np.float32)
    assert clip_iqa_scores(np.stack([good, bad]), np.stack([good, bad])).round(3).tolist() == [1.0, 0.0]
