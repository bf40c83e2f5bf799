"""Ingest: input entries -> normalised RGB images in Parquet parts of the node store, incrementally.

The inputs are listed (stat only, pipelines/sources.py) and compared with the previous listing
(`images/listing.parquet`): an entry with the same reference and stamp stays in the part it is
in; new or changed entries are cut into new parts, each named by a digest of its entries and of
the normalisation params, so the same inputs always make the same part and existing parts never
change. An entry that disappeared (or changed) is tombstoned (`images/tombstones.parquet`), not
a reason to rebuild; a part with no live entry left is deleted. Each pending part is one Ray
task that loads, validates, normalises and re-encodes its images and writes the part itself
(atomically); a bad input is an error row of its part, and the run goes on.

References are stored (listing, part ids, meta `source`) as `sources.stored_ref`: relative to the
working directory for a source whose params path is relative (the same build in two folders makes
the same parts), and names that are not UTF-8 are listed, ingested and found again like any other
(pipelines/sources.py says how).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import executor
from core.images import ImageRejected, content_id, decode_for_store, encode_image
from pipelines.params import IngestParams, Params, SourceParams
from pipelines.stage import Stage
from pipelines.records import layout_of
from pipelines.sources import Entry, check_inputs, list_entries, load_chunk, ref_from_stored, ref_from_text, ref_text, stored_ref
from pipelines.store import (IMPORT_ANNOTATOR, NODE_SCHEMA, NodeStore, clean_temp_files, folder_summary, part_id,
                             part_name, write_json, write_table)

INGEST_VERSION = "3"  # 3: DCT-scale JPEG decode when shrinking 2x or more, area-filter shrink
LISTING_SCHEMA = pa.schema([
    ("ref", pa.string()), ("container", pa.string()), ("stamp", pa.string()), ("reject", pa.string()),
    ("source", pa.int32()), ("part", pa.string()), ("seq", pa.int32()),  # seq: the ingest run that made the part
])


def _row(image_id: str, data: bytes, fmt: str, width: int, height: int, meta: dict, seconds: float,
         error: str | None, fingerprint: str) -> dict:
    return {"image_id": image_id, "node_type": "image", "data": data, "format": fmt, "width": width,
            "height": height, "meta": json.dumps(meta, sort_keys=True), "annotator": "ingest",
            "annotator_version": INGEST_VERSION, "params_hash": fingerprint, "seconds": seconds,
            "error": _utf8(error), "quality": None}


def ingest_entries(source: SourceParams, entries: list[Entry], params: IngestParams, fingerprint: str,
                   base: str | None = None) -> pa.Table:
    """The pure core: one chunk of entries -> one part table (ok rows and error rows), by image id."""
    return ingest_part(source, entries, params, fingerprint, base)[0]


def ingest_part(source: SourceParams, entries: list[Entry], params: IngestParams,
                fingerprint: str, base: str | None = None) -> tuple[pa.Table, pa.Table]:
    """One chunk of entries -> (image part, imported node part).

    A record layout's entry gives one row per member image, each with the record id and its role
    in its meta; a member whose bytes are already in the part gets a `duplicate_content` row that
    still names its record (the record uses the first copy). Nodes a record brings (a released
    Graph200K row's canny, depth, ...) become rows of the imported part, keyed by the first
    member's image id, normalised like images and stored losslessly. `base`: the directory stored
    references are relative to (the driver's working directory; a Ray worker's may differ)."""
    base = base or os.getcwd()
    rows, nodes, seen = [], [], {}
    layout = layout_of(source.layout)
    for ref, data in load_chunk(source, entries):
        shown = stored_ref(ref, source, base)  # meta is read back into Arrow strings: valid UTF-8 only
        if layout is None or isinstance(data, Exception):
            rows.append(_image_row(data, {"source": shown}, params, fingerprint, seen))
            continue
        record = layout.expand(data, source.columns, _record_root(source, ref))
        ids = {m.role: content_id(m.data) for m in record.members if isinstance(m.data, bytes)}
        record_id = record.record_id or (layout.derive_id(ids, record.text) if len(ids) == len(layout.roles)
                                         else None)
        member_rows = []
        for m in record.members:
            meta = {"source": shown, "role": m.role, "text": record.text, **record.meta,
                    **({"record": record_id} if record_id else {})}
            member_rows.append(_image_row(m.data, meta, params, fingerprint, seen))
        rows += member_rows
        first = member_rows[0]
        if record.nodes and (first["error"] is None or first["error"].startswith("duplicate_content")):
            nodes += [_node_row(first["image_id"], node, value, {"source": shown, **meta}, params, fingerprint)
                      for node, (value, meta) in sorted(record.nodes.items())]
    order = [("image_id", "ascending"), ("meta", "ascending")]
    table = pa.Table.from_pylist(rows, schema=NODE_SCHEMA)
    imported = pa.Table.from_pylist(nodes, schema=NODE_SCHEMA)
    return table.take(pa.compute.sort_indices(table, order)), \
        imported.take(pa.compute.sort_indices(imported, [("image_id", "ascending"), ("node_type", "ascending")]))


def _node_row(image_id: str, node: str, data, meta: dict, params: IngestParams, fingerprint: str) -> dict:
    """A node the source made, validated and shrunk like its image, stored as PNG (maps stay exact)."""
    start = time.perf_counter()
    row = {"image_id": image_id, "node_type": node, "data": b"", "format": "none", "width": 0, "height": 0,
           "meta": json.dumps(meta, sort_keys=True), "annotator": IMPORT_ANNOTATOR,
           "annotator_version": INGEST_VERSION, "params_hash": fingerprint, "seconds": 0.0, "error": None,
           "quality": None}
    if isinstance(data, Exception):
        reason = data.reason if isinstance(data, ImageRejected) else "unreadable"
        detail = data.detail if isinstance(data, ImageRejected) else str(data)
        return {**row, "error": _utf8(f"{reason}: {node}: {detail}")}
    try:
        rgb, _ = decode_for_store(data, max_pixels=params.max_pixels, min_side=1, max_side=params.max_side)
    except ImageRejected as e:
        return {**row, "error": _utf8(f"{e.reason}: {node}: {e.detail}")}
    return {**row, "data": encode_image(rgb, "png", 100), "format": "png", "width": rgb.shape[1],
            "height": rgb.shape[0], "seconds": time.perf_counter() - start}


def _record_root(source: SourceParams, ref: str) -> Path | None:
    """The folder a record's relative image paths resolve against: the table file's folder, or the
    saved dataset's folder; None where fields hold bytes only (folders of pairs, tars)."""
    container = ref.rsplit("#", 1)[0]
    if source.kind == "parquet":
        return Path(container).parent
    return Path(container) if source.kind == "hf_disk" else None


def _image_row(data, meta: dict, params: IngestParams, fingerprint: str, seen: dict) -> dict:
    """One input's image row: validated, normalised and encoded, or an error row with its reason."""
    start = time.perf_counter()
    role = f"{meta['role']} image: " if "role" in meta else ""
    if isinstance(data, ImageRejected):
        return _row("", b"", "none", 0, 0, meta, 0.0, f"{data.reason}: {role}{data.detail}", fingerprint)
    if isinstance(data, Exception):
        return _row("", b"", "none", 0, 0, meta, 0.0, f"unreadable: {role}{data}", fingerprint)
    image_id = content_id(data) if data else ""
    try:
        rgb, (orig_w, orig_h) = decode_for_store(data, max_pixels=params.max_pixels, min_side=params.min_side,
                                                 max_side=params.max_side)
    except ImageRejected as e:
        return _row(image_id, b"", "none", 0, 0, meta, 0.0, f"{e.reason}: {role}{e.detail}", fingerprint)
    if image_id in seen:
        return _row(image_id, b"", "none", 0, 0, meta, 0.0, f"duplicate_content: same bytes as {seen[image_id]}",
                    fingerprint)
    seen[image_id] = meta["source"] + (f" ({meta['role']})" if "role" in meta else "")
    meta = {**meta, "orig_width": int(orig_w), "orig_height": int(orig_h)}
    encoded = encode_image(rgb, params.image_format, params.quality)
    return _row(image_id, encoded, params.image_format, rgb.shape[1], rgb.shape[0], meta,
                time.perf_counter() - start, None, fingerprint)


def ingest_refs(source: SourceParams, refs: list[str], params: IngestParams, fingerprint: str) -> pa.Table:
    """`ingest_entries` for references of a source listed now (tests, benchmarks)."""
    by_ref = {e.ref: e for e in list_entries(source)}
    return ingest_entries(source, [by_ref.get(r, Entry(r, r.rsplit("#", 1)[0] if "#" in r else r)) for r in refs],
                          params, fingerprint)


def _ingest_part_task(item: dict) -> dict:
    """Ray Data map function: one part's entries -> one part file; returns counts only."""
    params = IngestParams.model_validate_json(item["ingest"])
    source = SourceParams.model_validate_json(item["source"])
    entries = [Entry(*e) for e in json.loads(item["entries"])]
    table, imported = ingest_part(source, entries, params, item["fingerprint"], item["base"])
    if imported.num_rows:  # before the image part: the image part's existence means the part is done
        write_table(imported, NodeStore(item["store"]).imported_dir / Path(item["path"]).name)
    write_table(table, item["path"])
    failed = table.filter(pa.compute.is_valid(table["error"])).num_rows
    return {"part": item["part"], "ok": table.num_rows - failed, "failed": failed}


def normalisation_fingerprint(params: IngestParams) -> str:
    """What decides an image's stored bytes besides its input: parts made under other settings are stale."""
    blob = json.dumps({"version": INGEST_VERSION, **params.model_dump(mode="json", exclude={"sources", "part_size"})},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _part_of(fingerprint: str, source: SourceParams, entries: list[Entry], base: str, seq: int) -> str:
    """A new part's id: its entries' stored references (no absolute folder, no name that must be
    UTF-8) and the ingest run that made it (`seq`: a changed input is cut into a part of a later run,
    never one that shares an id with its old part). File stamps stay out: a copy or a clone of the
    inputs has other mtimes, and the same build in two folders must make the same parts."""
    digest = hashlib.sha256(f"{fingerprint}\n{source.model_dump_json()}\n{seq}\n".encode())
    for e in entries:
        digest.update(f"{stored_ref(e.ref, source, base)}\t{_stored(e.reject)}\n".encode())
    return digest.hexdigest()[:16]


def read_listing(store: NodeStore) -> tuple[dict, pa.Table]:
    marker, path = store.ingest_info_path, store.listing_path
    if not (marker.exists() and path.exists()):
        return {}, LISTING_SCHEMA.empty_table()
    return json.loads(marker.read_text()), pq.read_table(path)


def plan_ingest(params: IngestParams, store: NodeStore) -> tuple[pa.Table, dict[str, tuple[int, list[Entry]]], str]:
    """(new listing, {part id: (source index, entries)} of every listed part, fingerprint)."""
    fingerprint = normalisation_fingerprint(params)
    base = os.getcwd()
    info, old = read_listing(store)
    if info.get("fingerprint") != fingerprint:
        old = LISTING_SCHEMA.empty_table()
    old_rows = old.to_pylist()
    previous: dict[int, dict[str, list[Entry]]] = {}
    placed: dict[tuple, tuple[str, int]] = {}
    for r in old_rows:
        if r["source"] >= len(params.sources):
            continue  # a source removed from params: its entries are gone
        source = params.sources[r["source"]]
        e = Entry(ref_from_stored(r["ref"], source, base), ref_from_stored(r["container"], source, base), r["stamp"],
                  None if r["reject"] is None else ref_from_text(r["reject"]))
        previous.setdefault(r["source"], {}).setdefault(e.container, []).append(e)
        placed[(r["source"], e)] = (r["part"], r["seq"])
    seq = max((r["seq"] for r in old_rows), default=-1) + 1
    rows, parts = [], {}
    for k, source in enumerate(params.sources):
        entries = list_entries(source, previous.get(k))
        fresh = []
        for e in entries:
            if (k, e) in placed:
                part, part_seq = placed[(k, e)]
                rows.append({**_entry_row(e, k, source, base), "part": part, "seq": part_seq})
                parts.setdefault(part, (k, []))[1].append(e)
            else:
                fresh.append(e)
        for i in range(0, len(fresh), params.part_size):
            chunk = fresh[i:i + params.part_size]
            part = _part_of(fingerprint, source, chunk, base, seq)
            rows.extend({**_entry_row(e, k, source, base), "part": part, "seq": seq} for e in chunk)
            parts.setdefault(part, (k, []))[1].extend(chunk)
    listing = pa.Table.from_pylist(rows, schema=LISTING_SCHEMA) if rows else LISTING_SCHEMA.empty_table()
    return listing, parts, fingerprint


def _entry_row(e: Entry, k: int, source: SourceParams, base: str) -> dict:
    return {"ref": stored_ref(e.ref, source, base), "container": stored_ref(e.container, source, base),
            "stamp": e.stamp, "reject": _stored(e.reject), "source": k}


def _stored(text: str | None) -> str | None:
    """`ref_text` of an optional field (a reject may quote a name): read back by `ref_from_text`."""
    return None if text is None else ref_text(text)


def _utf8(text: str | None) -> str | None:
    """An error as valid UTF-8 text: unchanged unless it quotes a name that is not UTF-8."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ref_text(text)
    return text


def _unbased(refs: pa.ChunkedArray) -> pa.ChunkedArray:
    prefix = os.getcwd().rstrip(os.sep) + os.sep
    return pa.compute.replace_substring_regex(refs.cast(pa.string()), f"^{re.escape(prefix)}", "")


def _update_tombstones(store: NodeStore, listing: pa.Table) -> None:
    """Tombstone image rows whose reference is no longer listed in their part; delete parts with none left."""
    live_parts = set(listing["part"].to_pylist())
    for path in store.image_parts():
        if part_id(path) not in live_parts:
            (store.imported_dir / path.name).unlink(missing_ok=True)  # the nodes it brought go with it
            path.unlink()
    summary = store.image_summary()
    # both sides without the working directory: parts made before references were stored relative
    # hold absolute ones in their meta, and stay live under the relative references listed now
    keys = pa.compute.binary_join_element_wise(summary["part"], _unbased(summary["ref"]), "\t")
    live = pa.compute.binary_join_element_wise(listing["part"], _unbased(listing["ref"]), "\t")
    gone = summary.filter(pa.compute.invert(pa.compute.is_in(keys, live)))
    old = store.tombstones()
    old = old.filter(pa.compute.is_in(old["part"], pa.array(sorted(live_parts), pa.string())))
    dead = pa.concat_tables([old, gone.select(["part", "image_id"])]).group_by(["part", "image_id"]).aggregate([])
    dead = dead.sort_by([("part", "ascending"), ("image_id", "ascending")])
    path = store.tombstones_path
    if dead.num_rows or path.exists():
        if not dead.equals(old.sort_by([("part", "ascending"), ("image_id", "ascending")])) or not path.exists():
            write_table(dead, path)


def run_ingest(params: Params, store: NodeStore, progress=None) -> dict:
    listing, parts, fingerprint = plan_ingest(params.ingest, store)
    clean_temp_files(store.images_dir)
    order = {}
    for r in listing.select(["part", "seq"]).to_pylist():
        order.setdefault(r["part"], r["seq"])
    info = {"fingerprint": fingerprint, "parts": len(parts), "params": json.loads(params.ingest.model_dump_json()),
            "part_order": sorted(order, key=lambda p: (order[p], p))}
    write_table(listing, store.listing_path)
    write_json(info, store.ingest_info_path)
    _update_tombstones(store, listing)
    pending = []
    for part, (k, entries) in sorted(parts.items()):
        path = store.images_dir / part_name(part)
        if not path.exists():
            pending.append({"part": part, "path": str(path), "store": str(store.root), "fingerprint": fingerprint,
                            "base": os.getcwd(),
                            "entries": json.dumps([[e.ref, e.container, e.stamp, e.reject] for e in entries]),
                            "source": params.ingest.sources[k].model_dump_json(),
                            "ingest": params.ingest.model_dump_json()})
    for _ in executor.map_tasks(_ingest_part_task, pending, progress, "ingest parts"):
        pass
    folder_summary(store.images_dir)  # up to date when the stage ends: later stages only read it
    folder_summary(store.imported_dir)
    return {**summarise_ingest(store), "new_parts": len(pending)}


def summarise_ingest(store: NodeStore) -> dict:
    """Live images (first copies of each content id) and ingest failures: the numbers every report uses."""
    failures = store.failures(annotator_folders=[])
    summary = store.image_summary()
    ok = pa.compute.count_distinct(summary.filter(pa.compute.is_null(summary["error"]))["image_id"]).as_py() \
        if summary.num_rows else 0
    return {"parts": len(store.image_parts()), "ok": ok, "failed": failures.num_rows}



def ingest_status(params: Params, store: NodeStore) -> list[str]:
    marker = store.ingest_info_path
    if not marker.exists():
        return ["ingest:   not run (`vicl ingest`)"]
    info = json.loads(marker.read_text())
    parts = store.image_parts()
    ingest = summarise_ingest(store)
    return [f"ingest:   {len(parts)}/{info['parts']} parts, {ingest['ok']} images, {ingest['failed']} failed"
            + ("" if len(parts) == info["parts"] else " (incomplete: run `vicl ingest`)")]


STAGE = Stage(
    name="ingest", help="read the configured sources into the node store (normalised RGB images)",
    run=run_ingest, check=check_inputs, status=ingest_status,
    writes=("{store}/images",), persist=("{store}/images",), done="store.listing_path",
    params=("ingest",),
    code=("pipelines/stages/ingest.py", "pipelines/sources.py", "pipelines/records.py", "core/images.py",
          "core/files.py", "pipelines/store.py"))
