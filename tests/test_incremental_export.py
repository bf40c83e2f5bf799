"""An export option that does not touch the shards does not re-render them (issue 23, item 10)."""

from __future__ import annotations

from pipelines.cli import run_stages
from tests.pipeline_fixtures import small_params


def test_turning_on_the_graph200k_export_rewrites_no_shard(tmp_path):
    params = small_params(tmp_path, count=16, mine={"enabled": False})
    first = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)["export"]
    shards = sorted((tmp_path / "out").glob("shards/*/*.tar"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards}
    assert first["written"] == first["shards"] == len(shards) > 0
    on = params.model_copy(update={"export": params.export.model_copy(update={"graph200k": True,
                                                                             "preview_per_task": 5})})
    second = run_stages(("export",), on, log=lambda *_: None)["export"]
    assert second["written"] == 0 and second["graph200k_rows"] > 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards} == before  # not even rewritten alike
