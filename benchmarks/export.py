"""Export throughput: sample assembly + shard writing vs a raw tar write of the same bytes.

Same process, same data: stored cells are skimage photos (PNG-encoded, as in the store).
Figures (all samples/s, ratios against the raw tar write measured in this run):
- assemble+write: decode cells, fit, compose the grid, encode PNG + JSON, write the shard
  (pipelines.shards: webdataset TarWriter, sorted members, fixed mtime, atomic rename);
- write only: pipelines.shards.write_tar of the already-assembled samples;
- raw tar: tarfile writing the very same member bytes to a file, nothing else.
The writer's goal is write-only / raw >= 0.8 (its overhead over a plain tar); the
assemble+write / raw ratio shows how much of an export is image work (PNG codec bound).

    python benchmarks/export.py [--samples 96] [--cell 256]
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

import pipelines  # noqa: F401  (vicl first: torchvision fallback)
from pipelines.images import encode_png
from pipelines.sampling import sample
from pipelines.sampling_params import ExportParams, SamplerParams
from pipelines.shards import assemble, write_tar
from pipelines.tasks import explicit_task


def stored_cells(n_images: int) -> dict:
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    cells = {}
    for k in range(n_images):
        rgb = np.ascontiguousarray(np.roll(photos[k % 4], 7 * k, axis=1)[:400, :400])
        cells[("image", f"i{k:03d}")] = encode_png(rgb)
        cells[("canny", f"i{k:03d}")] = encode_png((rgb.mean(-1) > 128).astype(np.uint8) * 255)
    return cells


def raw_tar(members: list[tuple[str, bytes]], path: Path) -> None:
    with open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--cell", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    cells = stored_cells(24)
    ids = {i for _, i in cells}
    task = explicit_task("canny_to_image", ["canny", "image"])
    samples = sample({"image": ids, "canny": ids}, [task],
                     SamplerParams(samples_per_task=args.samples, eval_fraction=0.0))[: args.samples]
    export = ExportParams(cell_size=args.cell)
    tmp = Path(tempfile.mkdtemp(prefix="vicl_bench_export_"))
    encoded = [assemble(s, cells, export)["grid"] for s in samples]
    members = [(f"{s['__key__']}.{k}", s[k]) for s in sorted(encoded, key=lambda s: s["__key__"])
               for k in sorted(s) if k != "__key__"]
    mb = sum(len(d) for _, d in members) / 1e6

    t_full = best_of(lambda: write_tar([assemble(s, cells, export)["grid"] for s in samples], tmp / "full.tar"),
                     args.repeats)
    t_write = best_of(lambda: write_tar(encoded, tmp / "write.tar"), args.repeats)
    t_raw = best_of(lambda: raw_tar(members, tmp / "raw.tar"), args.repeats)
    n = len(samples)
    print(f"{n} samples, {args.cell}px cells, {mb:.1f} MB of members, best of {args.repeats}")
    print(f"raw tar write          : {n / t_raw:10.1f} samples/s (baseline, 1.00)")
    print(f"write_tar (vicl writer): {n / t_write:10.1f} samples/s  ratio {t_raw / t_write:.2f}")
    print(f"assemble + write       : {n / t_full:10.1f} samples/s  ratio {t_raw / t_full:.3f}")
    for p in tmp.iterdir():
        os.unlink(p)
    tmp.rmdir()


if __name__ == "__main__":
    main()
