"""Incremental cost: a built folder corpus grows by 1 %, then one fused annotator's params change.

    python benchmarks/incremental.py [--images 2000] [--size 128] [--grow 0.01]

Builds a folder of N distinct photo crops, runs ingest + annotate (the demo's weight-free set:
canny, grayscale, two degradations, two synthetic edits, plus the split embedding and dHash),
then:
  1. adds `grow` x N new photos and runs again;
  2. changes one parameter of `canny` (a member of the fused CPU group) and runs again;
  3. runs once more with nothing changed: the fixed start-up cost of a stage that has no work.
Work = the (image, annotator) outputs each run computed, counted from the part files it wrote,
and, beside it, the compute seconds those rows record (every row carries its own `seconds`: wall
time inside the worker, so it moves with the machine's load); wall times of the whole stage are
printed too, Ray start-up included. Goals (issue 12): run 1's annotate work <= 2 % of the build's; run 2 computes only
canny (its share of the build's work printed beside canny's own share of it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ANNOTATORS = {"canny": {}, "grayscale": {}, "degrade_GaussianBlur": {}, "degrade_JPEG": {},
              "edit_sepia": {}, "edit_hue_rotate": {}}


def write_photos(folder: Path, first: int, count: int, size: int) -> None:
    from pipelines.sources import embedded_refs, render_embedded

    folder.mkdir(parents=True, exist_ok=True)
    for k, ref in enumerate(embedded_refs(first + count, size)[first:]):
        (folder / f"photo_{first + k:06d}.png").write_bytes(render_embedded(ref))


def part_files(store) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in store.nodes_dir.glob("*/*/part-*.parquet")}


def outputs(files) -> int:
    """(image, annotator) outputs in these part files: one per image, whatever the node types it made."""
    total = 0
    for path in files:
        t = pq.read_table(path, columns=["image_id"])
        total += len(set(t["image_id"].to_pylist()))
    return total


def work(files) -> dict[str, float]:
    """Compute seconds per annotator recorded in these part files."""
    out: dict[str, float] = {}
    for path in files:
        t = pq.read_table(path, columns=["annotator", "node_type", "seconds"])
        rows = t.to_pylist()
        first_node = {}
        for r in rows:  # `seconds` is per image, repeated on each node row an image produced
            first_node.setdefault(r["annotator"], r["node_type"])
            if r["node_type"] == first_node[r["annotator"]]:
                out[r["annotator"]] = out.get(r["annotator"], 0.0) + r["seconds"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--grow", type=float, default=0.01)
    parser.add_argument("--part-size", type=int, default=64)
    args = parser.parse_args()

    from pipelines import ray_runtime
    from pipelines.cli import run_stages
    from pipelines.params import parse_params, validate_params
    from pipelines.store import NodeStore

    root = Path(tempfile.mkdtemp(prefix="vicl-incremental-"))
    photos = root / "photos"
    write_photos(photos, 0, args.images, args.size)
    data = {"paths": {"store": str(root / "store"), "out": str(root / "out")}, "ray": {"num_cpus": 2},
            "ingest": {"sources": [{"kind": "folder", "path": str(photos)}], "part_size": args.part_size},
            "annotate": {"annotators": ANNOTATORS}, "mine": {"enabled": False}}
    params = parse_params(data)
    validate_params(params)
    store = NodeStore(params.paths.store)
    stages = ("ingest", "annotate")

    def run(label, p):
        before = part_files(store)
        t0 = time.perf_counter()
        results = run_stages(stages, p, log=lambda *_: None)
        wall = time.perf_counter() - t0
        new = [f for f, m in part_files(store).items() if before.get(f) != m]
        w = work(new)
        w["_outputs"] = outputs(new)
        print(f"{label:<34} wall {wall:7.1f} s   outputs {w['_outputs']:6d}   compute "
              f"{sum(v for k, v in w.items() if k != '_outputs'):8.1f} s   parts written {len(new):5d}   "
              f"annotators computed: {sorted(r['annotator'] for r in results['annotate'] if r['computed_parts'])}",
              flush=True)
        return wall, w

    with ray_runtime.session(params.ray):
        build_wall, build = run(f"build ({args.images} images)", params)
        added = max(1, round(args.images * args.grow))
        write_photos(photos, args.images, added, args.size)
        grow_wall, grow = run(f"+{added} images ({args.grow:.0%})", params)
        changed = params.model_copy(deep=True)
        changed.annotate.annotators["canny"].params = {"low_threshold": 50, "high_threshold": 150}
        change_wall, change = run("canny params changed", changed)
        idle_wall, _ = run("nothing changed (fixed cost)", changed)
    def secs(w):
        return sum(v for k, v in w.items() if k != "_outputs")

    print(f"\nadd {args.grow:.0%}: annotate work {grow['_outputs'] / build['_outputs']:.2%} of the build's outputs, "
          f"{secs(grow) / secs(build):.2%} of its compute seconds (goal <= 2 %); wall {grow_wall:.1f} s, and "
          f"{idle_wall:.1f} s for a run with nothing to do (the fixed start-up)")
    print(f"canny change: {change['_outputs'] / build['_outputs']:.2%} of the build's outputs and "
          f"{secs(change) / secs(build):.2%} of its compute seconds (canny alone: "
          f"{build.get('canny', 0.0) / secs(build):.2%}); annotators that computed: "
          f"{sorted(k for k in change if k != '_outputs')} (goal: only canny)")


if __name__ == "__main__":
    main()
