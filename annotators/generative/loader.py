"""What every generative annotator shares: finding a pipeline repo on disk, dtypes, sizes, seeds, pixels.

Pipelines load only from `annotate.models_dir` or the HF cache (`core.weights.resolve`),
with `local_files_only=True`; a missing repo raises `MissingWeightsError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.weights import WeightSpec


def repo_path(repo_id: str, models_dir: Path | None, description: str = "") -> Path:
    from core.weights import resolve

    return resolve(WeightSpec(repo_id, None, description), models_dir)


def torch_dtype(name: str, device: str):
    """`auto`: bf16 on a GPU, fp32 on the CPU (CPU bf16 matmuls are slow and not bit-stable)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def from_pretrained(cls, repo_id: str, models_dir: Path | None, dtype, **components):
    """`cls.from_pretrained` on the local copy of `repo_id` (components given replace the repo's own)."""
    path = repo_path(repo_id, models_dir, f"{cls.__name__} weights")
    return cls.from_pretrained(str(path), dtype=dtype, local_files_only=True, **components)


def generation_size(height: int, width: int, resolution: int, multiple: int = 16) -> tuple[int, int]:
    """(h, w) of area about resolution² with the source's aspect, each side a multiple of `multiple`."""
    scale = resolution / float(np.sqrt(height * width))
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def generator(seed: int, device: str):
    import torch

    # CPU generators on every device: the same seed gives the same initial noise on any hardware
    return torch.Generator("cpu").manual_seed(seed % (2**63))


def to_uint8(images) -> list[np.ndarray]:
    """Pipeline output (output_type='np', floats in [0, 1]) -> H x W x 3 uint8 arrays."""
    arr = np.asarray(images, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise FloatingPointError("the pipeline returned non-finite pixels")
    return [np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8) for a in arr]


def to_pil(arr: np.ndarray, size: tuple[int, int] | None = None):
    """uint8 array -> RGB PIL image, optionally resized (Lanczos) to (h, w)."""
    from PIL import Image

    im = Image.fromarray(arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)).convert("RGB")
    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((size[1], size[0]), Image.LANCZOS)
    return im


def resize_rgb(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Generated image back to the source's size (Lanczos)."""
    if arr.shape[:2] == (height, width):
        return arr
    return np.asarray(to_pil(arr, (height, width)))


def group_by_size(sizes: list[tuple[int, int]]) -> dict[tuple[int, int], list[int]]:
    """Indices of a batch grouped by generation size, in first-seen order: one pipeline call per size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(sizes):
        groups.setdefault(s, []).append(i)
    return groups


def scheduler_name(pipe) -> str:
    return type(pipe.scheduler).__name__
