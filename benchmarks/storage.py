"""Node-store storage weighed on a synthetic store shaped like vicl's: random access to cells,
append of 1 % rows, and full scans, for three layouts written from the same rows.

  today     Parquet parts of 64 rows in listing order, one row group each, zstd on the small
            columns and none on `data` (as `pipelines/store.py` writes them); a cell is read by
            reading its whole part (as `read_rows` does).
  rowgroup  the same parts with rows sorted by image_id and small row groups, so a reader that
            knows (part, row group) of a cell reads only that row group (`read_row_groups`), or
            lets the row-group statistics on image_id skip the others (`filters=in`).
  lance     one Lance dataset (pylance), appended to as new fragments; a cell is read by its row
            offset (`take`) or by a filter on image_id (with a BTREE scalar index).

Rows follow `NODE_SCHEMA`: image_id (32 hex), node_type, data (real JPEG photo crops and PNG maps,
5-20 KB, each made unique by a comment chunk holding its id, so no layout can deduplicate them),
format, width, height, meta JSON, provenance columns. Caches are warm for every variant alike
(the store fits in the page cache here). Rounds alternate the variants so drift on this shared
machine hits each alike; each figure is the best round, with the median round in brackets, as a
ratio to `today`. Every variant's cells are checked to be the same bytes.

    python benchmarks/storage.py [--rows 100000] [--cells 10000,1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import shutil
import statistics
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipelines.store import NODE_SCHEMA

OUT = Path(__file__).resolve().parent / "out" / "storage"
CELL_COLUMNS = ["image_id", "node_type", "data", "format", "width", "height", "meta"]
SMALL_COLUMNS = [name for name in NODE_SCHEMA.names if name != "data"]


# --- synthetic rows ---------------------------------------------------------------------------
def encoded_pool(seed: int) -> list[tuple[str, str, bytes, int, int]]:
    """(node_type, format, bytes, width, height) of real encoded photos and maps, 5-20 KB each."""
    import cv2
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, n)() for n in ("astronaut", "coffee", "chelsea", "rocket", "retina")]
    photos = [p if p.ndim == 3 else np.stack([p] * 3, -1) for p in photos]
    pool = []
    while len(pool) < 240:
        photo = photos[len(pool) % len(photos)]
        is_map = len(pool) % 3 == 2
        side = int(rng.integers(96, 150) if is_map else rng.integers(128, 256))
        y, x = (int(rng.integers(0, photo.shape[i] - side)) for i in (0, 1))
        crop = np.ascontiguousarray(photo[y:y + side, x:x + side, :3])
        if is_map:  # a stored map: grayscale-like PNG as the annotators write them
            ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 1])
            data, node, fmt = buf.tobytes(), "grayscale", "png"
        else:
            b = io.BytesIO()
            Image.fromarray(crop).save(b, format="JPEG", quality=95)
            data, node, fmt = b.getvalue(), "image", "jpg"
        if 5_000 <= len(data) <= 20_000:
            pool.append((node, fmt, data, side, side))
    return pool


def unique_bytes(data: bytes, fmt: str, tag: bytes) -> bytes:
    """The same decodable image with `tag` inside: a JPEG COM segment or a PNG tEXt chunk."""
    if fmt == "jpg":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(tag) + 2) + tag + data[2:]
    chunk = b"tEXt" + b"id\x00" + tag
    return data[:33] + struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def image_ids(start: int, stop: int, seed: int) -> list[str]:
    return [hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=16).hexdigest() for i in range(start, stop)]


def rows_table(start: int, stop: int, pool, seed: int) -> pa.Table:
    """Rows start..stop of the synthetic store, in listing order."""
    ids = image_ids(start, stop, seed)
    picks = [pool[int(h[:8], 16) % len(pool)] for h in ids]
    columns = {
        "image_id": ids,
        "node_type": [p[0] for p in picks],
        "data": [unique_bytes(p[2], p[1], h.encode()) for p, h in zip(picks, ids)],
        "format": [p[1] for p in picks],
        "width": pa.array([p[3] for p in picks], pa.int32()),
        "height": pa.array([p[4] for p in picks], pa.int32()),
        "meta": [json.dumps({"source": f"/photos/dir{i % 97:02d}/IMG_{i:07d}.jpg", "orig_width": p[3] * 4,
                             "orig_height": p[4] * 3}, sort_keys=True) for i, p in zip(range(start, stop), picks)],
        "annotator": ["ingest"] * len(ids),
        "annotator_version": ["1"] * len(ids),
        "params_hash": ["3f9a0c1d2e4b5a67"] * len(ids),
        "seconds": pa.array(np.full(len(ids), 0.004), pa.float64()),
        "error": pa.nulls(len(ids), pa.string()),
    }
    # Columns the store gains later (null on ok rows) follow the schema, whatever it holds now.
    return pa.table({f.name: columns.get(f.name, pa.nulls(len(ids), f.type)) for f in NODE_SCHEMA},
                    schema=NODE_SCHEMA)


# --- layouts ----------------------------------------------------------------------------------
def today_options(columns: list[str]) -> dict:
    # Frozen copy of pipelines/store.py's part options when this benchmark was written.
    small = [name for name in columns if name != "data"]
    return {"compression": {name: ("zstd" if name in small else "none") for name in columns},
            "use_dictionary": small, "write_statistics": small}


class ParquetParts:
    """Parts of `part_size` rows; `row_group_rows` None = one row group per part (vicl today)."""

    def __init__(self, root: Path, part_size: int, row_group_rows: int | None):
        self.root, self.part_size, self.row_group_rows = root, part_size, row_group_rows
        self.parts: list[Path] = []
        # Catalog: id -> (part number, row group); compact NumPy columns, as a store catalog would hold.
        self.cat_ids = np.array([], dtype="U32")
        self.cat_part = np.array([], dtype=np.int32)
        self.cat_group = np.array([], dtype=np.int32)

    def append(self, table: pa.Table) -> None:
        ids, part_nos, groups = [], [], []
        for start in range(0, table.num_rows, self.part_size):
            part = table.slice(start, self.part_size)
            if self.row_group_rows:
                part = part.sort_by("image_id")  # narrow row-group ranges -> statistics can skip
            path = self.root / f"part-{len(self.parts):05d}.parquet"
            pq.write_table(part, path, row_group_size=self.row_group_rows or self.part_size,
                           **today_options(part.column_names))
            part_ids = part["image_id"].to_pylist()
            ids += part_ids
            part_nos += [len(self.parts)] * len(part_ids)
            groups += [i // (self.row_group_rows or self.part_size) for i in range(len(part_ids))]
            self.parts.append(path)
        self.cat_ids = np.concatenate([self.cat_ids, np.array(ids, dtype="U32")])
        self.cat_part = np.concatenate([self.cat_part, np.array(part_nos, dtype=np.int32)])
        self.cat_group = np.concatenate([self.cat_group, np.array(groups, dtype=np.int32)])
        order = np.argsort(self.cat_ids, kind="stable")
        self.cat_ids, self.cat_part, self.cat_group = self.cat_ids[order], self.cat_part[order], self.cat_group[order]

    def locate(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        wanted = np.array(sorted(ids), dtype="U32")
        pos = np.searchsorted(self.cat_ids, wanted)
        return wanted, self.cat_part[pos], self.cat_group[pos]

    def _by_part(self, ids):
        wanted, parts, groups = self.locate(ids)
        for p in np.unique(parts):
            sel = parts == p
            yield self.parts[p], wanted[sel], groups[sel]

    def take_whole_parts(self, ids) -> list[pa.Table]:
        out = []
        for path, want, _ in self._by_part(ids):
            t = pq.read_table(path, columns=CELL_COLUMNS)
            out.append(t.filter(pc.is_in(t["image_id"], pa.array(want.tolist()))))
        return out

    def read_rows_today(self, ids) -> list[pa.Table]:
        """What vicl's `read_rows` does per part today: whole part, every row through Python."""
        out = []
        for path, want, _ in self._by_part(ids):
            wanted = set(want.tolist())
            t = pq.read_table(path, columns=CELL_COLUMNS + ["error"])
            rows = [r for r in t.to_pylist() if r["error"] is None and r["image_id"] in wanted]
            out.append(pa.Table.from_pylist(rows, schema=t.schema).select(CELL_COLUMNS))
        return out

    def take_row_groups(self, ids) -> list[pa.Table]:
        out = []
        for path, want, groups in self._by_part(ids):
            t = pq.ParquetFile(path).read_row_groups(sorted(set(groups.tolist())), columns=CELL_COLUMNS)
            out.append(t.filter(pc.is_in(t["image_id"], pa.array(want.tolist()))))
        return out

    def take_filtered(self, ids) -> list[pa.Table]:
        return [pq.read_table(path, columns=CELL_COLUMNS, filters=[("image_id", "in", want.tolist())])
                for path, want, _ in self._by_part(ids)]

    def take_folder_filter(self, ids) -> list[pa.Table]:
        """No catalog: one dataset-wide filter; row-group statistics are the only pruning."""
        return [pq.read_table(self.root, columns=CELL_COLUMNS, filters=[("image_id", "in", list(ids))])]

    def read_parts(self, numbers: list[int]) -> list[pa.Table]:
        """What an annotate task reads: its whole part, every column."""
        return [pq.read_table(self.parts[k]) for k in numbers]

    def scan(self, columns: list[str] | None) -> int:
        nbytes = 0
        for batch in pads.dataset(self.root, format="parquet").to_batches(columns=columns):
            nbytes += batch.nbytes
        return nbytes


