"""Issue 23, items 3, 4 and 9: a file name that is not UTF-8 and a FIFO named like a photo never stop
ingest, and `vicl preview` before any export stops with one line and exit 2."""

import io
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import skimage.data
import yaml
from PIL import Image

from pipelines.cli import main
from core.images import ImageRejected
from pipelines.params import SourceParams
from pipelines.records import read_member
from pipelines.sources import list_entries, load_chunk, ref_from_text, ref_text
from pipelines.stages.ingest import run_ingest
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params

LATIN1 = b"latin1-caf\xe9.jpg"  # "café" in Latin-1: the byte 0xE9 alone is not UTF-8


def _jpeg(photo: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(getattr(skimage.data, photo)()).convert("RGB").resize((96, 72)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _odd_folder(root: Path) -> Path:
    """Two photos, a third under a name that is not UTF-8, and a FIFO named x.jpg."""
    folder = root / "photos"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes(_jpeg("astronaut"))
    (folder / "coffee.jpg").write_bytes(_jpeg("coffee"))
    fd = os.open(os.path.join(os.fsencode(folder), LATIN1), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(_jpeg("chelsea"))
    os.mkfifo(folder / "x.jpg")
    return folder


def _latin1_ref(folder: Path) -> str:
    return os.fsdecode(os.path.join(os.fsencode(folder), LATIN1))  # as os.walk lists it: a lone surrogate


def test_stored_references_are_utf8_and_round_trip():
    names = [b"/p/latin1-caf\xe9.jpg", b"/p/caf\xc3\xa9.jpg", b"/p/a\\b.jpg", b"/p/a\\xe9.jpg", b"/p/\\\\x\xff\\",
             b"/p/t.tar#m\xe9mber.jpg@1"]
    stored = [ref_text(os.fsdecode(n)) for n in names]
    assert stored[0] == "/p/latin1-caf\\xe9.jpg"  # the byte written \xNN
    assert stored[1:3] == ["/p/café.jpg", "/p/a\\b.jpg"]  # plain text is stored as it is (existing stores)
    for name, text in zip(names, stored):
        text.encode("utf-8")  # Parquet and JSON take it
        assert os.fsencode(ref_from_text(text)) == name
    assert len(set(stored)) == len(names)  # a literal "\xe9" in a name never meets the byte 0xE9


@pytest.mark.timeout(60)
def test_a_fifo_is_a_failure_row_and_never_opened(tmp_path):
    folder = _odd_folder(tmp_path)
    source = SourceParams(kind="folder", path=str(folder))
    entries = list_entries(source)
    fifo = next(e for e in entries if e.ref.endswith("x.jpg"))
    assert fifo.reject == "not_a_regular_file: a FIFO"
    loaded = dict(load_chunk(source, entries))  # the old code blocked here, in open(), forever
    assert isinstance(loaded[fifo.ref], ImageRejected) and loaded[fifo.ref].reason == "not_a_regular_file"
    assert loaded[_latin1_ref(folder)] == _jpeg("chelsea")


@pytest.mark.timeout(60)
def test_a_record_path_field_naming_a_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "source.png")
    got = read_member("source.png", tmp_path)  # the old code blocked in read_bytes(), forever
    assert isinstance(got, ImageRejected) and got.reason == "not_a_regular_file"
    assert got.detail == "'source.png': a FIFO"


def _image_rows(store: NodeStore) -> list[dict]:
    return [{**r, "source": json.loads(r["meta"])["source"]} for p in store.image_parts()
            for r in pq.read_table(p, columns=["image_id", "meta", "error"]).to_pylist()]


@pytest.mark.timeout(180)
def test_ingest_takes_a_non_utf8_name_once_fails_the_fifo_and_reruns_nothing(tmp_path, ray_local):
    folder = _odd_folder(tmp_path)
    params = small_params(tmp_path, sources=[{"kind": "folder", "path": str(folder)}], ingest={"part_size": 2})
    store = NodeStore(params.paths.store)
    first = run_ingest(params, store)  # the old code stopped here: UnicodeEncodeError in the part naming
    assert (first["ok"], first["failed"], first["parts"]) == (3, 1, 2)

    latin1 = ref_text(_latin1_ref(folder))
    assert latin1 == f"{folder}/latin1-caf\\xe9.jpg"
    rows = _image_rows(store)
    assert [r["error"] for r in rows if r["source"] == latin1] == [None]  # stored exactly once
    assert [r["error"] for r in rows if r["source"] == str(folder / "x.jpg")] == ["not_a_regular_file: a FIFO"]
    failures = store.failures(annotator_folders=[]).to_pylist()
    assert [(f["source"], f["reason"]) for f in failures] == [(str(folder / "x.jpg"), "not_a_regular_file")]
    listing = pq.read_table(store.images_dir / "listing.parquet")
    assert latin1 in listing["ref"].to_pylist()

    parts = sorted(p.name for p in store.image_parts())
    second = run_ingest(params, store)  # stat-based: the same inputs, found again in the same parts
    assert second["new_parts"] == 0 and sorted(p.name for p in store.image_parts()) == parts
    assert pq.read_table(store.images_dir / "listing.parquet").equals(listing)
    assert not store.tombstones().num_rows and (second["ok"], second["failed"]) == (3, 1)


def test_preview_before_any_export_exits_2_with_one_line(tmp_path, capsys):
    params = small_params(tmp_path)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert main(["preview", "--params", str(params_file)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "run `vicl export` first" in err, err
    assert not (Path(params.paths.out) / "preview" / "index.html").exists()  # no empty page
