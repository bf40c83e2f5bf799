"""`vicl verify`: walk the store and the exported shards, and find what bit rot or a torn copy damaged.

Every Parquet file vicl writes carries a CRC32 per page (pipelines/store.py `_write_options`),
and every stage reads store parts with the checksums verified (`read_part`), so damage is an
error naming the file instead of a changed sample. This command checks everything at once:
every Parquet file under the store, read row group by row group with its checksums verified, and
every shard against the `SHA256SUMS` the export wrote beside it. `--repair` removes what is
damaged: each stage recomputes a missing part or shard on its next run (ingest from the source,
annotate from the images, export from the samples), so a damaged part is recomputed, never shipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SUMS_FILE = "SHA256SUMS"
SHARD_GLOBS = ("shards/*/*.tar", "shards_seq/*/*/*.tar", "episodes/*/*.tar")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_paths(out: Path) -> list[Path]:
    return sorted(p for pattern in SHARD_GLOBS for p in Path(out).glob(pattern))


def sums_text(out: Path, digests: dict[str, str]) -> str:
    """`sha256sum -c` format, paths relative to `out` (the file lies there): one line per shard."""
    return "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))


def write_sums(out: Path, digests: dict[str, str]) -> None:
    from pipelines.store import write_bytes

    write_bytes(sums_text(out, digests).encode(), Path(out) / SUMS_FILE)


def damaged_parquet(path: Path) -> str | None:
    """Why a Parquet file fails its checksums or does not decode, or None when it is whole."""
    try:
        f = pq.ParquetFile(path, page_checksum_verification=True)
        for k in range(f.num_row_groups):  # a row group at a time: a part never has to fit in memory
            f.read_row_group(k)
    except (OSError, pa.ArrowException) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def damaged_shards(out: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(shards whose bytes differ from SHA256SUMS, shards it lists that are gone: `vicl export` writes them)."""
    sums = Path(out) / SUMS_FILE
    if not sums.exists():
        return [], []
    damaged, missing = [], []
    for line in sums.read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = Path(out) / rel
        if not path.exists():
            missing.append(path)
        elif sha256_file(path) != digest:
            damaged.append((path, "sha256 differs from SHA256SUMS"))
    return damaged, missing


def verify(store_root: Path, out: Path, repair: bool = False) -> dict:
    """{checked_parts, checked_shards, damaged: [(path, why)], missing_shards, removed}."""
    store_root = Path(store_root)
    parts = sorted(p for p in store_root.rglob("*.parquet")
                   if not any(name.startswith(".") for name in p.relative_to(store_root).parts))  # staging, temp
    damaged = [(p, why) for p in parts if (why := damaged_parquet(p))]
    bad_shards, missing = damaged_shards(out)
    damaged += bad_shards
    removed = []
    if repair:
        for path, _ in damaged:
            if path.exists():
                path.unlink()
                removed.append(path)
    return {"checked_parts": len(parts), "checked_shards": len(shard_paths(out)), "damaged": damaged,
            "missing_shards": missing, "removed": removed}


def report_lines(result: dict, repair: bool) -> list[str]:
    lines = [f"verify: {result['checked_parts']} store files, {result['checked_shards']} shards: "
             f"{len(result['damaged'])} damaged"]
    lines += [f"  {path}: {why}" for path, why in result["damaged"]]
    if result["missing_shards"]:
        lines.append(f"{len(result['missing_shards'])} shards listed in {SUMS_FILE} are missing: `vicl export` "
                     "writes them again")
    if result["damaged"]:
        lines.append(f"removed {len(result['removed'])} damaged files: run `vicl run` to recompute them"
                     if repair else "run `vicl verify --repair` to remove them, then `vicl run` to recompute them")
    return lines
