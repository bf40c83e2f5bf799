"""The released Graph200K layout as a source (`layout: graph200k`): one column per node, taken as it is.

A small dataset of the release's schema (VisualCloze's processing.py names the columns) is built in
memory; vicl ingests it from Parquet and from `save_to_disk`, keeps its nodes as imported nodes of
the target image, adds its own (grayscale here), and exports samples and a Graph200K folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.catalog import Catalog
from pipelines.cli import run_stages
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params
from tests.subject_fixtures import VIEW, png_bytes, view_image

N = 6


def _map(k: int, node: str) -> np.ndarray:
    """A node's map: a distinct pattern per (image, node), as the release's JPEGs would be."""
    rng = np.random.default_rng([k, sum(map(ord, node))])
    return np.repeat(rng.integers(0, 256, (VIEW, VIEW, 1), dtype=np.uint8), 3, axis=2)


def graph200k_rows(n: int) -> list[dict]:
    rows = []
    for k in range(n):
        row = {"target": png_bytes(view_image(k, 0)), "ref": png_bytes(view_image(k, 1)),
               "description": {"item": f"thing {k}", "description_0": f"thing {k} on a table",
                               "description_1": f"thing {k} outside"},
               "quality_assessment": {"objectConsistency": 4, "imageQuality": 5, "compositeStructure": 5},
               "collection": "collection_1",
               "FillEdit_meta": {"name": f"new thing {k}", "description": "a new subject"},
               "qwen_2_5_meta": json.dumps([{"label": "thing", "bbox_2d": [1, 2, 30, 40]}])}
        for column in ("canny", "depth", "qwen_2_5_mask", "foreground", "DepthEdit", *[f"FillEdit_image_{i}" for i in
                                                                                    range(5)],
                       *[f"InstantStyle_{kind}_{i}" for kind in ("image", "ref") for i in range(3)]):
            row[column] = png_bytes(_map(k, column))
        rows.append(row)
    rows[-1]["ref"] = None  # a row without a reference view: its target is still an image with nodes
    rows[-1]["depth"] = b"not an image"  # a broken node: a failure row, the rest of the row goes on
    return rows


def _write(kind: str, root: Path) -> dict:
    import datasets
    import pyarrow as pa

    rows = graph200k_rows(N)
    if kind == "parquet":
        root.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), root / "train-00000.parquet")
        return {"kind": "parquet", "path": str(root / "*.parquet"), "layout": "graph200k"}
    images = [c for c in rows[0] if c not in ("description", "quality_assessment", "collection", "FillEdit_meta",
                                               "qwen_2_5_meta")]
    columns = {c: [r[c] for r in rows] for c in rows[0]}
    for c in images:  # the release's Image features; the broken node stays raw bytes in an Image struct
        columns[c] = [None if v is None else {"bytes": v, "path": None} for v in columns[c]]
    datasets.Dataset.from_dict(columns).cast(datasets.Features({
        **{c: datasets.Image() for c in images},
        "description": {k: datasets.Value("string") for k in ("item", "description_0", "description_1")},
        "quality_assessment": {k: datasets.Value("int64") for k in ("objectConsistency", "imageQuality",
                                                                     "compositeStructure")},
        "collection": datasets.Value("string"),
        "FillEdit_meta": {"name": datasets.Value("string"), "description": datasets.Value("string")},
        "qwen_2_5_meta": datasets.Value("string")})).save_to_disk(str(root))
    return {"kind": "hf_disk", "path": str(root), "layout": "graph200k"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("graph200k_source")
    params = small_params(root, sources=[_write("hf_disk", root / "hf")], annotators={"grayscale": {}},
                          sample={"samples_per_task": 3, "eval_fraction": 0.0},
                          export={"graph200k": True, "shard_size": 16}, mine={"enabled": False})
    results = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    return root, params, results


def test_the_release_s_nodes_are_imported_as_nodes_of_the_target(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    cat = Catalog.load(store)
    for node in ("canny", "depth", "mask", "foreground_mask", "DepthEdit", "FillEdit", "FillEdit_4",
                 "InstantStyle", "InstantStyle_ref_2"):
        assert cat.nodes[node].annotator == "import", node
    assert cat.nodes["gray"].annotator == "grayscale"  # vicl's own nodes beside the release's
    index = cat.node_index()
    targets = [r["view_0"] for r in store.records().values()]
    assert len(index) == 2 * N - 1 and len(targets) == N - 1  # the row without `ref` is no subject
    has = index.as_sets()
    assert has["canny"] == has["FillEdit_4"] and len(has["canny"]) == N  # the targets, never the refs
    assert len(has["depth"]) == N - 1 and has["gray"] == set(index.ids.to_pylist())
    cell = cat.read_cells([("canny", targets[0])])[("canny", targets[0])]
    meta = cat.read_cells([("FillEdit_1", targets[0])])[("FillEdit_1", targets[0])]["meta"]
    assert cell["format"] == "png" and json.loads(meta)["name"].startswith("new thing")
    failures = pq.read_table(Path(params.paths.out) / "failures.parquet").to_pylist()
    assert [(f["annotator"], f["reason"]) for f in failures] == [("import", "not_an_image")]
    assert results["ingest"]["failed"] == 0  # no input was lost: only one of its nodes


def test_imported_nodes_serve_tasks_and_the_graph200k_export(chain):
    root, params, results = chain
    per_task = results["sample"]["per_task"]
    for task in ("canny_to_image", "image_to_depth", "reference_to_image", "gray_to_image"):
        assert per_task.get(task, 0) > 0, (task, per_task)
    assert any(t.startswith("image_to_FillEdit") or "FillEdit" in t for t in per_task), per_task
    rows = [row for split in sorted((Path(params.paths.out) / "graph200k").glob("*/data.json"))
            for row in json.loads(split.read_text())]
    assert len(rows) == 2 * N - 1
    with_nodes = [r for r in rows if "canny" in r["condition"]]
    assert len(with_nodes) == N
    for row in with_nodes:
        cond = row["condition"]
        assert len(cond["FillEdit"]["image_path"]) == 5 and cond["FillEdit"]["name"].startswith("new thing")
        assert len(cond["InstantStyle"]["image_path"]) == len(cond["InstantStyle"]["style_path"]) == 3
        assert Path(cond["canny"]).is_file() and Path(cond["foreground"]).is_file()
    referenced = [r for r in with_nodes if "reference" in r["condition"]]
    assert len(referenced) == N - 1 and all(r["quality_assessment"]["objectConsistency"] == 4 for r in referenced)


def test_parquet_and_save_to_disk_give_the_same_store(tmp_path):
    from pipelines.params import parse_params
    from tests.test_edit_corpora import _ingest

    stores = {}
    for kind in ("parquet", "hf_disk"):
        source = _write(kind, tmp_path / kind)
        store = _ingest(parse_params({"ingest": {"sources": [source]}}), tmp_path / f"store-{kind}")
        imported = pq.read_table(next(store.imported_dir.glob("part-*.parquet")))
        stores[kind] = (store.records(), sorted(zip(imported["image_id"].to_pylist(),
                                                    imported["node_type"].to_pylist(),
                                                    imported["data"].to_pylist())))
    assert stores["parquet"] == stores["hf_disk"] and len(stores["parquet"][1]) == N * 16
