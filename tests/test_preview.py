"""The chain with the new sampler and exporters on a few embedded photos: shard sets, Graph200K
export, preview (rendered in headless Chromium when installed), report, `vicl tasks` output."""

import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import run_stages
from pipelines.preview import write_preview
from pipelines.report import write_report
from pipelines.sampling_params import ExportParams, SamplerParams
from pipelines.store import NodeStore
from core.sample_reader import shard_paths, walk_shards
from tests.pipeline_fixtures import shard_records, small_params

CHROMIUM = Path("/usr/bin/chromium")
ANNOTATORS = {"canny": {}, "grayscale": {}, "degrade_GaussianBlur": {"online": True}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("preview")
    params = small_params(root, count=16, annotators=ANNOTATORS)
    params.sample = SamplerParams(samples_per_task=4, eval_fraction=0.25, heldout_tasks=["gray_to_image"])
    params.export = ExportParams(shard_size=8, cell_size=32, layouts=["grid", "sequence"], graph200k=True)
    results = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    return root, params, results


def test_every_enumerable_task_has_shards_and_sequence_sets_are_uniform(built):
    _, params, results = built
    out = Path(params.paths.out)
    store = NodeStore(params.paths.store)
    samples = pq.read_table(store.samples_path).to_pylist()
    tasks = {s["task"] for s in samples}
    assert tasks == {"canny_to_image", "image_to_canny", "gray_to_image", "GaussianBlur_to_image"}
    assert results["sample"]["tasks_without_samples"] == []
    assert {s["split"] for s in samples if s["task"] == "gray_to_image"} == {"eval_unseen"}

    grid = shard_records(out)
    assert sorted(r["key"] for r in grid) == sorted(s["key"] for s in samples)
    for shape_dir in sorted((out / "shards_seq").glob("*/*")):
        rows, cols = map(int, shape_dir.name.split("x"))
        for raw in walk_shards(shard_paths(shape_dir)):  # every member, not only the image fields
            assert set(raw.fields) == {"json"} | {f"r{r}c{c}.png" for r in range(rows) for c in range(cols)}
    import datasets

    shape_dir = sorted((out / "shards_seq" / "train").iterdir())[-1]
    tars = sorted(map(str, shape_dir.glob("*.tar")))
    hf = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                               cache_dir=str(out.parent / "hf"))
    rows, cols = map(int, shape_dir.name.split("x"))
    assert len(hf) > 0 and f"r{rows - 1}c{cols - 1}.png" in hf.column_names
    leakage = json.loads((out / "leakage.json").read_text())
    assert leakage["eval_samples_with_near_duplicate_in_train"] == 0
    assert leakage["eval_samples_sharing_an_image_with_train"] == 0


def test_graph200k_export_layout_and_rows(built):
    _, params, _ = built
    root = Path(params.paths.out) / "graph200k"
    rows = json.loads((root / "train" / "data.json").read_text())
    assert rows and set(rows[0]) >= {"quality_assessment", "description", "collection", "condition"}
    # canny and gray only where their gates passed (few edges; a grey photo's gray is a no-op)
    assert all({"target", "GaussianBlur"} <= set(r["condition"]) <= {"target", "canny", "gray", "GaussianBlur"}
               for r in rows)
    assert any("canny" in r["condition"] for r in rows) and any("gray" in r["condition"] for r in rows)
    for row in rows[:3]:  # VisualCloze's reader opens condition paths as written: absolute, named by content
        for node, path in row["condition"].items():
            assert path == str(root.resolve() / "train" / node / f"{row['image_id']}_{node}.jpg")
            assert Path(path).is_file()


def test_preview_and_report_render(built, tmp_path):
    root, params, _ = built
    page = write_preview(params.paths.out, per_task=2)
    images = sorted((page.parent / "img").glob("*.png"))
    per_task = {}
    for s in pq.read_table(NodeStore(params.paths.store).samples_path).to_pylist():
        per_task[s["task"]] = per_task.get(s["task"], 0) + 1
    assert page.is_file() and len(images) == sum(min(2, n) for n in per_task.values()) >= 7
    report = write_report(params, NodeStore(params.paths.store))
    data = json.loads((report.parent / "report.json").read_text())
    assert data["samples"] > 0 and sum(map(sum, (r.values() for r in data["per_axis_cell"].values()))) == \
        data["samples"]
    assert (report.parent / "axes.png").is_file() and (report.parent / "tasks.png").is_file()
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (CI installs it with apt-get install -y chromium)")
    for html in (page, report):
        check = html.parent / "check.html"
        # The page itself plus a script that reports, after load, how many <img> decoded.
        check.write_text(html.read_text().replace(
            "</body>", "<script>window.addEventListener('load',()=>{const i=[...document.images];"
            "document.title='IMAGES '+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;});"
            "</script></body>"))
        dom = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
                              "--virtual-time-budget=5000", "--allow-file-access-from-files", "--dump-dom",
                              check.as_uri()], capture_output=True, text=True, timeout=120).stdout
        n = html.read_text().count("<img ")
        assert f"<title>IMAGES {n}/{n}</title>" in dom, dom[:300]


