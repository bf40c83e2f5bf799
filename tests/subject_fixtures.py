"""Small Subjects200K-style datasets built in memory (PIL images, HF `datasets`): each row a pair
image of two views of one subject side by side, its description and quality scores."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

VIEW = 64  # each view is VIEW x VIEW; the pair image is (2 VIEW) x VIEW, like Subjects200K's 1024 x 512


def view_image(subject: int, view: int, size: int = VIEW) -> np.ndarray:
    """One view: a subject-coloured disc on a view-dependent textured background (distinct images)."""
    rng = np.random.default_rng(1000 * subject + view)
    bg = rng.integers(0, 256, 3)
    arr = np.clip(bg + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    colour = tuple(int(c) for c in np.random.default_rng(subject).integers(0, 256, 3))
    off = 6 + 10 * view
    ImageDraw.Draw(im).ellipse([off, off, off + size // 2, off + size // 2], fill=colour)
    return np.asarray(im)


def pair_image(subject: int) -> Image.Image:
    return Image.fromarray(np.concatenate([view_image(subject, 0), view_image(subject, 1)], axis=1))


def subject_rows(n: int, scores: list[int] | None = None) -> dict[str, list]:
    """Columns of n subjects; objectConsistency from `scores` (default 5 for every subject)."""
    scores = scores or [5] * n
    return {
        "image": [pair_image(i) for i in range(n)],
        "description": [{"item": f"thing {i}", "description_0": f"thing {i} on a table",
                         "description_1": f"thing {i} in a garden", "category": f"cat{i % 2}",
                         "description_valid": True} for i in range(n)],
        "quality_assessment": [{"compositeStructure": 5, "objectConsistency": scores[i], "imageQuality": 4}
                               for i in range(n)],
        "collection": ["collection_2"] * n,
    }


def subject_dataset(n: int, scores: list[int] | None = None):
    import datasets

    features = datasets.Features({
        "image": datasets.Image(),
        "description": {"item": datasets.Value("string"), "description_0": datasets.Value("string"),
                        "description_1": datasets.Value("string"), "category": datasets.Value("string"),
                        "description_valid": datasets.Value("bool")},
        "quality_assessment": {"compositeStructure": datasets.Value("int64"),
                               "objectConsistency": datasets.Value("int64"),
                               "imageQuality": datasets.Value("int64")},
        "collection": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(subject_rows(n, scores), features=features)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()
