"""Batched vs looped inference in the segmentation/grounding annotators (CPU, random weights).

Each figure is a ratio against a baseline run in the same process (looped = 1.0):
- sam_boxes: all boxes of an image in one SAM decoder call vs one call per box (image embedding
  computed once in both; tiny SAM, so the ratio is the decoder's).
- semantic_seg: one stacked forward of a batch vs one forward per image (SegFormer-B0 shapes, 512 px).
- grounding_qwen_vl: one batched greedy generation vs one generation per image (tiny Qwen2.5-VL).

Run: python benchmarks/annotators_seg_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

import annotators  # noqa: F401  (installs the torchvision shim before any model import)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def photos(n: int) -> list[np.ndarray]:
    from skimage import data

    pool = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    return [np.ascontiguousarray(pool[i % len(pool)]) for i in range(n)]


def bench_sam_boxes(repeats: int) -> None:
    import torch

    from annotators.sam import SamBoxes

    a = SamBoxes()
    a.load_random("tiny")
    image = photos(1)[0]
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 400, size=(16, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 100, size=(16, 2))], axis=1).tolist()
    pred = a._predictor
    pred.set_image(image)

    def decode(bs):
        with torch.inference_mode():
            t = pred.transform.apply_boxes_torch(torch.as_tensor(bs, dtype=torch.float32), image.shape[:2])
            pred.predict_torch(None, None, boxes=t, multimask_output=False)

    looped = best_of(lambda: [decode([b]) for b in boxes], repeats)
    batched = best_of(lambda: decode(boxes), repeats)
    print(f"sam_boxes decoder, 16 boxes: looped {looped * 1e3:.1f} ms, batched {batched * 1e3:.1f} ms, "
          f"speed-up x{looped / batched:.2f}")


def bench_semantic(repeats: int) -> None:
    import torch
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    from annotators.segmentation import SemanticSegmentation

    a = SemanticSegmentation()
    torch.manual_seed(0)
    cfg = SegformerConfig(num_labels=150)  # the library default is the B0 architecture
    a._set(SegformerForSemanticSegmentation(cfg), SegformerImageProcessor(size={"height": 512, "width": 512}))
    images = photos(4)
    a.annotate([{"image": images[0]}], ["warm-up"])
    looped = best_of(lambda: [a.annotate([{"image": im}], ["x"]) for im in images], repeats)
    batched = best_of(lambda: a.annotate([{"image": im} for im in images], ["x"] * 4), repeats)
    print(f"semantic_seg SegFormer-B0 512px, 4 images: looped {looped:.2f} s, batched {batched:.2f} s, "
          f"speed-up x{looped / batched:.2f} ({4 / batched:.1f} images/s batched)")


def bench_qwen(repeats: int) -> None:
    from annotators.grounding import GroundingQwenVL

    a = GroundingQwenVL({"min_pixels": 64 * 28 * 28, "max_pixels": 64 * 28 * 28, "max_new_tokens": 32})
    a.load_random("tiny")
    images = photos(4)
    ids = ["a", "b", "c", "d"]
    looped = best_of(lambda: [a.annotate([{"image": im}], [i]) for im, i in zip(images, ids)], repeats)
    batched = best_of(lambda: a.annotate([{"image": im} for im in images], ids), repeats)
    print(f"grounding_qwen_vl tiny, 4 images x 32 tokens: looped {looped:.2f} s, batched {batched:.2f} s, "
          f"speed-up x{looped / batched:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["sam", "semantic", "qwen"], default=None)
    args = parser.parse_args()
    for name, fn in [("sam", bench_sam_boxes), ("semantic", bench_semantic), ("qwen", bench_qwen)]:
        if args.only in (None, name):
            fn(args.repeats)


if __name__ == "__main__":
    main()
