"""Peak memory of annotating one part with the whole degradation + edit set (48 annotators).

A part of large images with dozens of outputs each is hundreds of MB of PNGs. The annotate
task (`pipelines.stages.annotate.annotate_part`) streams each annotator's rows into its part
file batch by batch; the baseline holds the whole part's outputs, then writes each file, as
the driver of the Ray Data path does. Each side runs in a fresh process on the same stored
part; the figure is the peak RSS above the process's own start.

    python benchmarks/part_memory.py [--images 16] [--size 1024] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path


def build_params(root: str, images: int, size: int, batch_size: int):
    from annotators.degradations.annotators import DEGRADATION_ANNOTATORS
    from annotators.synthetic_edits import EDIT_ANNOTATORS
    from pipelines.params import parse_params, validate_params

    names = sorted(cls.name for cls in [*DEGRADATION_ANNOTATORS.values(), *EDIT_ANNOTATORS.values()])
    params = parse_params({
        "paths": {"store": f"{root}/store", "out": f"{root}/out"}, "ray": {"num_cpus": 2},
        "ingest": {"sources": [{"kind": "embedded", "count": images, "size": size}], "part_size": images,
                   "max_side": size},
        "annotate": {"annotators": {name: {"batch_size": batch_size} for name in names}},
        "mine": {"enabled": False}})
    validate_params(params)
    return params


def annotate_one_part(mode: str, root: str, images: int, size: int, batch_size: int) -> tuple[float, float, int]:
    """(seconds, peak RSS MB above the start, MB stored) for one side, in this (fresh) process."""
    import cv2
    import pyarrow as pa

    import annotators  # noqa: F401  (registers built-ins)
    from pipelines.annotation_plan import plan
    from pipelines.stages import annotate as stage
    from pipelines.store import NODE_SCHEMA, NodeStore, write_table

    cv2.setNumThreads(1)
    params = build_params(root, images, size, batch_size)
    store = NodeStore(params.paths.store)
    runs = [r for r in plan(params, store) if r.requires == ("image",)]
    args = stage.worker_args(runs, params)
    part = store.image_parts()[0].name
    inputs = {"image": str(store.images_dir / part)}
    paths = {r.name: str(r.folder / part) for r in runs}
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if mode == "streamed":
        stage.annotate_part_task(inputs, args, paths, batch_size)
    else:
        group = stage.AnnotatorGroup(args)
        rows = stage.read_part_inputs(inputs)
        out: dict[str, list] = {name: [] for name in paths}
        for i in range(0, len(rows), batch_size):
            for name, member_rows in group.annotate_rows(rows[i:i + batch_size], sorted(paths)).items():
                out[name] += member_rows
        for name, path in paths.items():
            write_table(pa.Table.from_pylist(out[name], schema=NODE_SCHEMA), Path(path))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss  # KiB on Linux
    stored = sum(Path(p).stat().st_size for p in paths.values())
    shutil.rmtree(store.nodes_dir)
    return seconds, peak / 1024, stored // 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()
    from pipelines import executor
    from pipelines.stages.ingest import run_ingest
    from pipelines.store import NodeStore

    root = tempfile.mkdtemp(prefix="vicl-part-memory-")
    try:
        params = build_params(root, args.images, args.size, args.batch_size)
        with executor.session(params.ray):
            run_ingest(params, NodeStore(params.paths.store))
        ctx = multiprocessing.get_context("spawn")
        results = {}
        for mode in ("streamed", "whole part in memory"):
            with ctx.Pool(1) as pool:  # a fresh process each: peak RSS is per process
                results[mode] = pool.apply(annotate_one_part, (mode, root, args.images, args.size, args.batch_size))
        print(f"one part: {args.images} images at {args.size}^2, 48 annotators, batch {args.batch_size}")
        for mode, (seconds, peak_mb, stored_mb) in results.items():
            print(f"  {mode:22s} {seconds:6.1f} s  peak RSS +{peak_mb:6.0f} MB  ({stored_mb} MB of parts written)")
        streamed, whole = results["streamed"][1], results["whole part in memory"][1]
        if streamed >= 1:
            print(f"  peak memory, whole / streamed: {whole / streamed:.1f}x")
        else:  # the peak stayed under the start-up high-water mark: use more or larger images
            print("  peak memory: below the process's start-up peak; no ratio at this size")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
