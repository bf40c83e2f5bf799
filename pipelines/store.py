"""The node store: Parquet part files, one row per (image id, node type), that every stage reads and writes.

Layout under `paths.store`:
  images/part-NNNNN.parquet                      ingest output (node "image"), parts of `part_size` images
  images/ingest.json                             fingerprint of the ingest (params + input listing)
  nodes/<annotator>/<params_hash>/annotator.json  name, version, params, produces
  nodes/<annotator>/<params_hash>/part-NNNNN.parquet  one file per image part, same part number
  samples/samples.parquet                        the sampler's output

A part is complete exactly when its file exists: it is written under a temporary name and
renamed. Re-runs skip complete parts, so a killed run resumes and a newly configured
annotator computes only its own parts. Rows whose annotator failed carry `error` and no data.
No per-image files: DVC stays fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

NODE_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("node_type", pa.string()),
    ("data", pa.binary()),  # encoded image (png/jpg/webp) or empty for json-only nodes and errors
    ("format", pa.string()),  # png | jpg | webp | json | none
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("meta", pa.string()),  # JSON: provenance, parameters used, boxes, keypoints, ...
    ("annotator", pa.string()),
    ("annotator_version", pa.string()),
    ("params_hash", pa.string()),
    ("seconds", pa.float64()),  # compute time attributed to this row
    ("error", pa.string()),  # null when ok
])

FAILURE_SCHEMA = pa.schema([
    ("stage", pa.string()),
    ("source", pa.string()),  # input reference (ingest) or image id (later stages)
    ("annotator", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

_PART_RE = re.compile(r"part-(\d{5})\.parquet$")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_options(columns: list[str]) -> dict:
    # Encoded images are already compressed and unique: zstd, a dictionary or min/max statistics
    # on them cost CPU (~30 % of a part's write) and save nothing.
    small = [name for name in columns if name != "data"]
    return {"compression": {name: ("zstd" if name in small else "none") for name in columns},
            "use_dictionary": small, "write_statistics": small}


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **_write_options(table.column_names))


@contextmanager
def part_writer(path: str | Path, schema: pa.Schema):
    """Stream tables into one part, a row group each, so a part never has to fit in memory;
    the part appears (renamed into place) only if the whole block succeeds."""
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema, **_write_options(schema.names))
        try:
            yield writer.write_table
        finally:
            writer.close()


def write_bytes(data: bytes, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_json(obj, path: str | Path) -> None:
    write_bytes((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), path)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_index(path: str | Path) -> int:
    m = _PART_RE.search(str(path))
    if not m:
        raise ValueError(f"not a part file: {path}")
    return int(m.group(1))


def clean_temp_files(folder: Path) -> None:
    """Remove leftovers of a killed run (temporary names never look like finished outputs)."""
    if folder.is_dir():
        for p in folder.rglob(".*.tmp"):
            p.unlink(missing_ok=True)


class NodeStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()  # absolute: Ray workers may run elsewhere in the tree

    # --- layout -----------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def samples_path(self) -> Path:
        return self.root / "samples" / "samples.parquet"

    def image_parts(self) -> list[Path]:
        return sorted(self.images_dir.glob("part-*.parquet"))

    def annotator_dir(self, annotator: str, params_hash: str) -> Path:
        return self.nodes_dir / annotator / params_hash


    # --- reading ----------------------------------------------------------------------------
    def node_index(self, sources: dict[str, Path]) -> pa.Table:
        """(image_id, node_type, path) of every ok row, for node types mapped to their folders."""
        tables = []
        for node, folder in sorted(sources.items()):
            for part in sorted(folder.glob("part-*.parquet")):
                t = pq.read_table(part, columns=["image_id", "node_type", "error"])
                mask = pa.compute.and_(pa.compute.equal(t["node_type"], node), pa.compute.is_null(t["error"]))
                t = t.filter(mask).select(["image_id", "node_type"])
                tables.append(t.append_column("path", pa.array([str(part)] * len(t), pa.string())))
        if not tables:
            return pa.table({"image_id": pa.array([], pa.string()), "node_type": pa.array([], pa.string()),
                             "path": pa.array([], pa.string())})
        index = pa.concat_tables(tables)
        # Identical bytes ingested twice: the first part's copy is the node (the other is a failure row).
        seen, keep = set(), []
        for i, key in enumerate(zip(index["image_id"].to_pylist(), index["node_type"].to_pylist())):
            keep.append(key not in seen)
            seen.add(key)
        return index.filter(pa.array(keep))

    def failures(self) -> pa.Table:
        """Every failure so far: rejected inputs, cross-part duplicates and annotator errors."""
        stages, sources, annots, reasons, details = [], [], [], [], []

        def add(stage, source, annotator, error):
            reason, _, detail = error.partition(": ")
            stages.append(stage), sources.append(source), annots.append(annotator)
            reasons.append(reason), details.append(detail)

        first_ref: dict[str, str] = {}
        for part in self.image_parts():
            for row in pq.read_table(part, columns=["image_id", "meta", "error"]).to_pylist():
                ref = json.loads(row["meta"])["source"]
                if row["error"] is not None:
                    add("ingest", ref, "ingest", row["error"])
                elif row["image_id"] in first_ref:
                    add("ingest", ref, "ingest", f"duplicate_content: same bytes as {first_ref[row['image_id']]}")
                else:
                    first_ref[row["image_id"]] = ref
        for part in sorted(self.nodes_dir.glob("*/*/part-*.parquet")):
            t = pq.read_table(part, columns=["image_id", "annotator", "error"])
            for row in t.filter(pa.compute.is_valid(t["error"])).to_pylist():
                add("annotate", row["image_id"], row["annotator"], row["error"])
        return pa.table({"stage": stages, "source": sources, "annotator": annots, "reason": reasons,
                         "detail": details}, schema=FAILURE_SCHEMA)


def read_rows(path: str | Path, image_ids: Iterable[str], node_type: str) -> dict[str, dict]:
    """Rows of one part for the given image ids: {image_id: {data, format, meta, width, height}}."""
    wanted = set(image_ids)
    t = pq.read_table(path, columns=["image_id", "node_type", "data", "format", "meta", "width", "height", "error"])
    out = {}
    for row in t.to_pylist():
        if row["node_type"] == node_type and row["error"] is None and row["image_id"] in wanted:
            out[row["image_id"]] = row
    return out


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
