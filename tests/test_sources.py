"""Source readers list references deterministically and load the same bytes from every container kind."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from core.images import content_id
from pipelines.params import IngestParams, SourceParams
from pipelines.sources import embedded_refs, list_entries, list_refs, load_chunk, render_embedded
from pipelines.stages.ingest import ingest_refs


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [_png((i * 40, 255 - i * 40, 7)) for i in range(5)]


def test_embedded_refs_are_distinct_and_pure():
    refs = embedded_refs(60, 96)
    assert refs == embedded_refs(60, 96) and len(set(refs)) == 60
    assert len({content_id(render_embedded(r)) for r in refs}) == 60
    assert render_embedded(refs[3]) == render_embedded(refs[3])


def test_webdataset_source(tmp_path):
    with wds.TarWriter(str(tmp_path / "a.tar"), encoder=False) as w:
        for i, data in enumerate(IMAGES):
            w.write({"__key__": f"s{i}", "png": data, "txt": b"caption"})
    source = SourceParams(kind="webdataset", path=str(tmp_path / "*.tar"), image_extensions=["png"])
    entries = list_entries(source)
    assert [e.ref.split("#")[1] for e in entries] == [f"s{i}.png" for i in range(5)]  # captions are companions
    assert [data for _, data in load_chunk(source, entries[1:3])] == IMAGES[1:3]


def test_parquet_source_with_hf_image_struct(tmp_path):
    table = pa.table({"image": [{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(IMAGES)],
                      "label": list(range(5))})
    pq.write_table(table, tmp_path / "train.parquet")
    source = SourceParams(kind="parquet", path=str(tmp_path / "train.parquet"))
    entries = list_entries(source)
    assert len(entries) == 5
    assert [data for _, data in load_chunk(source, entries)] == IMAGES


def test_folder_source_ingests_in_sorted_order(tmp_path):
    for i, data in enumerate(IMAGES):
        (tmp_path / f"{4 - i}.png").write_bytes(data)
    (tmp_path / ".hidden.png").write_bytes(IMAGES[0])
    source = SourceParams(kind="folder", path=str(tmp_path))
    refs = list_refs(source)
    assert [r.rsplit("/", 1)[1] for r in refs] == ["0.png", "1.png", "2.png", "3.png", "4.png"]
    table = ingest_refs(source, refs, IngestParams(image_format="png", min_side=8), "fp")
    assert table.num_rows == 5 and table["error"].null_count == 5
    # a part's rows are ordered by image id (a part is a set of images, not a sequence)
    assert table["image_id"].to_pylist() == sorted(content_id(IMAGES[4 - i]) for i in range(5))