class LanceStore:
    def __init__(self, root: Path, version: str | None):
        self.root, self.version, self.ds = root, version, None
        self.cat_ids = np.array([], dtype="U32")
        self.cat_row = np.array([], dtype=np.int64)

    def append(self, table: pa.Table) -> None:
        import lance

        first = self.ds.count_rows() if self.ds else 0
        if self.ds is None:
            self.ds = lance.write_dataset(table, self.root, data_storage_version=self.version)
        else:
            self.ds = lance.write_dataset(table, self.root, mode="append")
        # Append-only (removals as a tombstone list, never deletes): row offsets never move.
        self.cat_ids = np.concatenate([self.cat_ids, np.array(table["image_id"].to_pylist(), dtype="U32")])
        self.cat_row = np.concatenate([self.cat_row, np.arange(first, first + table.num_rows)])
        order = np.argsort(self.cat_ids, kind="stable")
        self.cat_ids, self.cat_row = self.cat_ids[order], self.cat_row[order]

    def take(self, ids) -> list[pa.Table]:
        wanted = np.array(sorted(ids), dtype="U32")
        rows = self.cat_row[np.searchsorted(self.cat_ids, wanted)]
        return [self.ds.take(np.sort(rows).tolist(), columns=CELL_COLUMNS)]

    def take_filtered(self, ids) -> list[pa.Table]:
        return [self.ds.to_table(columns=CELL_COLUMNS, filter=pc.field("image_id").isin(list(ids)))]

    def read_parts(self, numbers: list[int], part_size: int) -> list[pa.Table]:
        """A part as a contiguous range of row offsets (rows were appended part by part)."""
        return [self.ds.take(list(range(k * part_size, (k + 1) * part_size))) for k in numbers]

    def scan(self, columns: list[str] | None) -> int:
        nbytes = 0
        for batch in self.ds.to_batches(columns=columns):
            nbytes += batch.nbytes
        return nbytes


