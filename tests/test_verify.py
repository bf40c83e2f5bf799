"""Bit rot is found, named and repaired, never shipped (issue 23, item 2): page checksums on every store
part, verified on read; SHA256SUMS beside the shards; `vicl verify [--repair]`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main, run_stages
from pipelines.verify import SUMS_FILE, verify
from tests.pipeline_fixtures import small_params, write_params


def _flip_inside_a_cell(part: Path) -> None:
    """16 bytes of one stored JPEG cell inverted in place, the file's size and names unchanged."""
    data = pq.read_table(part, columns=["data"])["data"][0].as_py()
    blob = bytearray(part.read_bytes())
    at = blob.find(data[200:232]) + 8
    assert at > 8
    blob[at:at + 16] = bytes(b ^ 0xFF for b in blob[at:at + 16])
    part.write_bytes(bytes(blob))


def _shards(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("shards/*/*.tar"))}


def test_a_rotted_cell_is_an_error_naming_its_part_and_repair_recomputes_it(tmp_path, capsys):
    params = small_params(tmp_path, count=12, annotators={"canny": {}}, mine={"enabled": False})
    stages = ("ingest", "annotate", "sample", "export")
    run_stages(stages, params, log=lambda *_: None)
    out, store = tmp_path / "out", tmp_path / "store"
    reference = _shards(out)
    sums = (out / SUMS_FILE).read_text().splitlines()
    assert len(sums) == len(reference) and all(f"{h}  {rel}" in sums for rel, h in reference.items())
    assert verify(store, out)["damaged"] == []

    part = sorted((store / "images").glob("part-*.parquet"))[0]
    _flip_inside_a_cell(part)
    for tar in out.glob("shards/*/*.tar"):  # the export must read the cells again
        tar.unlink()
    with pytest.raises(Exception, match=part.name):  # raised in a Ray worker, the file named
        run_stages(("export",), params, log=lambda *_: None)
    assert main(["export", "--params", write_params(tmp_path, params)]) == 65  # through the CLI: one line
    err = capsys.readouterr().err.strip().splitlines()
    assert f"corrupt store file {part}" in err[-1] and "vicl verify --repair" in err[-1]
    assert main(["verify", "--params", write_params(tmp_path, params)]) == 65
    assert str(part) in capsys.readouterr().out
    found = verify(store, out)
    assert [p for p, _ in found["damaged"]] == [part]
    assert verify(store, out, repair=True)["removed"] == [part] and not part.exists()
    run_stages(stages, params, log=lambda *_: None)  # ingest makes the part again from the source
    assert _shards(out) == reference and verify(store, out)["damaged"] == []


def test_a_damaged_shard_is_found_by_its_sha256_and_written_again(tmp_path):
    params = small_params(tmp_path, count=12, annotators={"canny": {}}, mine={"enabled": False})
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    out = tmp_path / "out"
    reference = _shards(out)
    tar = sorted(out.glob("shards/*/*.tar"))[0]
    blob = bytearray(tar.read_bytes())
    blob[1000] ^= 0xFF
    tar.write_bytes(bytes(blob))
    found = verify(tmp_path / "store", out, repair=True)
    assert [p for p, _ in found["damaged"]] == [tar] and found["removed"] == [tar]
    run_stages(("export",), params, log=lambda *_: None)
    assert _shards(out) == reference
