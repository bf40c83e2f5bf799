"""Stages are declared once (pipelines/stage.py) and everything else follows: dvc.yaml agrees with
the declarations, the CLI offers each stage, the out-of-order check names the stage to run first,
`vicl status` has each stage's lines, and a new stage is one module plus one registration line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import pipelines.stages
from pipelines.cli import build_parser, main
from pipelines.stage import Stage
from pipelines.stages import STAGES
from tests.pipeline_fixtures import small_params, write_params

REPO = Path(__file__).resolve().parents[1]


def _dvc_path(template: str) -> str:
    return template.replace("{store}", "${paths.store}").replace("{out}", "${paths.out}")


def _entries(items) -> dict[str, dict]:
    out = {}
    for item in items:
        (name, opts), = item.items() if isinstance(item, dict) else ((item, {}),)
        out[name] = opts or {}
    return out


def test_dvc_yaml_runs_every_declared_stage_with_its_inputs_outputs_params_and_code():
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in STAGES:
        entry = dvc[stage.name]
        assert entry["cmd"] == f"vicl {stage.name}"
        deps = set(_entries(entry.get("deps", [])))
        assert deps == {_dvc_path(p) for p in stage.reads} | set(stage.code), stage.name
        outs = _entries(entry["outs"])
        assert set(outs) == {_dvc_path(p) for p in stage.writes}, stage.name
        assert {k for k, v in outs.items() if v.get("persist")} == {_dvc_path(p) for p in stage.persist}, stage.name
        assert entry.get("params", []) == list(stage.params), stage.name
        for path in stage.code:
            assert (REPO / path).exists(), f"{stage.name}: declared code {path} does not exist"


def test_the_cli_offers_every_stage_and_refuses_one_whose_inputs_are_missing(tmp_path):
    parser = build_parser()
    for stage in STAGES:
        assert parser.parse_args([stage.name]).command == stage.name
    params = small_params(tmp_path, count=6, annotators={"grayscale": {}}, mine={"enabled": False})
    path = write_params(tmp_path, params)
    assert main(["export", "--params", path]) == 2  # nothing made yet: names the stage to run first


def test_out_of_order_stage_names_the_producer(tmp_path, capsys):
    params = small_params(tmp_path, count=6, annotators={"grayscale": {}}, mine={"enabled": False})
    path = write_params(tmp_path, params)
    assert main(["sample", "--params", path]) == 2
    assert "run `vicl ingest` first" in capsys.readouterr().err  # the first stage not run yet
    assert main(["ingest", "--params", path]) == 0
    capsys.readouterr()
    assert main(["sample", "--params", path]) == 2
    assert "run `vicl annotate` first" in capsys.readouterr().err


# --- a new stage: this module-level block is all a stage module holds -----------------------------
def _count_samples(params, store, progress=None) -> dict:
    import pyarrow.parquet as pq

    count = pq.read_metadata(store.samples_path).num_rows
    folder = store.root / "toy"
    folder.mkdir(exist_ok=True)
    (folder / "count.json").write_text(json.dumps({"samples": count}))
    return {"samples": count}


def _toy_status(params, store) -> list[str]:
    done = store.root / "toy" / "count.json"
    return [f"toy:      {json.loads(done.read_text())['samples']} samples counted" if done.exists() else "toy:      not run"]


TOY = Stage(name="toy", help="count the samples (a toy stage)", run=_count_samples, status=_toy_status,
            reads=("{store}/samples",), writes=("{store}/toy",), done="{store}/toy/count.json")
# -------------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_a_new_stage_is_one_declaration_and_one_registration_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipelines.stages, "STAGES", STAGES + (TOY,))  # the registration line
    params = small_params(tmp_path, count=8, annotators={"grayscale": {}}, mine={"enabled": False})
    path = write_params(tmp_path, params)
    assert main(["toy", "--params", path]) == 2  # before its input exists: names the stage that makes it
    assert "run `vicl sample` first" in capsys.readouterr().err
    assert main(["run", "--params", path]) == 0  # `run` runs it too, last
    counted = json.loads((tmp_path / "store" / "toy" / "count.json").read_text())["samples"]
    assert counted > 0
    assert main(["status", "--params", path]) == 0
    assert f"toy:      {counted} samples counted" in capsys.readouterr().out