# --- measuring --------------------------------------------------------------------------------
def cells_digest(tables: list[pa.Table]) -> str:
    t = pa.concat_tables(tables).sort_by("image_id")
    h = hashlib.sha256()
    for image_id, data in zip(t["image_id"].to_pylist(), t["data"].to_pylist()):
        h.update(image_id.encode() + data)
    return f"{t.num_rows}:{h.hexdigest()[:16]}"


def folder_stats(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def report(title: str, times: dict[str, list[float]], base: str = "today", unit: str = "s",
           extra: dict[str, str] | None = None) -> None:
    print(f"\n{title}")
    best_base, med_base = min(times[base]), statistics.median(times[base])
    for name, ts in times.items():
        best, med = min(ts), statistics.median(ts)
        note = f"  {extra[name]}" if extra and name in extra else ""
        print(f"  {name:26s} best {best:8.3f} {unit} (median {med:8.3f})   speed vs {base}: "
              f"{best_base / best:7.2f}x ({med_base / med:6.2f}x){note}")


def lance_checks(root: Path, pool, seed: int, version: str | None) -> list[str]:
    """Is take deterministic and in request order; are two writes of the same rows the same bytes;
    what does an append do to the dataset's files (DVC tracks the folder)."""
    import lance

    lines = []
    rows = rows_table(0, 2_000, pool, seed)
    a = lance.write_dataset(rows, root / "a", data_storage_version=version)
    lance.write_dataset(rows, root / "b", data_storage_version=version)
    order = [1500, 7, 999, 7, 0]
    t1, t2 = a.take(order, columns=["image_id", "data"]), a.take(order, columns=["image_id", "data"])
    in_order = t1["image_id"].to_pylist() == [rows["image_id"][i].as_py() for i in order]
    same_bytes = t1["data"].to_pylist() == [rows["data"][i].as_py() for i in order]
    lines.append(f"take: repeat-identical {t1.equals(t2)}, in request order (duplicates kept) {in_order}, "
                 f"cells byte-identical to what was written {same_bytes}")
    ha, hb = file_hashes(root / "a"), file_hashes(root / "b")
    data_a = sorted(v for k, v in ha.items() if k.startswith("data/"))
    data_b = sorted(v for k, v in hb.items() if k.startswith("data/"))
    lines.append(f"two writes of the same rows: file names equal {sorted(ha) == sorted(hb)}, data files "
                 f"byte-identical {data_a == data_b}, whole folder byte-identical {sorted(ha.values()) == sorted(hb.values())}")
    before = file_hashes(root / "a")
    a = lance.write_dataset(rows_table(2_000, 2_020, pool, seed), root / "a", mode="append")
    after = file_hashes(root / "a")
    changed = [k for k in before if after.get(k) != before[k]]
    added = sorted(set(after) - set(before))
    kinds = sorted({k.split("/")[0] for k in added})
    lines.append(f"append of 1 % (20 rows to 2,000): version {a.version}, {len(a.get_fragments())} fragments, "
                 f"{len(added)} files added (under {', '.join(kinds)}), existing files changed: {changed or 'none'}")
    pq.write_table(rows, root / "p1.parquet", **today_options(rows.column_names))
    pq.write_table(rows, root / "p2.parquet", **today_options(rows.column_names))
    lines.append(f"parquet, same check: two writes byte-identical "
                 f"{(root / 'p1.parquet').read_bytes() == (root / 'p2.parquet').read_bytes()}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--cells", default="10000,1000", help="comma-separated numbers of random cells to read")
    ap.add_argument("--append-fraction", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--part-size", type=int, default=64)
    ap.add_argument("--row-group-rows", type=int, default=8)
    ap.add_argument("--lance-version", default=None, help="Lance data_storage_version (default: pylance's)")
    ap.add_argument("--folder-filter", action="store_true",
                    help="also time a dataset-wide filters=in over all parts (no catalog); slow")
    ap.add_argument("--no-compact", action="store_true",
                    help="keep the Lance dataset as written: one fragment per write batch of 8,192 rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import lance

    shutil.rmtree(args.out, ignore_errors=True)
    pool = encoded_pool(args.seed)
    stores = {"today": ParquetParts(args.out / "today", args.part_size, None),
              f"rowgroup{args.row_group_rows}": ParquetParts(args.out / "rowgroup", args.part_size, args.row_group_rows),
              "lance": LanceStore(args.out / "lance.lance", args.lance_version)}
    for name in ("today", "rowgroup"):
        (args.out / name).mkdir(parents=True)
    rg = f"rowgroup{args.row_group_rows}"

    print(f"store: {args.rows:,} rows, parts of {args.part_size} (row groups of {args.row_group_rows} for {rg}), "
          f"pylance {lance.__version__}, pyarrow {pa.__version__}")
    write_s = dict.fromkeys(stores, 0.0)
    batch = 8_192 // args.part_size * args.part_size  # whole parts per batch
    for start in range(0, args.rows, batch):
        table = rows_table(start, min(start + batch, args.rows), pool, args.seed)
        for name, store in stores.items():
            t0 = time.perf_counter()
            store.append(table)
            write_s[name] += time.perf_counter() - t0
    # Written batch by batch, the Lance dataset has one fragment (and version) per batch; compact
    # them into one, as a dataset written in one go (or compacted now and then) would be.
    compact_s = 0.0
    if not args.no_compact:
        t0 = time.perf_counter()
        stores["lance"].ds.optimize.compact_files()
        stores["lance"].ds.cleanup_old_versions(older_than=datetime.timedelta(0))
        stores["lance"].ds = lance.dataset(stores["lance"].root)
        compact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stores["lance"].ds.create_scalar_index("image_id", "BTREE")
    index_s = time.perf_counter() - t0
    sizes = {name: folder_stats(s.root) for name, s in stores.items()}
    mean_kb = sizes["today"][1] / args.rows / 1e3
    print(f"written (batches of {batch}): " + ", ".join(f"{n} {write_s[n]:.1f} s" for n in stores)
          + f" (+ {compact_s:.1f} s compacting its {-(-args.rows // batch)} fragments into one); lance BTREE index "
            f"on image_id {index_s:.2f} s; mean row {mean_kb:.1f} KB")
    for name, (files, nbytes) in sizes.items():
        print(f"  on disk {name:12s} {nbytes / 1e6:9.1f} MB in {files:6d} files  ({nbytes / sizes['today'][1]:.3f} of today)")
    if stores["lance"].ds.data_storage_version:
        print(f"  lance data_storage_version {stores['lance'].ds.data_storage_version}, "
              f"{len(stores['lance'].ds.get_fragments())} fragments")

    rng = np.random.default_rng(args.seed + 1)
    all_ids = image_ids(0, args.rows, args.seed)
    readers = {"today: whole parts": stores["today"].take_whole_parts,
               "today: read_rows (pylist)": stores["today"].read_rows_today,
               f"{rg}: read_row_groups": stores[rg].take_row_groups,
               f"{rg}: filters=in/part": stores[rg].take_filtered,
               "lance: take(row offsets)": stores["lance"].take,
               "lance: filter isin+BTREE": stores["lance"].take_filtered}
    if args.folder_filter:
        readers[f"{rg}: folder filters=in"] = stores[rg].take_folder_filter
    cell_counts = [int(c) for c in args.cells.split(",") if c]
    access = {n: {name: [] for name in readers} for n in cell_counts}
    touched = {}
    appends = {name: [] for name in stores}
    scans = {cols: {name: [] for name in stores} for cols in ("small columns", "everything")}
    part_reads = {name: [] for name in stores}
    n_parts = min(200, args.rows // args.part_size)
    appended = args.rows
    n_append = max(1, int(args.rows * args.append_fraction))
    for rnd in range(args.rounds):
        shift = rnd % len(readers)  # rotate who goes first
        for n in cell_counts:
            ids = [all_ids[i] for i in rng.choice(args.rows, size=n, replace=False)]
            touched[n] = len(np.unique(stores["today"].locate(ids)[1]))
            digests = {}
            names = list(readers)[shift:] + list(readers)[:shift]
            for name in names:
                t0 = time.perf_counter()
                tables = readers[name](ids)
                access[n][name].append(time.perf_counter() - t0)
                digests[name] = cells_digest(tables)
            if len(set(digests.values())) != 1:
                raise SystemExit(f"variants disagree on the cells read: {digests}")
        numbers = sorted(rng.choice(args.rows // args.part_size, size=n_parts, replace=False).tolist())
        digests = {}
        for name in list(stores)[rnd % 3:] + list(stores)[:rnd % 3]:
            t0 = time.perf_counter()
            if name == "lance":
                tables = stores[name].read_parts(numbers, args.part_size)
            else:
                tables = stores[name].read_parts(numbers)
            part_reads[name].append(time.perf_counter() - t0)
            digests[name] = cells_digest(tables)
        if len(set(digests.values())) != 1:
            raise SystemExit(f"layouts disagree on the parts read: {digests}")
        table = rows_table(appended, appended + n_append, pool, args.seed)
        appended += n_append
        for name in list(stores)[rnd % 3:] + list(stores)[:rnd % 3]:
            t0 = time.perf_counter()
            stores[name].append(table)
            appends[name].append(time.perf_counter() - t0)
        for cols, columns in (("small columns", SMALL_COLUMNS), ("everything", None)):
            for name in list(stores)[rnd % 3:] + list(stores)[:rnd % 3]:
                t0 = time.perf_counter()
                stores[name].scan(columns)
                scans[cols][name].append(time.perf_counter() - t0)

    for n in cell_counts:
        base = "today: whole parts"
        report(f"(a) random access: {n:,} cells over {args.rows:,} rows ({touched[n]} of "
               f"{len(stores['today'].parts)} parts touched), {args.rounds} rounds", access[n], base=base)
    report(f"(a') whole parts as an annotate task reads them: {n_parts} parts of {args.part_size} rows, every column",
           part_reads)
    report(f"(b) append {n_append:,} rows ({args.append_fraction:.0%}), {args.rounds} rounds (store grows each round)",
           appends)
    for cols, times in scans.items():
        report(f"(c) full scan, {cols}", times)
    for name, store in stores.items():
        files, nbytes = folder_stats(store.root)
        print(f"after {args.rounds} appends: {name:12s} {files} files, {nbytes / 1e6:.1f} MB")
    ds = stores["lance"].ds
    print(f"  lance: version {ds.version}, {len(ds.get_fragments())} fragments, {len(ds.versions())} versions kept; "
          f"BTREE index covers only the fragments indexed before the appends until optimize_indices()")
    print("\nlance behaviour")
    check_root = args.out / "checks"
    check_root.mkdir()
    for line in lance_checks(check_root, pool, args.seed, args.lance_version):
        print("  " + line)
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
