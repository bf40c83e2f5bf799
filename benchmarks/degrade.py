"""Throughput of the degradation, restoration and synthetic-edit operators.

1. Images/s per operator at 512 x 512, serial in this process, with the time of a PNG
   encode of the same image (what the annotate stage pays per output anyway) as baseline.
2. The whole set (every `degrade_*` and `edit_*` annotator) over the same images: a serial
   loop here vs a Ray Data `map_batches` over the annotator classes on a local 2-CPU Ray,
   as a ratio. Each actor and the serial loop run OpenCV single-threaded, so the ratio
   measures process parallelism. Outputs are reduced to per-node digests, which also checks
   that Ray workers produce the same bytes as the serial loop.

    python benchmarks/degrade.py [--images 16] [--reps 3] [--no-ray]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import annotators  # noqa: F401  (torchvision shim; registers built-ins)

import cv2
import numpy as np
from skimage import data

from annotators.degradations.annotators import DEGRADATION_ANNOTATORS
from annotators.degradations.operators import DEGRADATIONS, degrade
from annotators.synthetic_edits import EDIT_ANNOTATORS, EDIT_FAMILIES, apply_edit

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel")
SIZE = 512


def load_images(count: int) -> list[np.ndarray]:
    base = [cv2.resize(getattr(data, name)(), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for name in PHOTOS]
    # Beyond the eight photos, flipped / rolled variants keep every image distinct.
    return [np.ascontiguousarray(np.roll(base[i % len(base)], 37 * (i // len(base)), axis=1)) for i in range(count)]


def per_second(fn, images: list[np.ndarray], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        for i, image in enumerate(images):
            fn(image, i)
    return reps * len(images) / (time.perf_counter() - start)


def bench_operators(images: list[np.ndarray], reps: int) -> None:
    png = per_second(lambda im, i: cv2.imencode(".png", im), images, reps)
    print(f"baseline: PNG encode of a {SIZE}x{SIZE} image: {png:8.1f} images/s")
    print(f"{'operator':22s} {'images/s':>9s} {'cost vs PNG encode':>19s}")
    rows = [(name, per_second(lambda im, i, n=name: degrade(n, im, seed=i), images, reps)) for name in DEGRADATIONS]
    rows += [(f"edit_{name}", per_second(lambda im, i, n=name: apply_edit(n, im, seed=i), images, reps))
             for name in EDIT_FAMILIES]
    for name, rate in sorted(rows, key=lambda r: -r[1]):
        print(f"{name:22s} {rate:9.1f} {png / rate:18.2f}x")


def all_annotators():
    classes = list(DEGRADATION_ANNOTATORS.values()) + list(EDIT_ANNOTATORS.values())
    instances = [cls() for cls in classes]
    for a in instances:
        a.load()
    return instances


def digests(instances, images: list[np.ndarray], ids: list[str]) -> list[str]:
    """One digest per image over every produced node (stands in for writing the PNGs)."""
    per_image = [hashlib.sha256() for _ in images]
    inputs = [{"image": im} for im in images]
    for annotator in instances:
        for h, produced in zip(per_image, annotator.annotate(inputs, ids)):
            for node, out in produced.items():
                h.update(node.encode())
                h.update(out.array.tobytes())
    return [h.hexdigest() for h in per_image]


class AllAnnotators:
    """Ray Data callable: every degradation and edit annotator on each image of the batch."""

    def __init__(self):
        cv2.setNumThreads(1)
        self.instances = all_annotators()

    def __call__(self, batch: dict) -> dict:
        cpu = time.process_time()
        images = [np.ascontiguousarray(im) for im in batch["image"]]
        ids = [str(i) for i in batch["image_id"]]
        out = digests(self.instances, images, ids)
        cpu_each = (time.process_time() - cpu) / len(ids)
        return {"image_id": np.array(ids), "digest": np.array(out), "cpu_s": np.full(len(ids), cpu_each)}


def bench_ray(images: list[np.ndarray], batch_size: int) -> None:
    import ray

    ids = [f"img-{i}" for i in range(len(images))]
    cv2.setNumThreads(1)
    instances = all_annotators()
    start, cpu = time.perf_counter(), time.process_time()
    serial = digests(instances, images, ids)
    serial_s, serial_cpu = time.perf_counter() - start, time.process_time() - cpu
    nodes = len(instances)
    print(f"serial loop: {len(images)} images x {nodes} annotators in {serial_s:.2f} s "
          f"= {len(images) / serial_s:.2f} images/s ({len(images) * nodes / serial_s:.1f} nodes/s); "
          f"CPU {serial_cpu / len(images):.3f} s/image, i.e. this process got {serial_cpu / serial_s:.2f} cores")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    start = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray.init: {time.perf_counter() - start:.1f} s (not counted)")
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"image_id": i, "image": im} for i, im in zip(ids, images)])
        ds = ds.materialize()  # put the inputs in the object store before timing
        for label in ("cold (actor start-up included)", "warm"):
            start = time.perf_counter()
            rows = ds.map_batches(AllAnnotators, batch_size=batch_size, num_cpus=1,
                                  compute=ray.data.ActorPoolStrategy(size=2)).take_all()
            ray_s = time.perf_counter() - start
            got = {r["image_id"]: r["digest"] for r in rows}
            same = all(got[i] == d for i, d in zip(ids, serial))
            worker_cpu = float(np.mean([r["cpu_s"] for r in rows]))
            print(f"ray map_batches, {label}: {ray_s:.2f} s = {len(images) / ray_s:.2f} images/s; "
                  f"speed-up vs serial {serial_s / ray_s:.2f}x; outputs identical to serial: {same}")
            # Contention-independent view: CPU per image in the workers vs in the serial loop.
            print(f"    worker CPU {worker_cpu:.3f} s/image vs serial {serial_cpu / len(images):.3f}; "
                  f"two uncontended workers would give ~{2 * serial_cpu / len(images) / worker_cpu:.2f}x "
                  f"(compute only; start-up and transfer excluded)")
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-ops", action="store_true")
    args = parser.parse_args()
    print(f"cores visible: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f} (CPU shared with others)")
    cv2.setNumThreads(1)
    if not args.no_ops:
        bench_operators(load_images(min(args.images, 8)), args.reps)
    if not args.no_ray:
        bench_ray(load_images(args.images), args.batch_size)


if __name__ == "__main__":
    main()
