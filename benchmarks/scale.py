"""How the driver-side stages grow with the corpus: sample, export planning and near-duplicate grouping.

Builds a synthetic node store per size N (real layout: image parts, annotator folders, the
embedding and dHash nodes, summaries and the catalog, written through vicl's own store code;
pixels are tiny placeholders because no measured step decodes them), then runs each step in a
fresh process on it and prints wall time, the process's peak RSS and the log-log growth exponent
between consecutive sizes. Goal (issue 12): every exponent <= 1.15 and peak RSS <= 2 GB at 10^6.

    python benchmarks/scale.py                    # N = 10^4, 10^5
    python benchmarks/scale.py --n 1000000        # adds 10^6 (about 15 minutes here)

Steps measured:
  sample       `run_sample`: catalog index, embedding read, faiss near-duplicate groups, splits,
               sampler (fixed samples per task: the sample count does not grow with N), leakage
               re-check with dHash, the samples set written
  export_plan  `plan_shards`: every shard's samples and the part of each of its cells
  neardup      `near_duplicate_groups` alone (the embedding matrix already in memory)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
NODES = {"canny": "canny", "grayscale": "gray", "degrade_GaussianBlur": "GaussianBlur"}


def _params(root: Path, part_size: int):
    from pipelines.params import parse_params

    return parse_params({"paths": {"store": str(root / "store"), "out": str(root / "out")},
                         "ingest": {"part_size": part_size},
                         "annotate": {"annotators": {name: {} for name in NODES}},
                         "mine": {"enabled": False},
                         "sample": {"samples_per_task": 200, "eval_fraction": 0.1},
                         "export": {"shard_size": 100}})


def build_store(root: Path, n: int, part_size: int, seed: int = 0) -> None:
    """n images in parts of part_size, every configured node on every image, 1 % planted near-duplicates."""
    import pyarrow as pa

    from pipelines.annotation_plan import online_nodes, plan
    from pipelines.catalog import Catalog
    from pipelines.stages.ingest import LISTING_SCHEMA
    from pipelines.store import NODE_SCHEMA, NodeStore, folder_summary, part_name, write_json, write_table

    params = _params(root, part_size)
    store = NodeStore(params.paths.store)
    runs = plan(params, store)
    rng = np.random.default_rng(seed)
    ids = sorted(hashlib.sha256(f"img{i}".encode()).hexdigest()[:32] for i in range(n))
    part_ids = []
    for start in range(0, n, part_size):
        chunk = ids[start:start + part_size]
        pid = hashlib.sha256(f"part{start}".encode()).hexdigest()[:16]
        part_ids.append(pid)
        m = len(chunk)
        vec = rng.standard_normal((m, DIM)).astype(np.float32)
        planted = rng.random(m) < 0.02  # half of them pair up with the previous row: ~1 % near-duplicates
        for k in np.flatnonzero(planted)[1::2]:
            vec[k] = vec[k - 1] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        codes = rng.integers(0, 256, (m, 8), dtype=np.uint8)

        def rows(node, data, fmt, annotator, width=64):
            return pa.table({"image_id": chunk, "node_type": [node] * m, "data": data, "format": [fmt] * m,
                             "width": [width] * m, "height": [width if fmt in ("jpg", "png") else 1] * m,
                             "meta": ['{"source": "synthetic"}' if node == "image" else "{}"] * m,
                             "annotator": [annotator] * m, "annotator_version": ["1"] * m,
                             "params_hash": [""] * m, "seconds": [0.0] * m, "error": [None] * m,
                             "quality": [None] * m}, schema=NODE_SCHEMA)

        placeholder = [b"\xff\xd8synthetic"] * m  # no measured step decodes pixels
        write_table(rows("image", placeholder, "jpg", "ingest"), store.images_dir / part_name(pid))
        for run in runs:
            node = run.produces[0]
            if node.startswith("embedding"):
                table = rows(node, [v.tobytes() for v in vec], "f32", run.name, DIM)
            elif node == "image_dhash":
                table = rows(node, [c.tobytes() for c in codes], "u8", run.name, 8)
            else:
                table = rows(node, placeholder, "png", run.name)
            write_table(table, run.folder / part_name(pid))
    listing = pa.table({"ref": [f"synthetic:{p}" for p in part_ids], "container": [""] * len(part_ids),
                        "stamp": [""] * len(part_ids), "reject": [None] * len(part_ids),
                        "source": [0] * len(part_ids), "part": part_ids, "seq": [0] * len(part_ids)},
                       schema=LISTING_SCHEMA)
    write_table(listing, store.images_dir / "listing.parquet")
    write_json({"fingerprint": "synthetic", "parts": len(part_ids), "part_order": part_ids},
               store.images_dir / "ingest.json")
    folders = {}
    for run in runs:
        folder_summary(run.folder)
        folders.update({node: (run.name, run.folder) for node in run.produces})
    folder_summary(store.images_dir)
    Catalog.write(store, folders, online_nodes(params), [])


def run_step(root: Path, step: str, part_size: int) -> dict:
    """One step in this (fresh) process; peak RSS is this process's own."""
    from pipelines.catalog import Catalog
    from pipelines.store import NodeStore, remove_tree

    params = _params(root, part_size)
    store = NodeStore(params.paths.store)
    start = time.perf_counter()
    extra = {}
    if step == "sample":
        from pipelines.stages.sample import run_sample

        remove_tree(store.samples_dir)
        summary = run_sample(params, store)
        extra = {"samples": summary["samples"], "groups": summary["near_duplicate_groups"]}
    elif step == "export_plan":
        from pipelines.stages.export import plan_shards

        items, _ = plan_shards(params, store, Catalog.load(store))
        extra = {"shards": len(items)}
    elif step == "neardup":
        from pipelines.splits import near_duplicate_groups

        cat = Catalog.load(store)
        _, emb = cat.vectors("embedding_colour_stats")
        ids = cat.node_index().ids
        start = time.perf_counter()  # grouping alone
        group = near_duplicate_groups(ids, emb, params.sample.near_duplicate_threshold,
                                      nprobe=params.sample.near_duplicate_nprobe)
        extra = {"groups": int(len(np.unique(group)))}
    seconds = time.perf_counter() - start
    return {"step": step, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, action="append", help="corpus sizes (default 10^4 and 10^5)")
    parser.add_argument("--part-size", type=int, default=1000, help="images per part, fixed across sizes")
    parser.add_argument("--steps", default="sample,export_plan,neardup")
    parser.add_argument("--keep", default=None, help="build the stores under this folder and keep them")
    parser.add_argument("--_step", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._step:
        print(json.dumps(run_step(Path(args._root), args._step, args.part_size)))
        return
    sizes = sorted(set([10_000, 100_000] + (args.n or [])))
    base = Path(args.keep or tempfile.mkdtemp(prefix="vicl-scale-"))
    results: dict[str, list[dict]] = {}
    for n in sizes:
        root = base / f"n{n}"
        if not (root / "store" / "catalog.json").exists():
            t0 = time.perf_counter()
            build_store(root, n, args.part_size)
            print(f"N={n:>9,}: store built in {time.perf_counter() - t0:.1f} s", flush=True)
        for step in args.steps.split(","):
            out = subprocess.run([sys.executable, __file__, "--_step", step, "--_root", str(root),
                                  "--part-size", str(args.part_size)], capture_output=True, text=True,
                                 env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"step {step} failed at N={n}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault(step, []).append({"n": n, **row})
            print(f"N={n:>9,}  {step:<12} {row['seconds']:8.2f} s  peak RSS {row['peak_rss_mb']:7.0f} MB  "
                  f"{ {k: v for k, v in row.items() if k not in ('step', 'seconds', 'peak_rss_mb')} }", flush=True)
    print("\nlog-log growth exponent of wall time between consecutive sizes (goal <= 1.15):")
    for step, rows in results.items():
        exps = [math.log(b["seconds"] / a["seconds"]) / math.log(b["n"] / a["n"]) for a, b in zip(rows, rows[1:])]
        print(f"  {step:<12} " + ", ".join(f"{a['n']:,}->{b['n']:,}: {e:.2f}" for (a, b), e in
                                            zip(zip(rows, rows[1:]), exps)))


if __name__ == "__main__":
    main()
