"""The node store: Parquet part files, one row per (image id, node type), that every stage reads and writes.

Layout under `paths.store`:
  images/part-<id>.parquet                        ingest output (node "image"); <id> is a digest of the
                                                  part's input references, so an image never moves
  images/listing.parquet                          every live input reference: (ref, stamp, part, seq)
  images/tombstones.parquet                       (part, image_id) rows whose input disappeared or changed
  images/imported/part-<id>.parquet               nodes a source brought with its images (same part id)
  nodes/<annotator>/<key>/annotator.json          name, version, params, code digest, produces
  nodes/<annotator>/<key>/part-<id>.parquet       one file per image part, same part id
  <folder>/_summary.parquet                       (part, image_id, node_type, error, quality[, ref]) of every
                                                  row of the folder's parts, kept up to date incrementally
  nodes/catalog.json                              where every node type lives (pipelines/catalog.py)
  samples/                                        the sampler's outputs, written together as one set

A part is complete exactly when its file exists: it is written under a temporary name and
renamed. Parts are immutable: new inputs go to new parts, so adding images computes only
the new parts of every annotator, and a killed run resumes. Rows whose annotator failed
carry `error` and no data; rows whose output is degenerate carry `quality` (a reason) and
their data, and are never used as nodes. No per-image files: DVC stays fast.
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

import numpy as np
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
    ("quality", pa.string()),  # null when usable; else why the output is degenerate (no_person, ...)
])

FAILURE_SCHEMA = pa.schema([
    ("stage", pa.string()),
    ("source", pa.string()),  # input reference (ingest) or image id (later stages)
    ("annotator", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

_PART_RE = re.compile(r"part-([0-9a-z]+)\.parquet$")
# Image parts are written as one row group, annotator parts one row group per annotated batch: smaller
# row groups made random cell reads at most 1.26x faster and whole-part reads 2.5x slower
# (benchmarks/storage.py), since a random read's cost is the file opened, not the bytes.


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _umask_mode()


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; outputs get the umask's mode like any written file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_options(columns: list[str]) -> dict:
    # Encoded images are already compressed and unique: zstd, a dictionary or min/max statistics
    # on them cost CPU (~30 % of a part's write) and save nothing. Every page carries a CRC32, which
    # `read_part` verifies: a flipped byte in a stored JPEG cell is an error, never a shipped sample.
    small = [name for name in columns if name != "data"]
    return {"compression": {name: ("zstd" if name in small else "none") for name in columns},
            "use_dictionary": small, "write_statistics": small, "write_page_checksum": True}


class CorruptPartError(OSError):
    """A store file failed its page checksums or could not be decoded: bit rot, a torn copy."""

    def __init__(self, path: str | Path, detail: str):
        super().__init__(f"corrupt store file {path}: {detail}. Run `vicl verify --repair` (it removes damaged "
                         f"parts), then `vicl run` to recompute them")
        self.path = str(path)


def read_part(path: str | Path, **kwargs) -> pa.Table:
    """`pq.read_table` of a store file with its page checksums verified; damage is a CorruptPartError
    naming the file (a missing file stays FileNotFoundError)."""
    try:
        return pq.read_table(path, page_checksum_verification=True, **kwargs)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise CorruptPartError(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


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


def part_name(part_id: str) -> str:
    return f"part-{part_id}.parquet"


def part_id(path: str | Path) -> str:
    m = _PART_RE.search(str(path))
    if not m:
        raise ValueError(f"not a part file: {path}")
    return m.group(1)


def clean_temp_files(folder: Path) -> None:
    """Remove leftovers of a killed run (temporary names never look like finished outputs)."""
    if folder.is_dir():
        for p in folder.rglob(".*.tmp"):
            p.unlink(missing_ok=True)


SUMMARY = "_summary.parquet"
IMPORT_ANNOTATOR = "import"  # the annotator name of the nodes sources bring (catalog, failures, quality table)
SUMMARY_SCHEMA = pa.schema([
    ("part", pa.string()), ("image_id", pa.string()), ("node_type", pa.string()), ("error", pa.string()),
    ("quality", pa.string()), ("ref", pa.string()),  # ref: the input reference (image parts only)
    # image parts only: the record an image belongs to (an edit pair...) and its role in it
    ("record", pa.string()), ("role", pa.string()),
])


def _part_summary(path: Path) -> pa.Table:
    columns = pq.read_schema(path).names
    t = read_part(path, columns=[c for c in ("image_id", "node_type", "error", "quality", "meta") if c in columns])
    n = t.num_rows
    quality = t["quality"] if "quality" in columns else pa.nulls(n, pa.string())
    if t["node_type"].to_pylist()[:1] == ["image"]:  # ingest rows: reference and record of each input
        metas = [json.loads(m) for m in t["meta"].to_pylist()]
        ref, record, role = (pa.array([m.get(k) for m in metas], pa.string()) for k in ("source", "record", "role"))
    else:
        ref = record = role = pa.nulls(n, pa.string())
    return pa.table({"part": pa.array([part_id(path)] * n, pa.string()), "image_id": t["image_id"],
                     "node_type": t["node_type"], "error": t["error"], "quality": quality, "ref": ref,
                     "record": record, "role": role}, schema=SUMMARY_SCHEMA)


def folder_summary(folder: Path) -> pa.Table:
    """(part, image_id, node_type, error, quality, ref) of every row of a folder's parts.

    Kept in `<folder>/_summary.parquet` and updated incrementally: only parts written since the
    last summary are read, and rows of parts that are gone are dropped. The stage that writes a
    folder brings its summary up to date when it ends, so later stages only read it (and DVC
    sees no stage change another stage's output). This is what every later stage's bookkeeping
    reads (a few compact columns), never the parts themselves."""
    path = folder / SUMMARY
    parts = {part_id(p): p for p in folder.glob("part-*.parquet")} if folder.is_dir() else {}
    old = pq.read_table(path) if path.exists() else SUMMARY_SCHEMA.empty_table()
    if old.schema != SUMMARY_SCHEMA:  # written by an older vicl: summarise every part again
        old = SUMMARY_SCHEMA.empty_table()
        path.unlink()
    old_parts = set(old["part"].unique().to_pylist())
    new = [_part_summary(parts[k]) for k in sorted(set(parts) - old_parts)]
    if old_parts - set(parts):
        old = old.filter(pa.compute.is_in(old["part"], pa.array(sorted(parts), pa.string())))
    if new or old_parts - set(parts):
        table = pa.concat_tables([old, *new]).sort_by([("part", "ascending"), ("image_id", "ascending"),
                                                       ("node_type", "ascending")])
        if parts:
            write_table(table, path)
        elif path.exists():
            path.unlink()
        return table
    return old


class NodeStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()  # absolute: Ray workers may run elsewhere in the tree
        self._memo: dict[str, tuple[tuple, object]] = {}

    def _images_state(self) -> tuple:
        """Stamps of what the images bookkeeping is read from: a new part, summary, tombstone or
        listing changes it (the folder's mtime moves when a part file is added or removed)."""
        out = []
        for p in (self.images_dir, self.images_dir / SUMMARY, self.images_dir / "tombstones.parquet",
                  self.images_dir / "ingest.json"):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def _cached(self, name: str, compute):
        """`compute()` once per state of the images folder: several readers in one stage (catalog,
        subjects, record links, mining, failures) share one summary and one record table."""
        state = self._images_state()
        hit = self._memo.get(name)
        if hit is not None and hit[0] == state:
            return hit[1]
        value = compute()
        self._memo[name] = (self._images_state(), value)  # after: computing may bring the summary up to date
        return value

    # --- layout -----------------------------------------------------------------------------
    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def imported_dir(self) -> Path:
        """Nodes the sources brought (a released Graph200K's canny, depth, ...), one part per image part."""
        return self.images_dir / "imported"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def mined_dir(self) -> Path:
        return self.root / "mined"

    @property
    def listing_path(self) -> Path:
        """Ingest's listing of every input (reference, stamp, part): what the next run compares with."""
        return self.images_dir / "listing.parquet"

    @property
    def ingest_info_path(self) -> Path:
        """Ingest's record of its run: normalisation fingerprint, parts, params, part order."""
        return self.images_dir / "ingest.json"

    @property
    def tombstones_path(self) -> Path:
        return self.images_dir / "tombstones.parquet"

    @property
    def mined_summary_path(self) -> Path:
        """The mine stage's summary (counts, held-out filter figures): its completion marker."""
        return self.mined_dir / "mined.json"

    @property
    def sample_inputs_path(self) -> Path:
        """What the samples were drawn from (fingerprint) and their summary (task mix, edit pairing)."""
        return self.samples_dir / "inputs.json"

    @property
    def splits_path(self) -> Path:
        return self.samples_dir / "splits.parquet"

    @property
    def leakage_path(self) -> Path:
        return self.samples_dir / "leakage.json"

    @property
    def excluded_path(self) -> Path:
        """Store images excluded from every split as near-duplicates of benchmark images (`sample.exclude`)."""
        return self.samples_dir / "excluded.parquet"

    @property
    def benchmark_cache_path(self) -> Path:
        """The benchmark images' split embeddings and dHash64 (pipelines/decontamination.py), kept with the set."""
        return self.samples_dir / "benchmark_vectors.parquet"

    @property
    def quadruplets_path(self) -> Path:
        """The mine stage's task-vector quadruplets (pairs of unknown transformation)."""
        return self.mined_dir / "quadruplets.parquet"

    @property
    def labelled_pairs_path(self) -> Path:
        """The mine stage's pairs of known transformation (a transform key each): the sampler pairs them."""
        return self.mined_dir / "labelled_pairs.parquet"

    @property
    def judged_dir(self) -> Path:
        return self.root / "judged"

    @property
    def judge_scores_path(self) -> Path:
        """The judge stage's scores: one row per (edit pair, judge, score name); its completion marker."""
        return self.judged_dir / "scores.parquet"

    @property
    def judge_rejects_path(self) -> Path:
        """The pairs the sample stage's judge thresholds kept out of quadruplets (pair, judge, score, threshold)."""
        return self.samples_dir / "judge_rejects.parquet"

    @property
    def samples_dir(self) -> Path:
        return self.root / "samples"

    @property
    def samples_path(self) -> Path:
        return self.samples_dir / "samples.parquet"

    @property
    def export_hashes_path(self) -> Path:
        """The export's cache of shard hashes by (size, mtime) (pipelines/manifest.py: file_hashes)."""
        return self.root / "export_hashes.json"

    @property
    def catalog_path(self) -> Path:
        return self.nodes_dir / "catalog.json"  # inside the annotate stage's own output folder

    def image_parts(self) -> list[Path]:
        return sorted(self.images_dir.glob("part-*.parquet"))

    def annotator_of(self, folder: Path) -> str:
        """The annotator that wrote a node folder: `nodes/<annotator>/<key>/`, or `import` for the
        nodes the sources brought (images/imported/)."""
        return IMPORT_ANNOTATOR if Path(folder) == self.imported_dir else Path(folder).parent.name

    def annotator_dir(self, annotator: str, key: str) -> Path:
        return self.nodes_dir / annotator / key

    def tombstones(self) -> pa.Table:
        """(part, image_id) of image rows whose input was removed or changed since it was ingested."""
        path = self.tombstones_path
        if path.exists():
            return pq.read_table(path)
        return pa.table({"part": pa.array([], pa.string()), "image_id": pa.array([], pa.string())})

    # --- bookkeeping --------------------------------------------------------------------------
    def part_order(self) -> list[str]:
        """Image part ids in the order they were made (the ingest run, then the id)."""
        marker = self.ingest_info_path
        return json.loads(marker.read_text()).get("part_order", []) if marker.exists() else []

    def image_summary(self) -> pa.Table:
        """The images folder's summary without tombstoned rows, parts in the order they were made
        (so of two copies of the same bytes, the older input's is the node)."""
        return self._cached("image_summary", self._image_summary)

    def _image_summary(self) -> pa.Table:
        summary = folder_summary(self.images_dir)
        order = {p: k for k, p in enumerate(self.part_order())}
        if summary.num_rows and order:
            rank = pa.array([order.get(p, len(order)) for p in summary["part"].to_pylist()], pa.int64())
            summary = summary.append_column("_rank", rank).sort_by(
                [("_rank", "ascending"), ("part", "ascending"), ("image_id", "ascending")]).drop_columns(["_rank"])
        dead = self.tombstones()
        if dead.num_rows:
            keys = pa.compute.binary_join_element_wise(summary["part"], summary["image_id"], "/")
            dead_keys = pa.compute.binary_join_element_wise(dead["part"], dead["image_id"], "/")
            summary = summary.filter(pa.compute.invert(pa.compute.is_in(keys, dead_keys)))
        return summary

    def records(self) -> dict[str, dict[str, str]]:
        """{record id: {role: image id}} of every complete record (each role's image ingested, as a
        node or as a duplicate of one), in ingest order (parts as made, then image id); a record given
        by several inputs is the first one's (the others are `duplicate_pair`... failures,
        pipelines/records.py)."""
        return self._cached("records", self._records)[0]

    def member_meta(self, role: str) -> dict[str, dict]:
        """{record id: parsed meta of its `role` image} (the record's text, descriptions, scores), read
        from the meta column of only the image parts that hold such a row (no image bytes)."""
        return self._cached(f"member_meta/{role}", lambda: self._member_meta(role))

    def _member_meta(self, role: str) -> dict[str, dict]:
        first_ref = self._cached("records", self._records)[2]
        images = self.image_summary()
        members = images.filter(pa.compute.equal(images["role"], role))
        out: dict[str, dict] = {}
        for part in dict.fromkeys(members["part"].to_pylist()):  # the parts that hold such a row, once each
            for meta in map(json.loads, read_part(self.images_dir / part_name(part), columns=["meta"])["meta"]
                            .to_pylist()):
                record = meta.get("record")
                if meta.get("role") == role and record in first_ref and meta.get("source") == first_ref[record]:
                    out.setdefault(record, meta)
        return out

    def _records(self) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]], dict[str, str]]:
        """(records, duplicates as (ref, failure), the input ref that gives each record)."""
        from pipelines.records import duplicate_reason

        images = self.image_summary()
        members = images.filter(pa.compute.is_valid(images["record"]))
        usable = pa.compute.or_kleene(pa.compute.is_null(members["error"]),
                                      pa.compute.starts_with(members["error"], "duplicate_content"))
        by_ref: dict[str, dict] = {}
        records: dict[str, dict[str, str]] = {}
        first_ref: dict[str, str] = {}
        duplicates: list[tuple[str, str]] = []
        for record, role, image_id, ref, ok in zip(members["record"].to_pylist(), members["role"].to_pylist(),
                                                   members["image_id"].to_pylist(), members["ref"].to_pylist(),
                                                   usable.to_pylist()):
            entry = by_ref.setdefault(ref, {"record": record, "roles": {}, "ok": True})
            entry["roles"][role] = image_id
            entry["ok"] &= bool(ok)
        for ref, entry in by_ref.items():  # summary order: parts in ingest order
            if not entry["ok"]:
                continue
            record = entry["record"]
            if record in records:
                reason = duplicate_reason(entry["roles"])
                duplicates.append((ref, f"{reason}: the same {reason.split('_', 1)[1]} ({record}) as "
                                        f"{first_ref[record]}"))
                continue
            records[record], first_ref[record] = entry["roles"], ref
        return records, duplicates, first_ref

    def failures(self, annotator_folders: Iterable[Path] | None = None) -> pa.Table:
        """Every failure: rejected inputs, cross-part duplicates and annotator errors, from the
        folders' summaries (compact columns; no part is opened). `annotator_folders`: the live
        annotator folders (default: every folder under nodes/)."""
        images = self.image_summary()
        # a record's member whose bytes another input already has is no failure: the record uses that copy
        member_dup = pa.compute.and_(pa.compute.is_valid(images["role"]),
                                     pa.compute.starts_with(images["error"], "duplicate_content"))
        errors = images.filter(pa.compute.and_kleene(pa.compute.is_valid(images["error"]),
                                                     pa.compute.invert(member_dup)))
        out = [_failure_rows("ingest", errors["ref"], "ingest", errors["error"])]
        ok = images.filter(pa.compute.is_null(images["error"]))
        first = _first_copies(ok)
        dup = ok.filter(pa.compute.invert(pa.compute.or_(first, pa.compute.is_valid(ok["role"]))))
        if dup.num_rows:
            firsts = ok.filter(first)
            ref_of = dict(zip(firsts["image_id"].to_pylist(), firsts["ref"].to_pylist()))
            detail = [f"duplicate_content: same bytes as {ref_of[i]}" for i in dup["image_id"].to_pylist()]
            out.append(_failure_rows("ingest", dup["ref"], "ingest", pa.array(detail, pa.string())))
        dup_records = self._cached("records", self._records)[1]
        if dup_records:
            out.append(_failure_rows("ingest", pa.array([r for r, _ in dup_records], pa.string()), "ingest",
                                     pa.array([d for _, d in dup_records], pa.string())))
        live = ok.filter(first)["image_id"]
        folders = sorted(self.nodes_dir.glob("*/*")) if annotator_folders is None else sorted(annotator_folders)
        for folder in folders:
            if not folder.is_dir():
                continue
            s = folder_summary(folder)
            s = s.filter(pa.compute.is_valid(s["error"]))
            if s.num_rows:
                s = s.filter(pa.compute.is_in(s["image_id"], live))  # images since removed are no failure
                # one failure per (image, annotator), not one per produced node type
                s = s.group_by(["image_id", "error"]).aggregate([]).sort_by("image_id")
                name = self.annotator_of(folder)
                out.append(_failure_rows("ingest" if folder == self.imported_dir else "annotate", s["image_id"],
                                         name, s["error"]))
        table = pa.concat_tables(out)
        return table.sort_by([("stage", "ascending"), ("annotator", "ascending"), ("source", "ascending"),
                              ("reason", "ascending")])


