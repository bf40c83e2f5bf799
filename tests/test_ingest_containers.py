"""A corrupt container costs only its own unreadable members; every member not taken is a failure row."""

import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.catalog import Catalog
from pipelines.cli import closing_summary, run_stages
from core.images import content_id
from pipelines.sources import embedded_refs, render_embedded
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params

PHOTOS = [render_embedded(r) for r in embedded_refs(16, 64)]


def add(tar: tarfile.TarFile, name: str, data: bytes, **kind) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in kind.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def build_inputs(root: Path) -> tuple[dict, set[str]]:
    """Three source kinds with planted trouble; returns (expected reason per ref suffix, good ids)."""
    folder = root / "folder"
    folder.mkdir()
    for k in range(3):
        (folder / f"f{k}.png").write_bytes(PHOTOS[k])
    (folder / "link.png").symlink_to(folder / "f0.png")  # not followed by default
    tars = root / "tars"
    tars.mkdir()
    with tarfile.open(tars / "a.tar", "w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "s0.png", PHOTOS[3])
        add(t, "s0.txt", b"a caption")  # a companion, not a failure
        add(t, "data.v1/img001.png", PHOTOS[4])  # a dot in the folder name
        add(t, "img.002.png", PHOTOS[5])  # a dot in the key
        add(t, "../escape.png", PHOTOS[6])
        add(t, "/abs.png", PHOTOS[7])
        add(t, "dup.png", PHOTOS[8])
        add(t, "dup.png", PHOTOS[9])  # same name, other bytes: both kept
        add(t, "lonely.json", b"{}")  # no image with this key
        add(t, "alias.png", b"", type=tarfile.SYMTYPE, linkname="s0.png")
    whole = io.BytesIO()
    with tarfile.open(fileobj=whole, mode="w", format=tarfile.USTAR_FORMAT) as t:
        add(t, "b0.png", PHOTOS[10])
        add(t, "b1.png", PHOTOS[11])
        add(t, "b2.png", PHOTOS[12])
    data = whole.getvalue()
    cut = data.index(PHOTOS[11][:64]) + len(PHOTOS[11]) // 2  # mid-way through b1's bytes
    (tars / "b.tar").write_bytes(data[:cut])
    pq_dir = root / "pq"
    pq_dir.mkdir()
    pq.write_table(pa.table({"image": [PHOTOS[13], PHOTOS[14]]}), pq_dir / "good.parquet")
    (pq_dir / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    pq.write_table(pa.table({"picture": [PHOTOS[15]]}), pq_dir / "other.parquet")  # no `image` column
    sources = [{"kind": "folder", "path": str(folder)},
               {"kind": "webdataset", "path": str(tars / "*.tar"), "image_extensions": ["png"]},
               {"kind": "parquet", "path": str(pq_dir / "*.parquet")}]
    expected = {"link.png": "link", "a.tar#../escape.png": "unsafe_name", "a.tar#/abs.png": "unsafe_name",
                "a.tar#lonely.json": "not_an_image", "a.tar#alias.png": "link", "b.tar#b1.png": "corrupt_container", "b.tar#": "corrupt_container",
                "broken.parquet#": "corrupt_container", "other.parquet#": "missing_column"}
    good = {content_id(PHOTOS[k]) for k in (0, 1, 2, 3, 4, 5, 8, 9, 10, 13, 14)}
    return {"sources": sources, "expected": expected}, good


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("containers")
    spec, good = build_inputs(root)
    params = small_params(root, sources=spec["sources"], annotators={"grayscale": {}}, mine={"enabled": False})
    results = run_stages(("ingest", "annotate"), params, log=lambda *_: None)
    return root, params, spec, good, results


def test_every_good_image_once_and_every_rejected_member_a_failure_row(ingested):
    root, params, spec, good, results = ingested
    store = NodeStore(params.paths.store)
    index = Catalog.load(store).node_index()
    assert set(index.ids.to_pylist()) == good  # the duplicate-name members are both there, each once
    failures = store.failures().to_pylist()
    reasons = {}
    for f in failures:
        for suffix in spec["expected"]:
            if f["source"].endswith(suffix):
                reasons[suffix] = f["reason"]
    assert reasons == spec["expected"]
    assert all("0x" not in f["detail"] for f in failures)  # no object reprs
    ok, failed = closing_summary(params)
    assert ok == len(good) == results["ingest"]["ok"] and failed == len(failures) == results["ingest"]["failed"]
    assert failed == len(spec["expected"])


def test_duplicate_member_names_keep_distinct_references(ingested):
    root, params, *_ = ingested
    store = NodeStore(params.paths.store)
    refs = store.image_summary()["ref"].to_pylist()
    assert sum(r.endswith("a.tar#dup.png") for r in refs) == 1 and sum(r.endswith("a.tar#dup.png@1") for r in refs) == 1


def test_symlinks_are_followed_only_when_asked(tmp_path):
    from pipelines.params import SourceParams
    from pipelines.sources import list_entries

    (tmp_path / "real.png").write_bytes(PHOTOS[0])
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(PHOTOS[1])
    (tmp_path / "escape.png").symlink_to(outside)
    plain = {Path(e.ref).name: e.reject for e in list_entries(SourceParams(kind="folder", path=str(tmp_path)))}
    assert plain["real.png"] is None and plain["escape.png"].startswith("link:")
    followed = list_entries(SourceParams(kind="folder", path=str(tmp_path), follow_links=True))
    assert all(e.reject is None for e in followed)
