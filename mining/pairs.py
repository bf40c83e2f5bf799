"""Readers of instruction-edit pair corpora into one pyarrow table.

Every reader returns the columns of `PAIR_SCHEMA`: pair_id, source_id, edited_id,
source_bytes, edited_bytes, instruction. Image ids are the content ids of the bytes
(`pipelines.images.content_id`) unless a column for them is mapped, so the same photo
used by several pairs gets one id. Where the corpus keeps its data is mapped in
`PairSource.columns` (column names for Parquet / HF datasets, field names for WebDataset,
file stems for folders).

Layouts:
- folder: `<root>/<pair_id>/<source>.<ext>`, `<edited>.<ext>`, `<instruction>.txt`
- parquet: one file or a folder of `*.parquet`; image columns hold bytes, an HF image
  struct {bytes, path}, or a path relative to the file
- hf_disk: a `datasets.save_to_disk` folder (a DatasetDict needs `split`)
- webdataset: tar shards; a sample's fields are matched by exact name or by the name
  before the extension ("source" matches "source.jpg")
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Iterable, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from pipelines.images import content_id

PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("source_id", pa.string()), ("edited_id", pa.string()),
    ("source_bytes", pa.binary()), ("edited_bytes", pa.binary()), ("instruction", pa.string()),
])


class PairColumns(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field("source", description="column / field / file stem of the source image")
    edited: str = Field("edited", description="column / field / file stem of the edited image")
    instruction: str = Field("instruction", description="column / field / file stem of the instruction text")
    pair_id: str | None = Field(None, description="column of a pair id; None: the folder name or sample key, else a digest of (source id, edited id, instruction)")
    source_id: str | None = Field(None, description="column of a source image id; None: content id of the bytes")
    edited_id: str | None = Field(None, description="column of an edited image id; None: content id of the bytes")


class PairSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["folder", "parquet", "hf_disk", "webdataset"]
    path: str = Field(description="folder, file, or glob of shards")
    split: str | None = Field(None, description="split of an HF DatasetDict")
    columns: PairColumns = Field(default_factory=PairColumns)
    limit: int | None = Field(None, ge=1, description="read at most this many pairs (smoke runs)")


def _image_bytes(value: Any, base: Path | None) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):  # HF Image feature, decode=False
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if isinstance(value, str):
        if base is None:
            raise ValueError(f"image path {value!r} in a corpus without a root folder")
        p = (base / value).resolve()
        if not p.is_relative_to(base.resolve()):  # an absolute path or `..` that leaves the corpus
            raise ValueError(f"image path {value!r} leaves the corpus root {base}")
        return p.read_bytes()
    raise ValueError(f"cannot read image bytes from a {type(value).__name__}")


def _to_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    return str(value).strip()


def _rows_to_table(rows: Iterable[dict[str, Any]], cols: PairColumns, base: Path | None,
                   limit: int | None) -> pa.Table:
    out: dict[str, list] = {name: [] for name in PAIR_SCHEMA.names}
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        src = _image_bytes(row[cols.source], base)
        edt = _image_bytes(row[cols.edited], base)
        source_id = str(row[cols.source_id]) if cols.source_id else content_id(src)
        edited_id = str(row[cols.edited_id]) if cols.edited_id else content_id(edt)
        instruction = _to_text(row[cols.instruction])
        # without a named id, the pair's content names it: two corpora can never collide
        if cols.pair_id:
            pair_id = str(row[cols.pair_id])
        elif "__key__" in row:  # a folder name or a WebDataset sample key names the pair
            pair_id = str(row["__key__"])
        else:
            pair_id = content_id(f"{source_id}\n{edited_id}\n{instruction}".encode())
        out["pair_id"].append(pair_id)
        out["source_id"].append(source_id)
        out["edited_id"].append(edited_id)
        out["source_bytes"].append(src)
        out["edited_bytes"].append(edt)
        out["instruction"].append(instruction)
    return pa.table(out, schema=PAIR_SCHEMA)


def _match_field(fields: dict[str, Any], name: str) -> Any:
    if name in fields:
        return fields[name]
    for key in sorted(fields):
        if key.rsplit(".", 1)[0] == name:
            return fields[key]
    raise KeyError(f"no field {name!r} among {sorted(fields)}")


def read_folder(src: PairSource) -> pa.Table:
    cols = src.columns
    root = Path(src.path)

    def rows():
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            files = {f.name: f for f in d.iterdir() if f.is_file()}
            yield {"__key__": d.name,
                   cols.source: _match_field(files, cols.source).read_bytes(),
                   cols.edited: _match_field(files, cols.edited).read_bytes(),
                   cols.instruction: _match_field(files, cols.instruction).read_text("utf-8")}

    plain = cols.model_copy(update={"pair_id": None, "source_id": None, "edited_id": None})
    return _rows_to_table(rows(), plain, root, src.limit)


def read_parquet(src: PairSource) -> pa.Table:
    path = Path(src.path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [Path(p) for p in sorted(glob.glob(src.path))]
    wanted = {c for c in src.columns.model_dump().values() if c}

    def rows():
        for f in files:
            table = pq.read_table(f, columns=[c for c in pq.read_schema(f).names if c in wanted])
            for row in table.to_pylist():
                yield row

    return _rows_to_table(rows(), src.columns, files[0].parent if files else None, src.limit)


def read_hf_disk(src: PairSource) -> pa.Table:
    import datasets

    ds = datasets.load_from_disk(src.path)
    if isinstance(ds, datasets.DatasetDict):
        if src.split is None:
            raise ValueError(f"{src.path} holds splits {list(ds)}: set `split`")
        ds = ds[src.split]
    for col in (src.columns.source, src.columns.edited):
        if isinstance(ds.features.get(col), datasets.Image):
            ds = ds.cast_column(col, datasets.Image(decode=False))
    if src.limit is not None:
        ds = ds.select(range(min(src.limit, len(ds))))
    return _rows_to_table(iter(ds), src.columns, Path(src.path), None)


def read_webdataset(src: PairSource) -> pa.Table:
    import webdataset as wds

    shards = sorted(glob.glob(src.path)) or [src.path]
    cols = src.columns

    def rows():
        for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
            fields = {k: v for k, v in sample.items() if not k.startswith("__")}
            row = {"__key__": sample["__key__"],
                   cols.source: _match_field(fields, cols.source),
                   cols.edited: _match_field(fields, cols.edited),
                   cols.instruction: _match_field(fields, cols.instruction)}
            for extra in (cols.pair_id, cols.source_id, cols.edited_id):
                if extra:
                    row[extra] = _to_text(_match_field(fields, extra))
            yield row

    return _rows_to_table(rows(), cols, None, src.limit)


READERS = {"folder": read_folder, "parquet": read_parquet, "hf_disk": read_hf_disk, "webdataset": read_webdataset}


def read_pairs(src: PairSource | dict) -> pa.Table:
    """Read a pair corpus into a PAIR_SCHEMA table (row order = the corpus' order)."""
    if isinstance(src, dict):
        src = PairSource(**src)
    return READERS[src.kind](src)