def _first_copies(ok_images: pa.Table) -> pa.Array:
    """Mask of the rows that are the first copy of their image id (the order of the summary: by part)."""
    rows = ok_images.select(["image_id"]).append_column("row", pa.array(range(ok_images.num_rows), pa.int64()))
    first = rows.group_by("image_id", use_threads=False).aggregate([("row", "min")])["row_min"]
    mask = np.zeros(ok_images.num_rows, bool)
    mask[first.to_numpy()] = True
    return pa.array(mask)


def _failure_rows(stage: str, sources, annotator: str, errors) -> pa.Table:
    errors = errors.to_pylist() if hasattr(errors, "to_pylist") else list(errors)
    split = [e.partition(": ") for e in errors]
    n = len(errors)
    return pa.table({"stage": [stage] * n, "source": sources, "annotator": [annotator] * n,
                     "reason": [r for r, _, _ in split], "detail": [d for _, _, d in split]}, schema=FAILURE_SCHEMA)


CELL_COLUMNS = ["image_id", "node_type", "data", "format", "meta", "width", "height"]


def read_cells(path: str | Path, image_ids: Iterable[str], node_type: str) -> dict[str, dict]:
    """The usable rows of one node type for the given image ids in one part file:
    {image_id: {data, format, meta, width, height}}; the filter is pushed into the Parquet reader
    (row groups without a wanted id, by their statistics, are skipped)."""
    wanted = sorted(set(image_ids))
    if not wanted:
        return {}
    t = read_part(path, columns=CELL_COLUMNS + ["error", "quality"],
                      filters=[("image_id", "in", wanted), ("node_type", "=", node_type)])
    out = {}
    for row in t.to_pylist():
        if row["error"] is None and row["quality"] is None and row["image_id"] not in out:
            out[row["image_id"]] = row
    return out


def commit_folder(staging: Path, final: Path) -> None:
    """Put a fully written folder in place of `final` as one step: readers see the old complete set
    or the new one, never a mix (a crash between the two renames is undone by `recover_folder`)."""
    old = final.with_name(final.name + ".old")
    remove_tree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    remove_tree(old)


def recover_folder(final: Path) -> None:
    """Undo a commit_folder cut between its renames, and drop an unfinished staging folder."""
    old = final.with_name(final.name + ".old")
    if old.exists() and not final.exists():
        os.replace(old, final)
    remove_tree(old)
    remove_tree(final.with_name(final.name + ".staging"))


def staging_folder(final: Path) -> Path:
    staging = final.with_name(final.name + ".staging")
    remove_tree(staging)
    staging.mkdir(parents=True)
    return staging


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
