"""Samples that mean what they say (issue 22): quadruplets whose two pairs share their transform,
rows of a synthetic edit task that share it too, edited corpus images never used as photos, and a
task mix that keeps edits to a bounded share (PICO: diversity before volume)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from skimage import data

from annotators.synthetic_edits import apply_edit, transform_key
from pipelines.edit_quadruplets import label_quadruplets
from pipelines.sampling import sample, task_rng
from pipelines.sampling_params import SamplerParams
from pipelines.task_mix import apply_budget, bounded_total, water_fill
from pipelines.tasks import Task
from tests.pipeline_fixtures import shard_records, small_params, write_params


def test_transform_keys_tell_opposite_edits_apart_and_ignore_strength():
    photo = data.astronaut()[:64, :64]

    def key(family, **overrides):
        _, _, params = apply_edit(family, photo, seed=3, **overrides)
        return transform_key(family, params)

    assert key("flip", axis="horizontal") != key("flip", axis="vertical")
    assert key("hue_rotate", degrees=60) != key("hue_rotate", degrees=300)
    assert key("hue_rotate", degrees=60) == key("hue_rotate", degrees=60)
    assert key("temperature", direction="warmer", amount=10) != key("temperature", direction="cooler", amount=10)
    assert key("rotate", direction="clockwise", degrees=10) == key("rotate", direction="clockwise", degrees=30)
    assert key("add_shape", colour="red", shape="circle", position="centre") != \
        key("add_shape", colour="blue", shape="circle", position="centre")
    assert key("sepia", strength=50) == key("sepia", strength=100) == "edit_sepia"  # a magnitude only


def _pair(k: int, axis: str, source: str) -> dict:
    return {"pair_id": f"p{k:02d}", "transform_key": f"edit_flip/axis={axis}", "instruction": f"flip {axis}",
            "origin": "synthetic_edit", "source_node": "image", "source_image": source,
            "edited_node": "edit_flip", "edited_image": source}


def test_label_pairs_form_quadruplets_only_within_one_key_and_one_split():
    pairs = [_pair(k, "horizontal" if k % 2 else "vertical", f"img{k:02d}") for k in range(20)]
    split = {f"img{k:02d}": "eval" if k % 5 == 0 else "train" for k in range(20)}
    out = label_quadruplets(pairs, split.get, 0)
    by_id = {p["pair_id"]: p for p in pairs}
    count = 0
    for split_name, subtasks in out.items():
        for key, quads in subtasks.items():
            for q in quads:
                a, b = (by_id[i] for i in q["scores"]["pair_ids"])
                assert a["transform_key"] == b["transform_key"] == key == q["scores"]["transform_key"]
                assert split[a["source_image"]] == split[b["source_image"]] == split_name
                assert a["source_image"] != b["source_image"]
                count += 1
    assert count >= 16  # each pair is a query once in its (split, key) cycle
    assert out == label_quadruplets(pairs, split.get, 0)  # seeded
    # near-duplicate sources never pair: all in one group, no quadruplet
    assert not label_quadruplets(pairs, split.get, 0, group_of=lambda image_id: 0)


def test_rows_of_a_synthetic_edit_task_share_the_transform_key():
    ids = [f"img{k:02d}" for k in range(30)]
    index = {"image": set(ids), "edit_flip": set(ids)}
    transforms = {("edit_flip", i): f"edit_flip/axis={'horizontal' if k % 3 else 'vertical'}"
                  for k, i in enumerate(ids)}
    task = Task("image_to_edit_flip", ("image", "edit_flip"), "synthetic_editing")
    params = SamplerParams(samples_per_task=40, rows={3: 1.0}, eval_fraction=0.0)
    out = sample(index, [task], params, transforms=transforms)
    assert len(out) == 40
    for s in out:
        keys = {transforms[("edit_flip", i)] for i in s["image_ids"]}
        assert len(keys) == 1 and json.loads(s["scores"]) == {"pool_key": sorted(keys)}


def test_water_fill_cuts_the_largest_first_and_the_budget_bounds_the_share():
    assert water_fill({"a": 10, "b": 2, "c": 5}, 9) == {"a": 4, "b": 2, "c": 3}
    assert water_fill({"a": 3, "b": 3}, 10) == {"a": 3, "b": 3}
    assert water_fill({"a": 5, "b": 5}, 0) == {"a": 0, "b": 0}
    counts = apply_budget({"graph1": 6, "graph2": 6, "mined/x": 6, "mined/y": 6, "mined/z": 40},
                          {"mined/x", "mined/y", "mined/z"}, 0.25)
    assert counts["graph1"] == counts["graph2"] == 6 and sum(counts[k] for k in counts if k.startswith("mined")) == 4
    assert min(counts["mined/x"], counts["mined/y"], counts["mined/z"]) >= 1  # every edit sub-task keeps one
    assert apply_budget({"mined/x": 50}, {"mined/x"}, 0.25) == {"mined/x": 50}  # nothing else to crowd out
    # exact arithmetic: 0.45 / 0.55 * 33 is 26.999... in floats, the budget 27 (float noise never decides)
    assert bounded_total(100, 33, 0.45) == 27


def _edit_corpus(root: Path, n: int) -> dict:
    """A Parquet edit corpus of flips of real photo crops, horizontal and vertical in turn, with the
    instruction each flip says."""
    import pyarrow as pa

    from core.images import encode_png

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rows = []
    for k in range(n):
        photo = photos[k % len(photos)]
        crop = np.ascontiguousarray(photo[20 + 9 * k:20 + 9 * k + 80, 30 + 7 * k:30 + 7 * k + 80])
        axis = "horizontal" if k % 2 else "vertical"
        edited, text, _ = apply_edit("flip", crop, seed=k, axis=axis)
        rows.append({"source": encode_png(crop), "edited": encode_png(edited), "instruction": text})
    root.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "edits.parquet")
    return {"kind": "parquet", "path": str(root / "edits.parquet"), "layout": "edit_pairs"}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """`vicl run` on scikit-image photo crops, an edit corpus of flips (horizontal and vertical in
    turn) and the synthetic flip, with the Graph200K export: what a model would learn from."""
    from pipelines.catalog import Catalog
    from pipelines.cli import main
    from pipelines.stages.sample import node_meta
    from pipelines.store import NodeStore

    root = tmp_path_factory.mktemp("photos_and_corpus")
    corpus = _edit_corpus(root / "corpus", 12)
    params = small_params(root, sources=[{"kind": "embedded", "count": 30, "size": 96}, corpus],
                          annotators={"canny": {}, "grayscale": {}, "edit_flip": {}},
                          sample={"samples_per_task": 6, "eval_fraction": 0.0, "rows": {2: 0.5, 3: 0.5}},
                          export={"graph200k": True, "graph200k_paths": "relative"})
    assert main(["run", "--params", write_params(root, params)]) == 0
    store = NodeStore(root / "store")
    records = store.records()
    return {"root": root, "store": store, "records": records, "shards": shard_records(root / "out"),
            "edited": {roles["edited"]: r for r, roles in records.items()},
            "flips": node_meta(Catalog.load(store), "edit_flip")}


@pytest.mark.slow
def test_edit_quadruplets_and_edit_rows_share_their_transform(build):
    flips, shards = build["flips"], build["shards"]
    checked = 0
    for rec in shards:
        cells = [(c["node"], c["image_id"]) for c in rec["cells"]]
        flip_cells = [i for n, i in cells if n == "edit_flip"]
        if rec["task"] == "mined_edit" and len(flip_cells) == 2 or "edit_flip" in rec["columns"]:
            assert len({flips[i]["params"]["axis"] for i in flip_cells}) == 1, rec  # one axis in every row
            checked += len(flip_cells) > 1
        elif rec["task"] == "mined_edit":  # corpus pairs: the axis their generator wrote into the instruction
            axes = [{a for a in ("horizontal", "vertical") if a in text} for text in rec["scores"]["instructions"]]
            assert axes[0] == axes[1] and len(axes[0]) == 1, rec["scores"]
            checked += 1
    assert checked >= 4


@pytest.mark.slow
def test_edited_images_are_never_photos(build):
    edited, records = build["edited"], build["records"]
    assert len(edited) == 12
    for rec in build["shards"]:
        cells = [(c["node"], c["image_id"]) for c in rec["cells"]]
        if rec["task"] != "mined_edit":
            assert not {i for _, i in cells} & set(edited), rec["task"]  # no edited image as a photo
            continue
        for (src_node, src), (ed_node, ed) in (cells[:2], cells[2:]):
            assert src not in edited  # an edited image is never the source of a pair
            if ed in edited:  # ... and only the edited side of its own record
                assert records[edited[ed]]["source"] == src and src_node == ed_node == "image"
    data_rows = json.loads((build["root"] / "out" / "graph200k" / "train" / "data.json").read_text())
    assert data_rows and not [r for r in data_rows if any(i in json.dumps(r) for i in edited)]


@pytest.mark.slow
def test_edits_stay_within_the_budget_and_counts_mean_what_they_say(build):
    families = [rec["family"] for rec in build["shards"] if rec["split"] == "train"]
    edits = sum(f in ("mined_editing", "synthetic_editing") for f in families)
    assert 0 < edits <= 0.25 * len(families) + 1e-9
    summary = json.loads((build["store"].samples_dir / "inputs.json").read_text())["summary"]
    assert summary["samples_per_task"] == {"train": 6, "eval": 1}
    assert summary["mix"]["per_family"]["train"] == dict(sorted(Counter(families).items()))
    mined = json.loads((build["store"].mined_dir / "mined.json").read_text())
    assert mined["labelled_pairs"] > 0 and mined["pairs_by_origin"]["corpus"] == 12
    pairing = summary["edit_pairing"]
    assert pairing["synthetic_edit"] == {"samples": pairing["synthetic_edit"]["samples"], "pairing": "label",
                                         "transform_agreement": 1.0}


def test_the_record_carries_the_scores_that_admitted_each_cell(tmp_path):
    """A detector's own scores (node meta `confidence`) reach the sample record as `gate_scores`, so a
    user can set a stricter threshold on the exported data without rebuilding."""
    import pyarrow as pa

    from core.images import encode_png
    from pipelines.sampling_params import ExportParams
    from pipelines.shards import CellCache, assemble
    from pipelines.stages.export import load_cells
    from pipelines.store import NODE_SCHEMA, write_table

    png = encode_png(data.astronaut()[:32, :32])
    rows = [{"image_id": "a", "node_type": node, "data": png, "format": "png", "width": 32, "height": 32,
             "meta": json.dumps(meta), "annotator": "x", "annotator_version": "1", "params_hash": "h",
             "seconds": 0.0, "error": None, "quality": None}
            for node, meta in (("image", {}), ("openpose", {"confidence": {"person_score": 0.81}}))]
    write_table(pa.Table.from_pylist(rows, schema=NODE_SCHEMA), tmp_path / "part-0.parquet")
    s = {"key": "train_000000000", "split": "train", "task": "image_to_openpose", "family": "dense_prediction",
         "columns": ["image", "openpose"], "image_ids": ["a"]}
    cells = load_cells([s], [("image", "a", "part-0.parquet"), ("openpose", "a", "part-0.parquet")], {}, (),
                       str(tmp_path))
    record = json.loads(assemble(s, CellCache(cells), ExportParams(cell_size=32))["json"])
    assert record["gate_scores"] == {"openpose/a": {"person_score": 0.81}}


@pytest.mark.slow
def test_report_shows_the_task_mix_and_the_quadruplets_with_their_instructions(build, tmp_path):
    from pipelines.params import parse_params
    from pipelines.report import write_report

    params = parse_params({"paths": {"store": str(build["store"].root), "out": str(tmp_path / "out")}})
    page = write_report(params, build["store"]).read_text()
    data_json = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    edits = data_json["edits"]
    assert edits["mix"]["per_family"]["train"] and edits["edit_pairing"]["synthetic_edit"]["pairing"] == "label"
    assert edits["gallery"] and all(len(e["instructions"]) == 2 for e in edits["gallery"])
    first = edits["gallery"][0]
    assert (tmp_path / "out" / "report" / first["file"]).is_file()
    assert "Task mix" in page and first["instructions"][1] in page and "Edit quadruplets" in page
