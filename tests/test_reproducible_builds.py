"""The same params built in two folders give the same manifest, failures table and shards, byte for byte."""

import os
from pathlib import Path

from pipelines.cli import run_stages
from pipelines.params import parse_params, validate_params


def build(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    params = parse_params({"paths": {"store": "store", "out": "out"}, "ray": {"num_cpus": 2},
                           "ingest": {"sources": [{"kind": "embedded", "count": 12, "size": 80}], "part_size": 6},
                           "annotate": {"annotators": {"canny": {}, "degrade_JPEG": {}, "degrade_Rain": {"online": True}}},
                           "mine": {"enabled": False}, "sample": {"samples_per_task": 3},
                           "export": {"shard_size": 4, "cell_size": 32}})
    validate_params(params)
    here = os.getcwd()
    os.chdir(folder)  # relative paths, as a user's params.yaml has them
    try:
        run_stages(("ingest", "annotate", "mine", "sample", "export"), params, log=lambda *_: None)
    finally:
        os.chdir(here)
    out = folder / "out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_two_folders_one_build(tmp_path, ray_local):
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert sorted(a) == sorted(b) and "manifest.json" in a and "failures.parquet" in a
    assert any(k.startswith("shards/") for k in a)
    different = [k for k in a if a[k] != b[k]]
    assert different == []
    assert str(tmp_path).encode() not in a["manifest.json"] and str(tmp_path).encode() not in a["shards_plan.json"]