def test_cmd_tasks_prints_tasks_and_coverage(built, capsys):
    from pipelines.tasks import cmd_tasks

    _, params, _ = built
    assert cmd_tasks(params) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 tasks") and "GaussianBlur_to_image" in text and "coverage" in text


def test_resampling_rewrites_shards_whose_samples_changed(built):
    """Same shard names, new samples: a finished shard from the old sampling must not survive."""
    _, params, _ = built
    out = Path(params.paths.out)
    before = {p: p.read_bytes() for p in sorted(out.glob("shards/*/*.tar"))}
    params.sample = params.sample.model_copy(update={"seed": 11})
    again = run_stages(("sample", "export"), params, log=lambda *_: None)
    assert again["export"]["written"] > 0
    samples = {s["key"]: s for s in pq.read_table(NodeStore(params.paths.store).samples_path).to_pylist()}
    records = shard_records(out)
    assert sorted(r["key"] for r in records) == sorted(samples)
    assert all(r["task"] == samples[r["key"]]["task"] and
               [c["image_id"] for c in r["cells"]] == samples[r["key"]]["cell_ids"] for r in records)
    assert any(before.get(p) != p.read_bytes() for p in out.glob("shards/*/*.tar"))
    assert run_stages(("export",), params, log=lambda *_: None)["export"]["written"] == 0


def _hostile_shards(out: Path, outside: Path) -> None:
    """A grid shard set written by hand: one good sample, then keys that try to leave the folder."""
    import io
    import tarfile

    import numpy as np

    from core.images import encode_png
    from core.sample_schema import SCHEMA_VERSION

    grid = encode_png(np.full((16, 16, 3), 120, np.uint8))

    def record(task: str, schema: str = SCHEMA_VERSION) -> bytes:
        return json.dumps({"schema": schema, "task": task, "rows": 1, "cols": 1, "family": "f&<b>", "columns": ["image"],
                           "axes": {"semantic": "<i>", "locality": "x"},
                           "instruction": {"text": "<script>alert(1)</script>"},
                           "cells": [{"is_target": True, "box": [0, 0, 16, 16], "row": 0, "col": 0,
                                      "node": "image\"'"}]}).encode()

    members = [("train_000000001", record("good<task>")),
               (str(outside / "evil"), record("abs")),  # an absolute member name
               ("../escape", record("dotdot")),
               ("sub/escape", record("slash")),
               ('x" onerror="alert(1)', record("quote")),
               ("train_000000001", record("good<task>")),  # the same key again
               ("train_000000003", record("old", schema="vicl.sample/0"))]  # another schema version
    split = out / "shards" / "train"
    split.mkdir(parents=True)
    with tarfile.open(split / "train-00000.tar", "w") as tf:
        for key, rec in members:
            for field, data in (("json", rec), ("grid.png", grid)):
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("train_000000002.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)


def test_preview_skips_hostile_keys_and_escapes_html(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    _hostile_shards(out, outside)
    before = {p for p in tmp_path.rglob("*") if "preview" not in p.parts}
    page = write_preview(out, per_task=4)
    after = {p for p in tmp_path.rglob("*") if "preview" not in p.parts}
    assert after == before and not list(outside.iterdir())  # nothing written outside preview/
    assert not (tmp_path / "escape.png").exists() and not (out / "escape.png").exists()
    assert sorted(p.name for p in (page.parent / "img").rglob("*")) == ["train_000000001.png"]
    text = page.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "good&lt;task&gt;" in text and 'image&quot;&#x27;' in text and "f&amp;&lt;b&gt;" in text
    assert 'onerror="' not in text and "x&quot; onerror=&quot;alert(1)" in text  # only as escaped text
    skipped = text[text.index("skipped:"):]
    for key in (str(outside / "evil"), "sub/escape", "train_000000002.json", "repeated sample key",
                "train_000000003", "schema &#x27;vicl.sample/0&#x27; is not the supported"):
        assert key in skipped, key
    assert text.count("<tr><td>") == 7  # abs, ../escape, sub/, quote, repeat, symlink, old schema
