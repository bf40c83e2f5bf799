"""What the page checksums cost: store parts written with and without a CRC32 per page, and read with
and without verifying them, the rest of the write and read as the store does it (pipelines/store.py).

Parts: 64 rows of the node schema each, `data` cells of random bytes (as incompressible as JPEG) of
8-16 KB. The two sides alternate over rounds in one process; the ratio of medians is printed.

    python benchmarks/part_checksums.py [--parts 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.store import NODE_SCHEMA, _write_options


def make_part(rng: np.random.Generator, rows: int = 64) -> pa.Table:
    data = [rng.bytes(int(rng.integers(8_000, 16_000))) for _ in range(rows)]
    return pa.table({"image_id": [f"{rng.integers(1 << 60):016x}" for _ in range(rows)], "node_type": ["canny"] * rows,
                     "data": data, "format": ["png"] * rows, "width": pa.array([512] * rows, pa.int32()),
                     "height": pa.array([512] * rows, pa.int32()), "meta": ["{}"] * rows,
                     "annotator": ["canny"] * rows, "annotator_version": ["1"] * rows, "params_hash": ["h"] * rows,
                     "seconds": [0.0] * rows, "error": pa.nulls(rows, pa.string()),
                     "quality": pa.nulls(rows, pa.string())}, schema=NODE_SCHEMA)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    tables = [make_part(rng) for _ in range(args.parts)]
    mb = sum(t.nbytes for t in tables) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain = {k: v for k, v in _write_options(NODE_SCHEMA.names).items() if k != "write_page_checksum"}
        checked = _write_options(NODE_SCHEMA.names)
        times = {"write plain": [], "write crc": [], "read plain": [], "read verified": []}
        for _ in range(args.rounds):
            for name, opts in (("write plain", plain), ("write crc", checked)):
                times[name].append(timed(lambda: [pq.write_table(t, root / f"{name[6:]}-{k}.parquet", **opts)
                                                  for k, t in enumerate(tables)]))
            for name, verify in (("read plain", False), ("read verified", True)):
                times[name].append(timed(lambda: [pq.read_table(root / f"crc-{k}.parquet", page_checksum_verification=verify)
                                                  for k in range(len(tables))]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.parts} parts, {mb:.0f} MB, {args.rounds} alternating rounds (medians)")
    for k, v in med.items():
        print(f"  {k:14s} {v * 1000:8.1f} ms  {mb / v:7.0f} MB/s")
    print(f"write with page CRCs / without: {med['write crc'] / med['write plain']:.3f}")
    print(f"read verified / not verified:   {med['read verified'] / med['read plain']:.3f}")


if __name__ == "__main__":
    main()
