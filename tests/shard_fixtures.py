"""Write small vicl shards in exactly the core.sample_schema format (tests only).

The lead will switch these fixtures to shards the real exporter writes. Cells are real
photos from skimage.data; each family is a simple, learnable pixel task.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

import training  # noqa: F401
from core.sample_schema import GRID_FIELD, JSON_FIELD, SCHEMA_VERSION, cell_boxes

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def photo(name: str, size: int) -> np.ndarray:
    from skimage import data

    im = getattr(data, name)()
    if im.ndim == 2:
        im = np.stack([im] * 3, -1)
    return np.asarray(Image.fromarray(im[..., :3]).resize((size, size), Image.Resampling.BILINEAR))


FAMILIES = {
    "invert": lambda a: 255 - a,
    "gray": lambda a: np.repeat(a.mean(-1, keepdims=True), 3, -1).astype(np.uint8),
}


def make_record(key: str, family: str, rows: int, cols: int, cell: int, split: str = "train") -> dict:
    boxes = cell_boxes(rows, cols, cell, cell)
    columns = ["image", family]
    cells = []
    for i, box in enumerate(boxes):
        r, c = divmod(i, cols)
        cells.append({"row": r, "col": c, "node": columns[c % 2], "image_id": f"img{r}",
                      "role": "query" if r == rows - 1 else "context",
                      "is_target": r == rows - 1 and c == cols - 1, "box": box})
    return {"schema": SCHEMA_VERSION, "key": key, "split": split, "task": family, "family": family,
            "columns": columns, "rows": rows, "cols": cols, "cell_height": cell, "cell_width": cell,
            "target_cell": {"row": rows - 1, "col": cols - 1}, "cells": cells,
            "instruction": {"layout": f"{rows}x{cols} grid", "task": family, "content": "",
                            "text": f"each row: an image and its {family} version"}}


def make_grid(family: str, rows: int, photos: list[str], cell: int) -> np.ndarray:
    """rows x 2 grid: (photo, family(photo)) per row."""
    fn = FAMILIES[family]
    out = []
    for r in range(rows):
        a = photo(photos[r % len(photos)], cell)
        out.append(np.concatenate([a, fn(a)], axis=1))
    return np.concatenate(out, axis=0)


def write_shards(out_dir: str | Path, *, n_samples: int = 8, per_shard: int = 4, cell: int = 32,
                 rows: int = 2, families: tuple[str, ...] = ("invert", "gray"),
                 layouts: tuple[int, ...] | None = None, split: str = "train") -> list[str]:
    """Write shards; sample i has family families[i % F] and `rows` (or layouts[i % L]) rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, writer = [], None
    for i in range(n_samples):
        if i % per_shard == 0:
            if writer:
                writer.close()
            paths.append(str(out_dir / f"{split}-{len(paths):05d}.tar"))
            writer = wds.TarWriter(paths[-1])
        fam = families[i % len(families)]
        r = layouts[i % len(layouts)] if layouts else rows
        key = f"{split}_{i:09d}"
        photos = [PHOTOS[(i + k) % len(PHOTOS)] for k in range(r)]
        grid = make_grid(fam, r, photos, cell)
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        record = make_record(key, fam, r, 2, cell, split)
        writer.write({"__key__": key, JSON_FIELD: json.dumps(record, sort_keys=True).encode(),
                      GRID_FIELD: buf.getvalue()})
    writer.close()
    return paths
