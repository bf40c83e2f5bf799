"""Incremental cost through the CLI, as a user runs it: a built folder corpus grows by 1 %,
then one fused annotator's params change, then nothing changes.

    python benchmarks/incremental.py [--images 2000] [--size 128] [--grow 0.01] [--export]

Builds a folder of N distinct photo crops and runs `vicl ingest` then `vicl annotate`, each a
fresh process (imports, params, weights check, Ray or not: everything a user waits for), with the
demo's weight-free set (canny, grayscale, two degradations, two synthetic edits, plus the split
embedding and dHash). Then:
  1. adds `grow` x N new photos and runs both commands again;
  2. changes one parameter of `canny` (a member of the fused CPU group) and runs again;
  3. runs once more with nothing changed: the fixed cost of a command with no work.
With --export, `vicl mine` (disabled: it writes its empty set), `vicl judge`, `vicl sample` and `vicl export` run too (samples_per_task 200, shards of 64): each
run also prints how many samples changed (by key and content) and how many shards were written.
Printed per run: wall seconds of the commands, the (image, annotator) outputs computed (counted
from the part files written) and the compute seconds those rows record. Goals (issues 12, 23):
the +1 % run's wall time <= 5 % of the first build's; its annotate outputs <= 2 % of the build's;
the canny change computes only canny.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ANNOTATORS = {"canny": {}, "grayscale": {}, "degrade_GaussianBlur": {}, "degrade_JPEG": {},
              "edit_sepia": {}, "edit_hue_rotate": {}}


def write_photos(folder: Path, first: int, count: int, size: int) -> None:
    from pipelines.sources import embedded_refs, render_embedded

    folder.mkdir(parents=True, exist_ok=True)
    for k, ref in enumerate(embedded_refs(first + count, size)[first:]):
        (folder / f"photo_{first + k:06d}.png").write_bytes(render_embedded(ref))


def part_files(store: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (store / "nodes").glob("*/*/part-*.parquet")}


def work(files) -> tuple[int, float]:
    """((image, annotator) outputs, compute seconds) recorded in these part files; `seconds` is per
    image, repeated on each node row an image produced, so one row per (annotator, image) counts."""
    outputs, seconds = 0, 0.0
    for path in files:
        t = pq.read_table(path, columns=["image_id", "annotator", "seconds"]).to_pylist()
        seen = {}
        for r in t:
            seen.setdefault((r["annotator"], r["image_id"]), r["seconds"])
        outputs += len(seen)
        seconds += sum(seen.values())
    return outputs, seconds


def samples(root: Path) -> dict[str, str]:
    """key -> the sample's content (every column but the key), from the samples table."""
    path = root / "store" / "samples" / "samples.parquet"
    if not path.exists():
        return {}
    rows = pq.read_table(path).to_pylist()
    return {r["key"]: repr(sorted((k, v) for k, v in r.items() if k != "key")) for r in rows}


def shard_files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "out").glob("shards/*/*.tar")}


def vicl(*args: str, cwd: Path) -> float:
    """Wall seconds of one CLI command in a fresh process; its output is kept only on failure."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"vicl {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--grow", type=float, default=0.01)
    parser.add_argument("--part-size", type=int, default=64)
    parser.add_argument("--keep", action="store_true", help="keep the build folder (printed)")
    parser.add_argument("--export", action="store_true", help="run sample and export too; count shards rewritten")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vicl-incremental-"))
    write_photos(root / "photos", 0, args.images, args.size)
    params = {"paths": {"store": "store", "out": "out"}, "ray": {"num_cpus": 2},
              "ingest": {"sources": [{"kind": "folder", "path": "photos"}], "part_size": args.part_size},
              "annotate": {"annotators": ANNOTATORS}, "mine": {"enabled": False},
              "sample": {"samples_per_task": 200}, "export": {"shard_size": 64}}
    stages = ("ingest", "annotate") + (("mine", "judge", "sample", "export") if args.export else ())

    def run(label: str) -> tuple[float, int, float]:
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        before = part_files(root / "store")
        samples_before, shards_before = samples(root), shard_files(root)
        walls = [vicl(stage, cwd=root) for stage in stages]
        new = [f for f, m in part_files(root / "store").items() if before.get(f) != m]
        outputs, seconds = work(p for p in new if "/nodes/" in str(p))
        print(f"{label:<30} wall {sum(walls[:2]):7.1f} s (ingest {walls[0]:5.1f}, annotate {walls[1]:5.1f})   "
              f"outputs {outputs:6d}   compute {seconds:7.1f} s   parts written {len(new):4d}", flush=True)
        if args.export:
            after, shards_after = samples(root), shard_files(root)
            changed = sum(after.get(k) != v for k, v in samples_before.items()) + len(after.keys() - samples_before.keys())
            written = sum(shards_before.get(p) != m for p, m in shards_after.items())
            print(f"{'':<30} mine..export {sum(walls[2:]):5.1f} s   samples changed or new {changed} of {len(after)}"
                  f"   shards written {written} of {len(shards_after)}", flush=True)
        return sum(walls[:2]), outputs, seconds

    build = run(f"build ({args.images} images)")
    added = max(1, round(args.images * args.grow))
    write_photos(root / "photos", args.images, added, args.size)
    grow = run(f"+{added} images ({args.grow:.0%})")
    params["annotate"]["annotators"]["canny"] = {"params": {"low_threshold": 50, "high_threshold": 150}}
    change = run("canny params changed")
    idle = run("nothing changed")
    print(f"\nadd {args.grow:.0%}: wall {grow[0] / build[0]:.1%} of the first build's (goal <= 5 %); annotate "
          f"outputs {grow[1] / build[1]:.2%} of the build's (goal <= 2 %), compute {grow[2] / build[2]:.2%}")
    print(f"canny change: wall {change[0] / build[0]:.1%}, outputs {change[1] / build[1]:.2%} of the build's")
    print(f"nothing changed: wall {idle[0]:.1f} s ({idle[0] / build[0]:.1%} of the build's): the fixed cost")
    if args.keep:
        print(f"build folder: {root}")


if __name__ == "__main__":
    main()
