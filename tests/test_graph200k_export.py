"""The Graph200K export, read back by a reader written from VisualCloze's documented schema
(anchors.md §1.4): what its MyDataset / T2IItemProcessor need from each row, checked point by point."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.graph200k_export import (DEGRADATIONS, Options, clean_leftovers, image_row, rebase_export,
                                        visualcloze_task_dicts, write_split)

SIZE = 32


# --- a reader of the documented schema (not VisualCloze's code) ----------------------------------
class SchemaReader:
    """Opens a row's nodes the way VisualCloze's reader is documented to: every path straight from
    the working directory; foreground/background = target x (mask > 0.5); a style node gives
    (style reference, stylised) at one index of equal-length lists; FillEdit one of its paths."""

    def __init__(self, data_json: Path):
        self.rows = json.loads(Path(data_json).read_text())

    @staticmethod
    def check(row: dict, path: list[str]) -> bool:
        cond = row["condition"]
        for node in path:
            if node in DEGRADATIONS:
                continue
            if node in ("foreground", "background"):
                if "foreground" not in cond:
                    return False
            elif node == "reference":
                qa = row["quality_assessment"]
                if qa is None or qa["objectConsistency"] < 3:
                    return False
            elif node not in cond:
                return False
        return True

    @staticmethod
    def images(row: dict, node: str, rng: random.Random) -> list[np.ndarray]:
        cond = row["condition"]
        if node in ("target", "reference"):
            return [_open(cond[node])]
        if node in ("foreground", "background"):
            mask = _open(cond["foreground"], "L").astype(np.float32) / 255.0 > 0.5
            keep = mask if node == "foreground" else ~mask
            return [_open(cond["target"]) * keep[..., None]]
        if node in ("InstantStyle", "ReduxStyle"):
            d = cond[node]
            assert len(d["image_path"]) == len(d["style_path"]) > 0
            k = rng.randrange(len(d["style_path"]))
            return [_open(d["style_path"][k]), _open(d["image_path"][k])]
        if node == "FillEdit":
            return [_open(rng.choice(cond["FillEdit"]["image_path"]))]
        if node == "DepthEdit":
            assert isinstance(cond["DepthEdit"], str)
            return [_open(cond["DepthEdit"])]
        if node in DEGRADATIONS:
            return [_open(cond["target"])]  # the reader renders the degradation from the photo
        return [_open(cond[node])]

    def item(self, path: list[str], context_num: int, seed: int = 0) -> tuple[list[list[np.ndarray]], str]:
        """One item: `context_num` distinct rows that pass the check (an error where VisualCloze's
        reader would loop forever), their images, and the content prompt when the target is last."""
        rng = random.Random(seed)
        passing = [r for r in self.rows if self.check(r, path)]
        if len(passing) < context_num:
            raise LookupError(f"{path}: {len(passing)} rows pass, {context_num} needed (the reader would spin)")
        rows = rng.sample(passing, context_num)
        grid = [[im for node in path for im in self.images(r, node, rng)] for r in rows]
        prompt = ""
        if path[-1] == "target":
            d = rows[-1]["description"]
            prompt = d["item"] + " " + d["description_0"]
        return grid, prompt


def _open(path: str, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert(mode))


# --- a small store of cells, in memory ------------------------------------------------------------
def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG" if fmt == "jpg" else "PNG", **({"quality": 95} if fmt == "jpg" else {}))
    return buf.getvalue()


def _cell(arr: np.ndarray, fmt: str = "png", meta: dict | None = None) -> dict:
    return {"data": _encode(arr, fmt), "format": fmt, "meta": json.dumps(meta or {}),
            "width": arr.shape[1], "height": arr.shape[0]}


def _photo(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def make_cells(n: int = 6) -> dict[str, dict[str, dict]]:
    """{image_id: {node: cell}}: every image has a photo, canny and an online-style degradation;
    images 0-3 a binary foreground mask (and vicl's cut-outs); 0-2 a reference (scores 4, 5, 2);
    0-3 edits and styles; image 0 a caption, image 1 a Subjects200K description."""
    out = {}
    for i in range(n):
        iid = f"{i:02d}" + "ab" * 15
        photo = _photo(i)
        meta = {}
        if i == 1:
            meta = {"description": {"item": "red chair", "description_0": "a red chair in a hall",
                                    "description_1": "the same chair outdoors"}, "collection": "subjects200k"}
        if i < 3:
            meta["quality_assessment"] = {"objectConsistency": [4, 5, 2][i], "imageQuality": 5}
        cells = {"image": _cell(photo, "jpg", meta), "canny": _cell(((photo[..., 0] > 128) * 255).astype(np.uint8)),
                 "GaussianBlur": _cell(photo[::-1].copy())}
        if i < 4:
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[8:24, 4 + i:20 + i] = 255
            cells["foreground_mask"] = _cell(mask)
            cells["foreground"] = _cell(photo * (mask[..., None] > 0))
            cells["background"] = _cell(photo * (mask[..., None] == 0))
            cells["FillEdit"] = _cell(photo[:, ::-1].copy(), meta={
                "name": "dog", "description": "a dog instead",
                "outputs": [{"node": "FillEdit", "name": "dog", "description": "a dog instead"},
                            {"node": "FillEdit_1", "name": "cat", "description": "a cat instead"}]})
            cells["FillEdit_1"] = _cell(255 - photo, meta={"prompt": "a cat instead"})
            cells["DepthEdit"] = _cell(np.roll(photo, 3, axis=0))
            cells["InstantStyle"] = _cell(photo // 2)
            cells["InstantStyle_ref"] = _cell(np.full_like(photo, 40 * i))
            cells["InstantStyle_1"] = _cell(photo // 3)  # no reference of its own: left out
        if i < 3:
            cells["reference"] = _cell(np.roll(photo, 5, axis=1))
        if i == 0:
            cells["caption"] = {"data": b"", "format": "json", "meta": json.dumps({"text": "noise in a square"}),
                                "width": 0, "height": 0}
        out[iid] = cells
    return out


def export(root: Path, cells: dict[str, dict[str, dict]], opts: Options = Options(), split: str = "train",
           digest: str = "d0", fail_after: int | None = None) -> dict:
    ids = sorted(cells)
    nodes = sorted({n for c in cells.values() for n in c})
    present = {n: [n in cells[i] for i in ids] for n in nodes}
    calls = []

    def read(keys):
        calls.append(len(keys))
        if fail_after is not None and len(calls) > fail_after:
            raise RuntimeError("killed")
        return {(n, i): cells[i][n] for n, i in keys}

    return write_split(root, split, ids, present, read, opts, digest)


@pytest.fixture()
def exported(tmp_path):
    cells = make_cells()
    root = tmp_path / "graph200k"
    summary = export(root, cells, Options(batch_images=4))
    return root, cells, summary


# --- the points of issue 14 -------------------------------------------------------------------------
def test_rows_open_from_any_working_directory_with_target_and_binary_mask(exported, tmp_path, monkeypatch):
    root, cells, _ = exported
    monkeypatch.chdir(tmp_path)  # absolute paths: open from anywhere
    os.makedirs("elsewhere")
    monkeypatch.chdir("elsewhere")
    reader = SchemaReader(root / "train" / "data.json")
    assert [r["image_id"] for r in reader.rows] == sorted(cells)
    for row in reader.rows:
        cond = row["condition"]
        assert "target" not in row and os.path.isabs(cond["target"])
        # the photo's stored JPEG is written as it is
        assert Path(cond["target"]).read_bytes() == cells[row["image_id"]]["image"]["data"]
        assert set(row) == {"image_id", "quality_assessment", "description", "collection", "condition"}
        assert "background" not in cond
        for key, value in cond.items():
            for p in ([value] if isinstance(value, str) else value["image_path"] + value.get("style_path", [])):
                assert os.path.isabs(p) and Path(p).is_file() and Path(p).name.startswith(row["image_id"] + "_")
        if "foreground" in cond:
            mask = _open(cond["foreground"], "L")
            want = np.asarray(Image.open(io.BytesIO(cells[row["image_id"]]["foreground_mask"]["data"])))
            assert ((mask > 127) == (want > 127)).mean() > 0.98  # the mask, not vicl's cut-out
            fg, bg = SchemaReader.images(row, "foreground", random.Random(0))[0], \
                SchemaReader.images(row, "background", random.Random(0))[0]
            assert np.array_equal(fg + bg, _open(cond["target"]))


def test_a_mask_of_another_size_is_fitted_to_the_photo(tmp_path):
    cells = make_cells(3)
    for c in cells.values():  # a mask stored at half size
        mask = np.zeros((SIZE // 2, SIZE // 2), np.uint8)
        mask[4:12, 2:10] = 255
        c["foreground_mask"] = _cell(mask)
    export(tmp_path / "g", cells)
    row = SchemaReader(tmp_path / "g" / "train" / "data.json").rows[0]
    mask = _open(row["condition"]["foreground"], "L")
    assert mask.shape == (SIZE, SIZE) and ((mask > 127) == np.kron(np.pad(np.ones((8, 8)), ((4, 4), (2, 6))),
                                                                     np.ones((2, 2))).astype(bool)).mean() > 0.98
    assert SchemaReader.images(row, "background", random.Random(0))[0].shape == (SIZE, SIZE, 3)


def test_odd_sides_are_cropped_to_even_for_the_reader_s_mosaic_degradation():
    import io

    from PIL import Image

    from pipelines.graph200k_export import jpeg_bytes

    rgb = np.random.default_rng(0).integers(0, 256, (161, 121, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    for cell in ({"data": buf.getvalue(), "format": "jpg", "width": 121, "height": 161},
                 {"data": _cell(rgb)["data"], "format": "png", "width": 121, "height": 161}):
        assert Image.open(io.BytesIO(jpeg_bytes(cell, 95))).size == (120, 160)  # VisualCloze's CFA needs 2 x 2
    even = {"data": buf.getvalue()[:], "format": "jpg", "width": 120, "height": 160}
    assert jpeg_bytes(even, 95) is even["data"]  # an even stored JPEG is written as it is


def test_description_is_subjects200k_dict(exported):
    root, _, _ = exported
    rows = SchemaReader(root / "train" / "data.json").rows
    for row in rows:
        d = row["description"]
        assert isinstance(d, dict) and isinstance(d["item"], str) and isinstance(d["description_0"], str)
    assert rows[0]["description"] == {"item": "", "description_0": "noise in a square"}
    assert rows[1]["description"]["item"] == "red chair" and rows[1]["collection"] == "subjects200k"
    assert rows[1]["description"]["description_1"] == "the same chair outdoors"
    assert rows[4]["collection"] == "vicl"


def test_edit_and_style_forms_inside_condition(exported):
    root, _, _ = exported
    row = SchemaReader(root / "train" / "data.json").rows[0]
    cond = row["condition"]
    fill = cond["FillEdit"]
    assert [Path(p).name for p in fill["image_path"]] == [f"{row['image_id']}_FillEdit_image_{k}.jpg" for k in (0, 1)]
    assert fill["name"] == "dog" and fill["description"] == "a dog instead"
    assert fill["names"] == ["dog", "cat"] and fill["descriptions"] == ["a dog instead", "a cat instead"]
    assert isinstance(cond["DepthEdit"], str)
    style = cond["InstantStyle"]
    assert len(style["image_path"]) == len(style["style_path"]) == 1  # InstantStyle_1 had no reference
    assert Path(style["style_path"][0]).name == f"{row['image_id']}_InstantStyle_ref_0.jpg"
    for key in ("FillEdit_1", "InstantStyle_ref", "InstantStyle_1", "caption"):
        assert key not in cond and key not in row


def test_quality_assessment_and_reference_filter(exported):
    root, _, _ = exported
    rows = SchemaReader(root / "train" / "data.json").rows
    assert rows[0]["quality_assessment"] == {"objectConsistency": 4, "imageQuality": 5}
    assert "reference" in rows[0]["condition"] and "reference" in rows[1]["condition"]
    # score 2 < 3: kept for every other family, without its reference
    assert "reference" not in rows[2]["condition"] and rows[2]["condition"]["canny"]
    assert rows[2]["quality_assessment"] == {"objectConsistency": 0, "source_objectConsistency": 2,
                                             "imageQuality": 5}
    assert not list((root / "train" / "reference").glob(f"{rows[2]['image_id']}_*"))
    for row in rows[3:]:  # no reference: never sent to a reference family
        assert row["quality_assessment"] == {"objectConsistency": 0}
        assert not SchemaReader.check(row, ["reference", "target"])


def test_drop_row_and_unscored_reference_options():
    cells = make_cells()
    iid = sorted(cells)[2]
    assert image_row(iid, cells[iid], Options(quality_filter_action="drop_row"), "train")[0] is None
    unscored = {k: v for k, v in cells[iid].items()}
    unscored["image"] = {**unscored["image"], "meta": "{}"}
    row, files = image_row(iid, unscored, Options(), "train")
    assert "reference" not in row["condition"] and not any(f.startswith("reference/") for f in files)
    row, files = image_row(iid, unscored, Options(unscored_object_consistency=5), "train")
    assert row["condition"]["reference"] == f"train/reference/{iid}_reference.jpg"
    assert row["quality_assessment"]["objectConsistency"] == 5
    assert image_row(iid, {k: v for k, v in cells[iid].items() if k != "image"}, Options(), "train") == (None, {})


def test_task_list_is_visualcloze_stock_and_served_paths_build_items(exported):
    root, _, summary = exported
    stock = visualcloze_task_dicts()
    assert len(stock) == 12 and sum(len(t["image_list"]) for t in stock) == 129
    assert len({tuple(p) for t in stock for p in t["image_list"]}) == 129
    tasks = json.loads((root / "train" / "visualcloze_tasks.json").read_text())
    served = [p for t in tasks for p in t["image_list"]]
    reader = SchemaReader(root / "train" / "data.json")
    for family in stock:
        for path in family["image_list"]:
            n = sum(reader.check(r, path) for r in reader.rows)
            assert (path in served) == (n >= 3), (path, n)
    # canny / foreground / background -> target, canny -> InstantStyle, target -> InstantStyle, the two
    # edits, target -> canny, 32 restorations; no reference family (only 2 rows pass the score)
    assert summary["task_paths_served"] == len(served) == 3 + 1 + 1 + 2 + 1 + 32
    for t in tasks:
        assert set(t) == {"task_name", "sample_weight", "image_list"} and t["sample_weight"] == 1
    for path in served:
        grid, prompt = reader.item(path, 3, seed=len(path))
        assert len(grid) == 3 and all(len(r) == len(grid[0]) >= len(path) for r in grid)
        assert isinstance(prompt, str)
    with pytest.raises(LookupError):
        reader.item(["reference", "target"], 3)
    config = (root / "train" / "visualcloze.yaml").read_text()
    assert str((root / "train" / "data.json").resolve()) in config and "image_grid_graph200k" in config


def test_relative_mode_opens_from_the_readers_directory_and_rebases_after_a_move(tmp_path, monkeypatch):
    cells = make_cells(4)
    repo = tmp_path / "VisualCloze"  # the reader's working directory; the export lies at dataset/graph200k
    root = repo / "dataset" / "graph200k"
    export(root, cells, Options(paths="relative"))
    rows = json.loads((root / "train" / "data.json").read_text())
    assert rows[0]["condition"]["target"] == f"dataset/graph200k/train/target/{rows[0]['image_id']}_target.jpg"
    assert '"dataset/graph200k/train/data.json"' in (root / "train" / "visualcloze.yaml").read_text()
    monkeypatch.chdir(repo)
    reader = SchemaReader(Path("dataset/graph200k/train/data.json"))
    assert reader.item(["canny", "target"], 3)[0]
    moved = tmp_path / "b" / "moved"
    moved.parent.mkdir()
    shutil.move(str(root), str(moved))
    monkeypatch.chdir(tmp_path)
    assert rebase_export(moved, "absolute") == [moved.resolve() / "train" / "data.json"]
    reader = SchemaReader(moved / "train" / "data.json")
    assert reader.rows[0]["condition"]["target"] == str(moved.resolve() / "train" / "target" /
                                                        f"{reader.rows[0]['image_id']}_target.jpg")
    assert reader.item(["FillEdit", "target"], 3)[0]
    assert reader.rows[0]["condition"]["InstantStyle"]["style_path"][0].startswith(str(moved.resolve()))
    rebase_export(moved, "relative")
    assert json.loads((moved / "train" / "data.json").read_text()) == rows


def test_changed_inputs_rewrite_the_split_whole_and_atomically(tmp_path):
    cells = make_cells()
    root = tmp_path / "g"
    export(root, cells)

    def files(split_dir: Path) -> set[str]:
        return {str(p.relative_to(split_dir)) for p in split_dir.rglob("*") if p.is_file()}

    def referenced(split_dir: Path) -> set[str]:
        out = {"data.json", "visualcloze_tasks.json", "visualcloze.yaml", "export.json"}
        for row in json.loads((split_dir / "data.json").read_text()):
            for v in row["condition"].values():
                for p in [v] if isinstance(v, str) else v["image_path"] + v.get("style_path", []):
                    out.add(str(Path(p).relative_to(split_dir.resolve())))
        return out

    split = root / "train"
    assert files(split) == referenced(split)
    # the first image leaves and another one changes: nothing of theirs may remain
    gone = sorted(cells)[0]
    changed = dict(cells)
    del changed[gone]
    changed[sorted(cells)[3]] = {k: v for k, v in cells[sorted(cells)[3]].items() if k != "FillEdit_1"}
    before = (split / "data.json").read_text()
    # a killed rewrite leaves the previous split as it was
    with pytest.raises(RuntimeError):
        export(root, changed, Options(batch_images=2), digest="d1", fail_after=1)
    assert (split / "data.json").read_text() == before and list(root.glob(".tmp-*"))
    clean_leftovers(root)
    assert sorted(p.name for p in root.iterdir()) == ["train"]
    export(root, changed, digest="d1")
    assert files(split) == referenced(split)
    assert not [f for f in files(split) if gone in f]
    assert not (split / "FillEdit" / f"{sorted(cells)[3]}_FillEdit_image_1.jpg").exists()
    assert json.loads((split / "export.json").read_text())["digest"] == "d1"


def test_degradation_nodes_can_be_left_to_the_reader(tmp_path):
    summary = export(tmp_path / "g", make_cells(), Options(degradations=False))
    rows = SchemaReader(tmp_path / "g" / "train" / "data.json").rows
    assert all("GaussianBlur" not in r["condition"] for r in rows)
    assert not (tmp_path / "g" / "train" / "GaussianBlur").exists()
    assert summary["rows_per_task_path"]["GaussianBlur > target"] == 6  # rendered by the reader from target


def test_export_is_deterministic(tmp_path):
    cells = make_cells()
    a, b = tmp_path / "a", tmp_path / "b"
    export(a, cells, Options(paths="relative", batch_images=2))
    export(b, cells, Options(paths="relative", batch_images=5))
    for p in sorted((a / "train").rglob("*")):
        if p.is_file() and p.name != "export.json":
            assert p.read_bytes() == (b / "train" / p.relative_to(a / "train")).read_bytes(), p


# --- through the node store and its catalog --------------------------------------------------------
def test_store_export_rewrites_only_changed_splits(tmp_path, ray_local):
    """ingest -> annotate, then the export from the catalog: a stored map, a materialised and an online
    degradation; re-running skips, a new split assignment rewrites every split with no stale file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.cli import run_stages
    from pipelines.graph200k_export import export_graph200k
    from pipelines.store import NodeStore
    from tests.pipeline_fixtures import small_params

    params = small_params(tmp_path, count=8, annotators={"canny": {}, "degrade_GaussianBlur": {"online": True}})
    params.export.graph200k = True
    run_stages(("ingest", "annotate"), params, log=lambda *_: None)
    store = NodeStore(params.paths.store)
    root = tmp_path / "out" / "graph200k"
    first = export_graph200k(params, store, root)
    assert first["rewritten"] == ["train"] and first["per_split"] == {"train": 8}
    assert first["task_paths_served"] == {"train": 2 + 32}  # canny both ways, every restoration
    reader = SchemaReader(root / "train" / "data.json")
    assert {k for r in reader.rows for k in r["condition"]} == {"target", "canny", "GaussianBlur"}
    for path in (["canny", "target"], ["target", "canny"], ["GaussianBlur", "target"]):
        assert len(reader.item(path, 3)[0]) == 3
    assert export_graph200k(params, store, root)["rewritten"] == []
    ids = [r["image_id"] for r in reader.rows]
    splits = store.samples_path.parent / "splits.parquet"
    splits.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image_id": ids, "group": ids, "split": ["train"] * 5 + ["eval"] * 3}), splits)
    second = export_graph200k(params, store, root)
    assert second["rewritten"] == ["eval", "train"] and second["per_split"] == {"eval": 3, "train": 5}
    assert sorted(p.name for p in root.iterdir()) == ["eval", "train"]
    for split, want in (("train", ids[:5]), ("eval", ids[5:])):
        on_disk = {p.name.split("_")[0] for p in (root / split).rglob("*.jpg")}
        assert on_disk == set(want)


def test_generative_node_names_match_the_generative_annotators():
    from annotators.generative import nodes as gen
    from pipelines.graph200k_export import GENERATIVE_MAX, output_node, style_reference_node

    assert GENERATIVE_MAX == gen.MAX_OUTPUTS
    for base, n in gen.MAX_OUTPUTS.items():
        for k in range(n):
            assert output_node(base, k) == gen.output_node(base, k)
            assert style_reference_node(base, k) == gen.reference_node(base, k)
