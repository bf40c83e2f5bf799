"""One build in two folders is one build (issue 23, item 8): nothing in a part id, a stored
reference, a shard or the manifest depends on the folder the build lives in or on the inputs'
file times, and a store listed before references were stored relative keeps its parts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.params import SourceParams
from pipelines.sources import embedded_refs, ref_from_stored, render_embedded, stored_ref

PARAMS = {"paths": {"store": "store", "out": "out"}, "ray": {"num_cpus": 2},
          "ingest": {"sources": [{"kind": "folder", "path": "photos"}], "part_size": 4},
          "annotate": {"annotators": {"grayscale": {}, "edit_flip": {}}}, "mine": {"enabled": False},
          "sample": {"samples_per_task": 3}, "export": {"shard_size": 4}}


def _build(folder: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run"], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stdout + done.stderr


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.timeout(240)
def test_the_same_build_in_two_folders_writes_the_same_parts_shards_and_manifest(tmp_path):
    first = tmp_path / "first"
    (first / "photos").mkdir(parents=True)
    for k, ref in enumerate(embedded_refs(10, 64)):
        (first / "photos" / f"photo_{k:02d}.png").write_bytes(render_embedded(ref))
    (first / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    # a copy made later (other mtimes, as a clone or a download gives), somewhere else
    second = tmp_path / "elsewhere" / "second"
    shutil.copytree(first, second, copy_function=shutil.copy)
    for path in (second / "photos").iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    _build(first)
    _build(second)

    out_first, out_second = _files(first / "out"), _files(second / "out")
    assert out_first.keys() == out_second.keys() and "manifest.json" in out_first
    assert [k for k in out_first if out_first[k] != out_second[k]] == []
    parts = sorted(p.name for p in (first / "store" / "images").glob("part-*.parquet"))
    assert parts == sorted(p.name for p in (second / "store" / "images").glob("part-*.parquet")) and parts
    listing = pq.read_table(first / "store" / "images" / "listing.parquet").to_pylist()
    assert {r["ref"] for r in listing} == {f"photos/photo_{k:02d}.png" for k in range(10)}
    assert str(tmp_path) not in (first / "out" / "manifest.json").read_text()


def test_references_are_stored_relative_only_for_a_relative_source_path(tmp_path):
    base = str(tmp_path)
    ref = os.path.join(base, "photos", "café.jpg")
    relative = SourceParams(kind="folder", path="photos")
    absolute = SourceParams(kind="folder", path=os.path.join(base, "photos"))
    assert stored_ref(ref, relative, base) == os.path.join("photos", "café.jpg")
    assert stored_ref(ref, absolute, base) == ref  # the params name this folder absolutely: so does the store
    for source in (relative, absolute):
        assert ref_from_stored(stored_ref(ref, source, base), source, base) == ref
    # a store made before: absolute references come back unchanged
    assert ref_from_stored(ref, relative, base) == ref
    outside = "/elsewhere/photos/x.jpg"  # not under the working directory: absolute whatever the params
    assert stored_ref(outside, relative, base) == outside
    latin1 = os.fsdecode(os.path.join(base, "photos").encode() + b"/caf\xe9.jpg")
    assert ref_from_stored(stored_ref(latin1, relative, base), relative, base) == latin1


def test_a_listing_with_absolute_references_keeps_its_parts(tmp_path, monkeypatch):
    """A store listed before references were stored relative: its next run re-ingests nothing and
    tombstones nothing, and the listing is rewritten in the relative form."""
    from pipelines.params import parse_params
    from pipelines.stages.ingest import run_ingest
    from pipelines.store import NodeStore, write_table

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for k, ref in enumerate(embedded_refs(6, 48)):
        (tmp_path / "photos" / f"p{k}.png").write_bytes(render_embedded(ref))
    params = parse_params({**PARAMS, "ray": {"num_cpus": 1}})
    store = NodeStore("store")
    first = run_ingest(params, store)
    listing = pq.read_table(store.images_dir / "listing.parquet")
    absolute = [os.path.join(str(tmp_path), r) for r in listing["ref"].to_pylist()]
    write_table(listing.set_column(0, "ref", [absolute]).set_column(1, "container", [absolute]),
                store.images_dir / "listing.parquet")
    parts = sorted(p.name for p in store.image_parts())
    again = run_ingest(params, NodeStore("store"))
    assert again["new_parts"] == 0 and again["ok"] == first["ok"] == 6
    assert sorted(p.name for p in store.image_parts()) == parts
    assert store.tombstones().num_rows == 0
    assert pq.read_table(store.images_dir / "listing.parquet")["ref"].to_pylist()[0].startswith("photos/")
