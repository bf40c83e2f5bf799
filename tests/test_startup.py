"""A command with little or no work never pays Ray's start (issue 23, item 10): up to
`ray.inline_max_tasks` parts or shards run in the command's own process, Ray is not even imported,
and the outputs are the rows Ray's workers write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline_fixtures import small_params, write_params

RUN = """
import sys
from pipelines.cli import main
code = main(sys.argv[1:])
print("RAY_IMPORTED" if "ray" in sys.modules else "NO_RAY")
sys.exit(code)
"""


def _vicl(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", RUN, *args, "--params", str(root / "params.yaml")],
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1]


def _outputs(root: Path) -> dict[str, list]:
    """Every store part's rows, without `seconds` (the compute time each row records)."""
    files = [p for p in sorted((root / "store").rglob("part-*.parquet"))]
    return {str(p.relative_to(root)): pq.read_table(p).drop_columns(["seconds"]).to_pylist() for p in files}


@pytest.mark.timeout(300)
def test_a_part_or_two_of_work_runs_without_ray_and_writes_what_ray_writes(tmp_path):
    inline, on_ray = tmp_path / "inline", tmp_path / "ray"
    for root, max_tasks in ((inline, 2), (on_ray, 0)):
        root.mkdir()
        params = small_params(root, count=12, annotators={"canny": {}, "grayscale": {}, "edit_flip": {}},
                              ray={"inline_max_tasks": max_tasks})
        params = params.model_copy(update={"paths": params.paths.model_copy(update={"store": "store", "out": "out"})})
        write_params(root, params)
    # 12 images in parts of 8: two parts, two tasks per stage
    assert [_vicl(inline, stage) for stage in ("ingest", "annotate")] == ["NO_RAY", "NO_RAY"]
    assert [_vicl(on_ray, stage) for stage in ("ingest", "annotate")] == ["RAY_IMPORTED", "RAY_IMPORTED"]
    assert _outputs(inline) == _outputs(on_ray) and _outputs(inline)
    assert _vicl(inline, "annotate") == "NO_RAY"  # nothing to do
