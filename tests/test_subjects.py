"""Subjects200K-style data in: the pair split into two views, the `reference` node, subject splits,
the with-reference families, the Graph200K export's reference rows and the quality filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.catalog import Catalog
from pipelines.cli import run_stages
from core.images import decode_rgb
from core.grid import fit_cell
from core.node_types import resample_kind
from pipelines.params import IngestParams, RecordColumns, SourceParams
from pipelines.records import layout_of
from pipelines.sources import list_entries
from pipelines.splits import leakage_report
from pipelines.stages.ingest import ingest_entries
from pipelines.store import NodeStore
from pipelines.subjects import Subject, load_subjects, passes
from tests.pipeline_fixtures import small_params
from tests.subject_fixtures import pair_image, png_bytes, subject_dataset, view_image

N_SUBJECTS = 10
SCORES = [5, 4, 2, 5, 3, 1, 5, 4, 5, 3]  # subjects 2 and 5 fail objectConsistency >= 3


def _bytes(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_layout_cuts_the_pair_into_two_lossless_views():
    layout = layout_of("subjects200k")
    cols = RecordColumns()
    fields = {"image": {"bytes": _bytes(pair_image(3)), "path": None},
              "description": {"item": "mug", "description_0": "a", "description_1": "b", "category": "c"},
              "quality_assessment": {"objectConsistency": 4, "imageQuality": 5, "note": "text is dropped"},
              "collection": "collection_1"}
    record = layout.expand(fields, cols, None)
    assert [m.role for m in record.members] == ["view_0", "view_1"]
    for m, view in zip(record.members, (0, 1)):
        assert np.array_equal(decode_rgb(m.data), view_image(3, view))  # PNG: the exact pixels
    assert record.text == "mug" and record.record_id is None
    assert record.meta == {"description": fields["description"], "collection": "collection_1",
                           "quality_assessment": {"objectConsistency": 4, "imageQuality": 5}}
    # a named record id, and a struct given as a JSON string (a Parquet written by another tool)
    named = layout.expand({**fields, "sid": "s-17", "description": json.dumps(fields["description"])},
                          RecordColumns(record_id="sid"), None)
    assert named.record_id == "s-17" and named.meta["description"]["item"] == "mug"
    # no pair: an odd width, or bytes that are no image
    odd = layout.expand({**fields, "image": png_bytes(view_image(1, 0)[:, :63])}, cols, None)
    assert all(isinstance(m.data, Exception) and "not_a_pair" in str(m.data) for m in odd.members)
    junk = layout.expand({**fields, "image": b"not an image"}, cols, None)
    assert all(isinstance(m.data, Exception) for m in junk.members)


def test_parquet_and_save_to_disk_ingest_the_same_records(tmp_path):
    ds = subject_dataset(3, [5, 2, 4])
    ds.save_to_disk(str(tmp_path / "hf"))
    ds.to_parquet(str(tmp_path / "subjects.parquet"))
    tables = []
    for src in (SourceParams(kind="hf_disk", path=str(tmp_path / "hf"), layout="subjects200k"),
                SourceParams(kind="parquet", path=str(tmp_path / "subjects.parquet"), layout="subjects200k")):
        t = ingest_entries(src, list_entries(src, {}), IngestParams(sources=[src]), "fp")
        assert t.num_rows == 6 and t["error"].null_count == 6
        metas = [json.loads(m) for m in t["meta"].to_pylist()]
        tables.append(sorted((i, m["role"], m["record"], m["quality_assessment"]["objectConsistency"],
                              m["description"]["item"]) for i, m in zip(t["image_id"].to_pylist(), metas)))
    assert tables[0] == tables[1]
    assert len({r[2] for r in tables[0]}) == 3  # one record per row, two views each


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("subjects")
    subject_dataset(N_SUBJECTS, SCORES).save_to_disk(str(root / "hf"))
    params = small_params(
        root, sources=[{"kind": "hf_disk", "path": str(root / "hf"), "layout": "subjects200k"}],
        annotators={"canny": {}, "degrade_JPEG": {}},
        sample={"samples_per_task": 4, "eval_fraction": 0.3,
                "families": ["reference_to_image", "subject_extraction", "generation_with_reference",
                             "restoration_with_reference", "conditional_generation"]},
        export={"layouts": ["grid", "sequence"], "graph200k": True, "shard_size": 8})
    results = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    return root, params, results


def test_reference_node_is_the_other_view_of_a_passing_subject(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    subjects = load_subjects(store)
    assert len(subjects) == N_SUBJECTS and results["ingest"]["ok"] == 2 * N_SUBJECTS
    cat = Catalog.load(store)
    refs = cat.references()
    for s in subjects:
        assert refs[s.views[0]] == s.views[1] and refs[s.views[1]] == s.views[0]
        assert s.name.startswith("thing ") and s.quality["objectConsistency"] in SCORES
    # the catalog's mask: every complete record; the cell: the other view's image cell
    assert cat.node_index().as_sets()["reference"] == {v for s in subjects for v in s.views}
    a, b = subjects[0].views
    cells = cat.read_cells([("reference", a), ("image", b)])
    assert cells[("reference", a)]["data"] == cells[("image", b)]["data"]
    # the samples use only passing subjects' views as references
    samples = pq.read_table(store.samples_path).to_pylist()
    passing = {v for s in subjects if passes(s.quality, {"objectConsistency": 3}) for v in s.views}
    failing = {v for s in subjects for v in s.views} - passing
    used = {i for s in samples for n, i in zip(s["cell_nodes"], s["cell_ids"]) if n == "reference"}
    assert used and used <= passing and not used & failing


def test_with_reference_families_have_samples_and_reference_cells_are_the_other_view(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    per_task = results["sample"]["per_task"]
    for task in ("reference_to_image", "image_to_reference", "reference_and_canny_to_image",
                 "reference_and_JPEG_to_image"):
        assert per_task.get(task, 0) > 0, (task, per_task)
    from core.sample_reader import iter_samples

    cat = Catalog.load(store)
    refs = cat.references()
    checked = 0
    for tar in sorted(Path(params.paths.out).glob("shards_seq/*/*/*.tar")):
        for s in iter_samples(tar):
            record = s.record
            for c in record["cells"]:
                if c["node"] != "reference":
                    continue
                other = cat.read_cells([("image", refs[c["image_id"]])])[("image", refs[c["image_id"]])]
                want = fit_cell(decode_rgb(other["data"]), (record["cell_height"], record["cell_width"]),
                                resample_kind("reference"))
                got = decode_rgb(s.images[f"r{c['row']}c{c['col']}.png"])
                assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
                checked += 1
    assert checked > 0


def test_a_subject_never_spans_two_splits(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    t = pq.read_table(store.samples_dir / "splits.parquet")
    splits = dict(zip(t["image_id"].to_pylist(), t["split"].to_pylist()))
    subjects = load_subjects(store)
    assert {len({splits[v] for v in s.views}) for s in subjects} == {1}
    assert {splits[v] for s in subjects for v in s.views} == {"train", "eval"}  # both splits are used
    leakage = json.loads((store.samples_dir / "leakage.json").read_text())
    assert leakage["subjects_checked"] >= 8 and leakage["subjects_shared_across_splits"] == 0
    # the check itself counts a subject whose two views sit in samples of both splits
    s = subjects[0]
    crossed = leakage_report(["train", "eval"], [[s.views[0]], [s.views[1]]], ["a", "b"], [],
                             np.zeros((0, 8), np.uint8), grouping="test",
                             subject_of={v: x.record for x in subjects for v in x.views})
    assert crossed["subjects_shared_across_splits"] == 1 and crossed["shared_subjects"] == [s.record]


def test_graph200k_export_writes_the_reference_and_the_source_scores(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    subjects = {v: (s, k) for s in load_subjects(store) for k, v in enumerate(s.views)}
    rows = [r for split in ("train", "eval")
            for r in json.loads((Path(params.paths.out) / "graph200k" / split / "data.json").read_text())]
    assert len(rows) == 2 * N_SUBJECTS
    with_reference = 0
    for row in rows:
        subject, view = subjects[row["image_id"]]
        score = subject.quality["objectConsistency"]
        assert row["collection"] == "collection_2" and row["description"]["item"] == subject.name
        assert row["description"]["description_0"].endswith("on a table" if view == 0 else "in a garden")
        if score >= 3:
            assert row["quality_assessment"]["objectConsistency"] == score
            ref = Path(row["condition"]["reference"])
            assert ref.is_file() and ref.name == f"{row['image_id']}_reference.jpg"
            with_reference += 1
        else:  # below Graph200K's filter: the row keeps its nodes, not its reference
            assert "reference" not in row["condition"] and row["quality_assessment"]["objectConsistency"] == 0
    assert with_reference == 2 * sum(s >= 3 for s in SCORES)


def test_a_changed_source_rewrites_the_export_with_no_stale_file(chain):
    """Runs last: it replaces the dataset with fewer subjects (the module's chain ends here)."""
    root, params, results = chain
    import shutil

    store = NodeStore(params.paths.store)
    before = {v for s in load_subjects(store) for v in s.views}
    shutil.rmtree(root / "hf")
    subject_dataset(N_SUBJECTS - 3, SCORES[:N_SUBJECTS - 3]).save_to_disk(str(root / "hf"))
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    after = {v for s in load_subjects(store) for v in s.views}
    assert len(after) == 2 * (N_SUBJECTS - 3) and after < before
    out = Path(params.paths.out) / "graph200k"
    rows = [r for split in ("train", "eval") if (out / split).is_dir()
            for r in json.loads((out / split / "data.json").read_text())]
    assert {r["image_id"] for r in rows} == after
    files = {p.name.split("_", 1)[0] for p in out.glob("*/*/*.jpg")}
    assert files == after  # every file is of a live image: none of the removed subjects is left
    samples = pq.read_table(store.samples_path).to_pylist()
    assert {i for s in samples for i in s["cell_ids"]} <= after


def test_quality_filter_needs_every_score_given_and_high_enough():
    rule = {"objectConsistency": 3}
    assert passes({"objectConsistency": 3, "imageQuality": 1}, rule)
    assert not passes({"objectConsistency": 2}, rule) and not passes({"imageQuality": 5}, rule)
    assert not passes({"objectConsistency": True}, rule)  # a flag is no score
    assert passes({}, {})  # an empty filter keeps every subject


def test_the_sample_stage_filter_keeps_only_passing_views_in_the_reference_mask():
    import pyarrow as pa

    from pipelines.catalog import NodeIndex
    from pipelines.catalog import restrict_reference
    from pipelines.subjects import reference_map

    ids = pa.array(["a0", "a1", "b0", "b1", "c0"], pa.string())
    masks = {"image": np.ones(5, bool), "reference": np.array([1, 1, 1, 1, 0], bool)}
    index = NodeIndex(ids, pa.array([""] * 5, pa.string()), masks)
    kept = restrict_reference(index, reference_map([Subject("B", ("b0", "b1"))]))
    assert kept.as_sets()["reference"] == {"b0", "b1"} and kept.as_sets()["image"] == set(ids.to_pylist())
    assert index.as_sets()["reference"] == {"a0", "a1", "b0", "b1"}  # the catalog's own index is unchanged
