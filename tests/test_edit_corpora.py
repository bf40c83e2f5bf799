"""Edit corpora as ingest sources (`layout: edit_pairs`): every corpus kind, bad pairs as failure rows,
mining from the store's records, mined quadruplets in the shards, and the stage outputs as one set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.images import content_id, encode_png
from pipelines.params import parse_params
from pipelines.stages.ingest import ingest_part, plan_ingest
from pipelines.store import NodeStore, part_name, write_table
from tests.pipeline_fixtures import shard_records, small_params, write_params

EDITS = {
    "invert": ("invert the colours", lambda im: 255 - im),
    "mirror": ("mirror the photo left to right", lambda im: np.ascontiguousarray(im[:, ::-1])),
    "grey": ("turn it black and white", lambda im: np.repeat(im.mean(2, keepdims=True), 3, 2).astype(np.uint8)),
}


def _crops(n: int, seed: int) -> list[np.ndarray]:
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        photo = photos[k % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - 120), rng.integers(0, photo.shape[1] - 120)
        out.append(np.ascontiguousarray(photo[y:y + 96, x:x + 96]))
    return out


def make_pairs(per_family: int, seed: int = 0) -> list[dict]:
    """(source PNG, edited PNG, instruction) pairs: `per_family` crops under each edit."""
    rows = []
    for f, (text, fn) in enumerate(EDITS.values()):
        for crop in _crops(per_family, seed * 100 + f):
            rows.append({"source": encode_png(crop), "edited": encode_png(fn(crop)), "instruction": text})
    return rows


def _ingest(params, root: Path) -> NodeStore:
    """Ingest's pure core in-process (no Ray): the listing's parts, written as the stage writes them."""
    store = NodeStore(root)
    listing, parts, fingerprint = plan_ingest(params.ingest, store)
    for part, (k, entries) in sorted(parts.items()):
        images, imported = ingest_part(params.ingest.sources[k], entries, params.ingest, fingerprint)
        if imported.num_rows:
            write_table(imported, store.imported_dir / part_name(part))
        write_table(images, store.images_dir / part_name(part))
    write_table(listing, store.images_dir / "listing.parquet")
    (store.images_dir / "ingest.json").write_text(json.dumps({"fingerprint": fingerprint,
                                                              "part_order": sorted(parts)}))
    return store


def _pair_set(store: NodeStore) -> set[tuple[str, str]]:
    return {(roles["source"], roles["edited"]) for roles in store.records().values()}


def test_every_corpus_kind_gives_the_same_pairs_with_content_ids(tmp_path):
    import datasets
    import webdataset as wds

    pairs = make_pairs(3)
    want = {(content_id(r["source"]), content_id(r["edited"])) for r in pairs}
    for k, r in enumerate(pairs):  # folder of pair folders
        d = tmp_path / "folder" / f"pair{k:03d}"
        d.mkdir(parents=True)
        (d / "source.png").write_bytes(r["source"])
        (d / "edited.png").write_bytes(r["edited"])
        (d / "instruction.txt").write_text(r["instruction"] + "\n")
    (tmp_path / "pq").mkdir()  # parquet with the corpus' own column names, bytes
    table = pa.table({"in": [r["source"] for r in pairs], "out": [r["edited"] for r in pairs],
                      "edit": [r["instruction"] for r in pairs]})
    pq.write_table(table.slice(0, 4), tmp_path / "pq" / "a.parquet")
    pq.write_table(table.slice(4), tmp_path / "pq" / "b.parquet")
    (tmp_path / "paths" / "img").mkdir(parents=True)  # parquet with paths relative to the file
    for k, r in enumerate(pairs):
        (tmp_path / "paths" / "img" / f"{k}s.png").write_bytes(r["source"])
        (tmp_path / "paths" / "img" / f"{k}e.png").write_bytes(r["edited"])
    pq.write_table(pa.table({"source": [f"img/{k}s.png" for k in range(len(pairs))],
                             "edited": [f"img/{k}e.png" for k in range(len(pairs))],
                             "instruction": [r["instruction"] for r in pairs]}), tmp_path / "paths" / "p.parquet")
    (tmp_path / "wds").mkdir()
    with wds.TarWriter(str(tmp_path / "wds" / "shard-000000.tar")) as sink:
        for k, r in enumerate(pairs):
            sink.write({"__key__": f"p{k:04d}", "src.png": r["source"], "tgt.png": r["edited"],
                        "txt": r["instruction"]})
    feats = datasets.Features({"input": datasets.Image(), "edited": datasets.Image(),
                               "prompt": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"input": [{"bytes": r["source"], "path": None} for r in pairs],
                                     "edited": [{"bytes": r["edited"], "path": None} for r in pairs],
                                     "prompt": [r["instruction"] for r in pairs]}, features=feats)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    kinds = {
        "folder": {"kind": "folder", "path": str(tmp_path / "folder")},
        "parquet": {"kind": "parquet", "path": str(tmp_path / "pq" / "*.parquet"),
                    "columns": {"source": "in", "edited": "out", "instruction": "edit"}},
        "paths": {"kind": "parquet", "path": str(tmp_path / "paths" / "p.parquet")},
        "webdataset": {"kind": "webdataset", "path": str(tmp_path / "wds" / "*.tar"),
                       "columns": {"source": "src", "edited": "tgt", "instruction": "txt"}},
        "hf_disk": {"kind": "hf_disk", "path": str(tmp_path / "hf"), "split": "train",
                    "columns": {"source": "input", "instruction": "prompt"}},
    }
    record_ids = None
    for name, source in kinds.items():
        params = parse_params({"ingest": {"sources": [{**source, "layout": "edit_pairs"}], "part_size": 5}})
        store = _ingest(params, tmp_path / f"store-{name}")
        assert _pair_set(store) == want, name
        assert store.failures([]).num_rows == 0, name
        # no named id: the pair's content names it, the same in every kind (corpora never collide)
        ids = sorted(store.records())
        assert record_ids is None or ids == record_ids, name
        record_ids = ids
    r = pairs[0]
    assert content_id(f"{content_id(r['source'])}\n{content_id(r['edited'])}\n{r['instruction']}".encode()) \
        in record_ids
    with pytest.raises(ValueError, match="split"):
        _ingest(parse_params({"ingest": {"sources": [{**kinds["hf_disk"], "split": None, "layout": "edit_pairs"}]}}),
                tmp_path / "store-nosplit")


def _bad_corpus(root: Path, pairs: list[dict]) -> dict:
    """A Parquet corpus of image paths with one escaping path, one duplicate pair and one corrupt image."""
    (root / "img").mkdir(parents=True)
    (root.parent / "secret.png").write_bytes(pairs[0]["source"])
    rows = []
    for k, r in enumerate(pairs):
        (root / "img" / f"{k}s.png").write_bytes(r["source"])
        (root / "img" / f"{k}e.png").write_bytes(r["edited"])
        rows.append({"before": f"img/{k}s.png", "after": f"img/{k}e.png", "text": r["instruction"]})
    (root / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    rows += [{"before": "../secret.png", "after": "img/0e.png", "text": "escape"},
             dict(rows[1]),  # the same pair again
             {"before": "img/broken.png", "after": "img/2e.png", "text": "corrupt"}]
    pq.write_table(pa.Table.from_pylist(rows), root / "pairs.parquet")
    return {"kind": "parquet", "path": str(root / "pairs.parquet"), "layout": "edit_pairs",
            "columns": {"source": "before", "edited": "after", "instruction": "text"}}


def _hf_corpus(root: Path, pairs: list[dict]) -> dict:
    import datasets

    feats = datasets.Features({"source": datasets.Image(), "edited": datasets.Image(),
                               "instruction": datasets.Value("string")})
    datasets.Dataset.from_dict({"source": [{"bytes": r["source"], "path": None} for r in pairs],
                                "edited": [{"bytes": r["edited"], "path": None} for r in pairs],
                                "instruction": [r["instruction"] for r in pairs]},
                               features=feats).save_to_disk(str(root))
    return {"kind": "hf_disk", "path": str(root), "layout": "edit_pairs"}


def test_vicl_run_mines_two_corpus_kinds_with_bad_items_as_failure_rows(tmp_path, capsys):
    from pipelines.cli import main

    pairs = make_pairs(4, seed=1)
    sources = [_bad_corpus(tmp_path / "corpus_pq", pairs[:6]), _hf_corpus(tmp_path / "corpus_hf", pairs[6:]),
               {"kind": "embedded", "count": 12, "size": 96}]
    params = small_params(tmp_path, sources=sources, annotators={"canny": {}},
                          mine={"embed": {"backend": "ray"}, "kmeans": {"clusters": {"c": 0.5, "k_min": 2}}},
                          sample={"eval_fraction": 0.25})
    assert main(["run", "--params", write_params(tmp_path, params)]) == 0
    out = tmp_path / "out"
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    reasons = {(Path(f["source"].split("#")[0]).parent.name, f["reason"]) for f in failures}
    assert reasons == {("corpus_pq", "unsafe_path"), ("corpus_pq", "duplicate_pair"),
                       ("corpus_pq", "decode_error")}, failures
    mined = json.loads((tmp_path / "store" / "mined" / "mined.json").read_text())
    assert mined["pairs"] == len(pairs) and mined["pairs_by_origin"] == {"corpus": len(pairs)}
    records = [r for r in shard_records(out) if r["task"] == "mined_edit"]
    quads = pq.read_table(tmp_path / "store" / "mined" / "quadruplets.parquet")
    assert records and len(records) <= quads.num_rows
    corpus_images = {i for roles in NodeStore(tmp_path / "store").records().values() for i in roles.values()}
    for r in records:
        assert (r["rows"], r["cols"]) == (2, 2) and r["target_cell"] == {"row": 1, "col": 1}
        assert {c["image_id"] for c in r["cells"]} <= corpus_images  # A, A', B, B' are store images
        assert set(r["scores"]) == {"cluster", "cos_delta", "cos_text", "cos_visual", "instructions", "origins",
                                    "pair_ids", "pairing"}
        if r["instruction"]["task"]:  # kept with sample.instructions.task_keep (0.8), else dropped
            assert r["scores"]["instructions"][0] in r["instruction"]["text"]
    assert any(r["scores"]["instructions"][0] in r["instruction"]["text"] for r in records)
    leakage = json.loads((out / "leakage.json").read_text())
    assert leakage["eval_samples_sharing_an_image_with_train"] == 0
    assert leakage["eval_samples_with_near_duplicate_in_train"] == 0
    splits = pq.read_table(tmp_path / "store" / "samples" / "splits.parquet").to_pylist()
    split_of = {r["image_id"]: r["split"] for r in splits}
    for roles in NodeStore(tmp_path / "store").records().values():  # a pair's images share a split
        assert split_of[roles["source"]] == split_of[roles["edited"]]

    # mining switched off: the next build has no mined task, and no stale quadruplets stay behind
    off = params.model_copy(update={"mine": params.mine.model_copy(update={"enabled": False})})
    assert main(["run", "--params", write_params(tmp_path, off)]) == 0
    assert not [r for r in shard_records(out) if r["task"] == "mined_edit"]
    assert not (tmp_path / "store" / "mined" / "quadruplets.parquet").exists()


def test_mining_without_pairs_is_one_line_and_an_empty_set(tmp_path, ray_local):
    from pipelines.stages.annotate import run_annotate
    from pipelines.stages.ingest import run_ingest
    from pipelines.stages.mine import run_mine_stage

    params = small_params(tmp_path, count=8, annotators={"grayscale": {}})
    store = NodeStore(params.paths.store)
    run_ingest(params, store)
    run_annotate(params, store)
    lines = []
    assert run_mine_stage(params, store, log=lines.append) == {"pairs": 0, "pairs_by_origin": {}, "labelled_pairs": 0,
                                                               "transform_keys": 0, "quadruplets": 0}
    assert len(lines) == 1 and "no edit pairs" in lines[0] and "layout: edit_pairs" in lines[0]
    assert not (store.mined_dir / "quadruplets.parquet").exists()


def test_a_crash_between_sample_outputs_keeps_the_previous_complete_set(tmp_path, ray_local, monkeypatch):
    from pipelines.stages import sample as sample_stage
    from pipelines.stages.annotate import run_annotate
    from pipelines.stages.ingest import run_ingest

    params = small_params(tmp_path, count=12, mine={"enabled": False})
    store = NodeStore(params.paths.store)
    run_ingest(params, store)
    run_annotate(params, store)
    sample_stage.run_sample(params, store)
    before = {p.name: p.read_bytes() for p in store.samples_dir.iterdir()}
    changed = params.model_copy(update={"sample": params.sample.model_copy(update={"samples_per_task": 3})})
    real = sample_stage.write_json

    def crash_on_leakage(obj, path):
        if Path(path).name == "leakage.json":  # samples.parquet and splits.parquet are already written
            raise RuntimeError("killed between outputs")
        real(obj, path)

    monkeypatch.setattr(sample_stage, "write_json", crash_on_leakage)
    with pytest.raises(RuntimeError, match="killed"):
        sample_stage.run_sample(changed, store)
    monkeypatch.setattr(sample_stage, "write_json", real)
    assert {p.name: p.read_bytes() for p in store.samples_dir.iterdir()} == before
    summary = sample_stage.run_sample(changed, store)  # the next run recovers and writes the new set
    old_rows = pq.read_table(pa.BufferReader(before["samples.parquet"])).num_rows
    assert not summary.get("up_to_date") and 0 < pq.read_table(store.samples_path).num_rows < old_rows
