"""Ingest: input references -> normalised RGB images in Parquet parts of the node store.

Each chunk of `part_size` references is one Ray Data task that loads, validates,
normalises and re-encodes its images and writes `images/part-NNNNN.parquet` itself
(atomically). A reference that fails becomes an error row of its part, so the part file
alone records everything about its chunk and a re-run skips it.
"""

from __future__ import annotations

import hashlib
import json
import time

import pyarrow as pa

from pipelines.images import ImageRejected, content_id, decode_normalised, encode_image, resize_max_side
from pipelines.params import IngestParams, Params, SourceParams
from pipelines.sources import list_refs, load_chunk
from pipelines.store import NODE_SCHEMA, NodeStore, clean_temp_files, part_name, remove_tree, write_json, write_table

INGEST_VERSION = "1"


def _row(image_id: str, data: bytes, fmt: str, width: int, height: int, meta: dict, seconds: float,
         error: str | None, fingerprint: str) -> dict:
    return {"image_id": image_id, "node_type": "image", "data": data, "format": fmt, "width": width,
            "height": height, "meta": json.dumps(meta, sort_keys=True), "annotator": "ingest",
            "annotator_version": INGEST_VERSION, "params_hash": fingerprint, "seconds": seconds, "error": error}


def ingest_refs(source: SourceParams, refs: list[str], params: IngestParams, fingerprint: str) -> pa.Table:
    """The pure core: one chunk of references -> one part table (ok rows and error rows)."""
    rows, seen = [], {}
    for ref, data in load_chunk(source, refs):
        start = time.perf_counter()
        meta = {"source": ref}
        if isinstance(data, Exception):
            rows.append(_row("", b"", "none", 0, 0, meta, 0.0, f"unreadable: {data}", fingerprint))
            continue
        image_id = content_id(data) if data else ""
        try:
            rgb = decode_normalised(data, max_pixels=params.max_pixels, min_side=params.min_side)
        except ImageRejected as e:
            rows.append(_row(image_id, b"", "none", 0, 0, meta, 0.0, f"{e.reason}: {e.detail}", fingerprint))
            continue
        if image_id in seen:
            rows.append(_row(image_id, b"", "none", 0, 0, meta, 0.0,
                             f"duplicate_content: same bytes as {seen[image_id]}", fingerprint))
            continue
        seen[image_id] = ref
        meta.update(orig_width=int(rgb.shape[1]), orig_height=int(rgb.shape[0]))
        rgb = resize_max_side(rgb, params.max_side)
        encoded = encode_image(rgb, params.image_format, params.quality)
        rows.append(_row(image_id, encoded, params.image_format, rgb.shape[1], rgb.shape[0], meta,
                         time.perf_counter() - start, None, fingerprint))
    return pa.Table.from_pylist(rows, schema=NODE_SCHEMA)


def _ingest_chunk_task(item: dict) -> dict:
    """Ray Data map function: one chunk -> one part file; returns counts only."""
    params = IngestParams.model_validate_json(item["ingest"])
    source = SourceParams.model_validate_json(item["source"])
    table = ingest_refs(source, json.loads(item["refs"]), params, item["fingerprint"])
    write_table(table, item["path"])
    failed = table.filter(pa.compute.is_valid(table["error"])).num_rows
    return {"part": item["part"], "ok": table.num_rows - failed, "failed": failed}


def plan_chunks(params: IngestParams) -> tuple[str, list[tuple[SourceParams, list[str]]]]:
    """Deterministic chunking of all references, and the fingerprint that names this ingest."""
    chunks, digest = [], hashlib.sha256()
    digest.update(INGEST_VERSION.encode())
    digest.update(params.model_dump_json().encode())
    for source in params.sources:
        refs = list_refs(source)
        for ref in refs:
            digest.update(ref.encode() + b"\n")
        for i in range(0, len(refs), params.part_size):
            chunks.append((source, refs[i:i + params.part_size]))
    return digest.hexdigest()[:16], chunks


def run_ingest(params: Params, store: NodeStore, progress=None) -> dict:
    import ray.data

    fingerprint, chunks = plan_chunks(params.ingest)
    marker = store.images_dir / "ingest.json"
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") != fingerprint:
        remove_tree(store.images_dir)  # inputs or params changed: the old parts describe other data
    clean_temp_files(store.images_dir)
    write_json({"fingerprint": fingerprint, "parts": len(chunks),
                "params": json.loads(params.ingest.model_dump_json())}, marker)

    pending = []
    for k, (source, refs) in enumerate(chunks):
        path = store.images_dir / part_name(k)
        if not path.exists():
            pending.append({"part": k, "path": str(path), "refs": json.dumps(refs), "fingerprint": fingerprint,
                            "source": source.model_dump_json(), "ingest": params.ingest.model_dump_json()})
    if pending:
        ds = ray.data.from_items(pending, override_num_blocks=len(pending))
        for _ in (progress or _identity)(ds.map(_ingest_chunk_task).iter_rows(), total=len(pending),
                                         desc="ingest parts"):
            pass
    return summarise_ingest(store)


def summarise_ingest(store: NodeStore) -> dict:
    import pyarrow.parquet as pq

    ok = failed = 0
    for part in store.image_parts():
        errors = pq.read_table(part, columns=["error"])["error"]
        failed += len(errors) - errors.null_count
        ok += errors.null_count
    return {"parts": len(store.image_parts()), "ok": ok, "failed": failed}


def _identity(it, **_):
    return it
