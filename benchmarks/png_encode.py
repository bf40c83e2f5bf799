"""The stored-map PNG codec: `core.images.encode_png` (libpng through OpenCV, zlib run-length
strategy at level 1) against Pillow at levels 1 and 6, on what the pipeline really encodes:
every output of the degradation and edit set on 512 x 512 photos, and 2 x 2 export grids.

Rounds alternate the codecs so drift hits each alike; the figure is each codec's best round,
as a ratio to Pillow level 1 (the codec before), plus the bytes written.

    python benchmarks/png_encode.py [--images 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import time

import annotators  # noqa: F401  (torchvision shim; registers built-ins)

import cv2
import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from degrade import all_annotators, load_images  # this folder is on sys.path when run as a script
from core.images import encode_png


def pillow(level: int):
    def encode(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()
    return encode


CODECS = {"pillow level 1": pillow(1), "pillow level 6": pillow(6), "encode_png (level 1)": encode_png}


def workloads(n_images: int) -> dict[str, list[np.ndarray]]:
    images = load_images(n_images)
    maps = [out.array for annotator in all_annotators() for i, image in enumerate(images)
            for out in annotator.annotate([{"image": image}], [str(i)])[0].values()]
    grids = [np.concatenate([np.concatenate([a, b], 1), np.concatenate([c, d], 1)], 0)
             for a, b, c, d in zip(images, images[1:] + images[:1], images[2:] + images[:2], images[3:] + images[:3])]
    return {"degradation + edit outputs": maps, "2x2 grids of 512^2 photos": grids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    with threadpool_limits(1):
        for label, arrays in workloads(args.images).items():
            best = dict.fromkeys(CODECS, float("inf"))
            size = {}
            for _ in range(args.rounds):
                for name, encode in CODECS.items():
                    start = time.perf_counter()
                    size[name] = sum(len(encode(a)) for a in arrays)
                    best[name] = min(best[name], time.perf_counter() - start)
            base = best["pillow level 1"]
            print(f"{label}: {len(arrays)} arrays")
            for name in CODECS:
                print(f"  {name:22s} {best[name] / len(arrays) * 1e3:7.2f} ms/array  speed vs pillow 1: "
                      f"{base / best[name]:5.2f}x  bytes vs pillow 1: {size[name] / size['pillow level 1']:5.2f}")


if __name__ == "__main__":
    main()
