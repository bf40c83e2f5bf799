"""The chain on a few dozen embedded photos: readers, resume, incremental annotators, killed export."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import run_stages
from pipelines.manifest import sha256_file
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params

ALL = ("ingest", "annotate", "sample", "export")


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("shards/*/*.tar"))}


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("chain")
    params = small_params(root, annotators={"canny": {}})
    results = run_stages(ALL, params, log=lambda *_: None)
    return root, params, results


def test_chain_writes_readable_shards_and_manifest(built):
    root, params, results = built
    out = Path(params.paths.out)
    manifest = json.loads((out / "manifest.json").read_text())
    tars = sorted(glob.glob(str(out / "shards/train/*.tar")))
    n_train = manifest["counts"]["samples_per_split"]["train"]
    assert results["ingest"]["ok"] == 24 and n_train > 0 and tars

    import webdataset as wds

    samples = list(wds.WebDataset(tars, shardshuffle=False))
    assert len(samples) == n_train
    assert all(set(s) >= {"__key__", "json", "grid.png"} and "." not in s["__key__"] for s in samples)
    record = json.loads(samples[0]["json"])
    target = record["target_cell"]
    assert record["schema"] == "vicl.sample/1" and target["row"] == record["rows"] - 1
    assert [c for c in record["cells"] if c["is_target"]] == [
        c for c in record["cells"] if (c["row"], c["col"]) == (target["row"], target["col"])]
    assert len({c["image_id"] for c in record["cells"]}) == record["rows"]  # distinct image per row

    import datasets

    hf = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train",
                               cache_dir=str(root / "hf"))
    assert len(hf) == n_train and hf[0]["json"]["task"]

    import ray.data

    assert ray.data.read_webdataset(tars).count() == n_train

    for rel, entry in manifest["files"].items():
        if rel.startswith("shards/"):
            assert sha256_file(out / rel) == entry["sha256"]
    nodes = manifest["counts"]["nodes"]
    held_back = pq.read_table(out / "quality.parquet").to_pylist()  # degenerate outputs (issue 18's gates)
    assert nodes["image"] == nodes["embedding_colour_stats"] == nodes["image_dhash"] == 24
    assert nodes["canny"] + sum(r["node_type"] == "canny" for r in held_back) == 24
    held = {(r["node_type"], r["image_id"]) for r in held_back}
    every_cell = {(c["node"], c["image_id"]) for s in samples for c in json.loads(s["json"])["cells"]}
    assert not every_cell & held  # a held-back output never reaches a sample
    assert set(manifest["versions"]) >= {"torch", "ray", "webdataset"}


def test_second_run_computes_nothing(built):
    _, params, _ = built
    before = shard_bytes(Path(params.paths.out))
    again = run_stages(("annotate", "export"), params, log=lambda *_: None)
    assert [r["computed_parts"] for r in again["annotate"]] == [0, 0, 0]  # canny, split embedding, dHash
    assert again["export"]["written"] == 0
    assert shard_bytes(Path(params.paths.out)) == before


def test_adding_an_annotator_computes_only_it(built):
    root, params, _ = built
    store = NodeStore(params.paths.store)
    canny_parts = {p: p.stat().st_mtime_ns for p in store.nodes_dir.glob("canny/*/part-*.parquet")}
    bigger = small_params(root, annotators={"canny": {}, "grayscale": {}})
    results = run_stages(("annotate",), bigger, log=lambda *_: None)["annotate"]
    computed = {r["annotator"]: r["computed_parts"] for r in results}
    assert computed == {"canny": 0, "grayscale": 3, "embed_colour_stats": 0, "image_dhash": 0}
    assert {p: p.stat().st_mtime_ns for p in store.nodes_dir.glob("canny/*/part-*.parquet")} == canny_parts


def test_png_level_recomputes_nothing(built):
    """The level changes bytes, never pixels (tests/test_images.py), so stored parts stay valid."""
    root, params, _ = built
    denser = small_params(root, annotators={"canny": {}, "grayscale": {}}, annotate={"png_compress_level": 9})
    results = run_stages(("annotate",), denser, log=lambda *_: None)["annotate"]
    assert {r["annotator"]: r["computed_parts"] for r in results}["canny"] == 0


def test_cpu_executors_write_identical_parts(tmp_path, ray_local):
    """Weight-free CPU operators as one Ray task per part, or through the Ray Data actor pool (each actor writes its parts): same rows."""
    annotators = {"canny": {}, "grayscale": {}, "degrade_GaussianNoise": {"batch_size": 3}}
    parts = {}
    for executor in ("tasks", "actors"):
        # 10 parts: more than the tasks executor keeps in flight on 2 CPUs, so it refills its window
        params = small_params(tmp_path / executor, count=20, annotators=annotators,
                              annotate={"cpu_executor": executor}, ingest={"part_size": 2})
        results = run_stages(("ingest", "annotate"), params, log=lambda *_: None)["annotate"]
        every = [*annotators, "embed_colour_stats", "image_dhash"]  # the sampler's two are always computed
        assert {r["annotator"]: r["computed_parts"] for r in results} == dict.fromkeys(every, 10)
        nodes = NodeStore(params.paths.store).nodes_dir
        # every column but the timing one
        parts[executor] = {str(p.relative_to(nodes)): pq.read_table(p).drop_columns(["seconds"])
                           for p in sorted(nodes.glob("*/*/part-*.parquet"))}
    assert sorted(parts["tasks"]) == sorted(parts["actors"]) and len(parts["tasks"]) == 50
    for name, table in parts["tasks"].items():
        assert table.equals(parts["actors"][name]), name
        assert table["image_id"].to_pylist() == sorted(table["image_id"].to_pylist())
    assert sum(t.num_rows for t in parts["tasks"].values()) == 5 * 20


def test_failed_annotation_is_recorded_and_run_goes_on(tmp_path, ray_local):
    """A plugin annotator that fails on some images: error rows, the rest annotated."""
    plugin = tmp_path / "flaky_annotator.py"
    plugin.write_text(
        "from annotators.base import Annotator, NodeOutput\n"
        "from annotators.registry import register\n"
        "@register\n"
        "class Flaky(Annotator):\n"
        "    name = 'flaky_test'\n"
        "    produces = ('foreground_mask',)\n"
        "    def annotate(self, inputs, image_ids):\n"
        "        if any(i.startswith(tuple('0123')) for i in image_ids):\n"
        "            raise ValueError('planted failure')\n"
        "        return [{'foreground_mask': NodeOutput(x['image'][..., 0])} for x in inputs]\n")
    sys.path.insert(0, str(tmp_path))
    import ray

    ray.shutdown()  # workers must start with the plugin folder on their path
    from pipelines import executor
    from pipelines.params import RayParams

    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    executor.init(RayParams(num_cpus=2))
    try:
        params = small_params(tmp_path, count=16, annotators={"flaky_test": {}},
                              annotate={"plugins": ["flaky_annotator"]})
        run_stages(("ingest", "annotate"), params, log=lambda *_: None)
        store = NodeStore(params.paths.store)
        failures = [f for f in store.failures().to_pylist() if f["stage"] == "annotate"]
        rows = [r for p in store.nodes_dir.glob("flaky_test/*/part-*.parquet") for r in pq.read_table(p).to_pylist()]
        failed_ids = {r["image_id"] for r in rows if r["error"]}
        assert len(rows) == 16 and failed_ids == {f["source"] for f in failures}
        assert failed_ids == {r["image_id"] for r in rows if r["image_id"][0] in "0123"}
        assert all("planted failure" in f["detail"] for f in failures)
    finally:
        sys.path.remove(str(tmp_path))
        os.environ["PYTHONPATH"] = os.environ["PYTHONPATH"].split(os.pathsep, 1)[1]
        ray.shutdown()
        executor.init(RayParams(num_cpus=2))


def test_killed_export_resumes_byte_identical(built, tmp_path):
    root, params, _ = built
    # Reference: an uninterrupted export of the same samples, one sample per shard.
    reference = params.model_copy(deep=True)
    reference.paths.out = str(tmp_path / "reference")
    reference.export.shard_size = 1
    run_stages(("export",), reference, log=lambda *_: None)
    expected = shard_bytes(Path(reference.paths.out))

    killed = params.model_copy(deep=True)
    killed.paths.out = str(tmp_path / "killed")
    killed.export.shard_size = 1
    params_file = tmp_path / "killed.yaml"
    params_file.write_text(yaml.safe_dump(killed.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "export", "--params", str(params_file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    shards = Path(killed.paths.out) / "shards"
    deadline = time.time() + 240
    while time.time() < deadline and not list(shards.glob("*/*.tar")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-export
    proc.wait()
    written = list(shards.glob("*/*.tar"))
    assert 0 < len(written) < len(expected), "the kill must land during the export"
    (shards / "train" / ".train-00000.tar.junk.tmp").write_bytes(b"half a shard")  # a torn temp file

    run_stages(("export",), killed, log=lambda *_: None)
    assert shard_bytes(Path(killed.paths.out)) == expected
    assert not list(shards.rglob("*.tmp"))
