"""Sample assembly (grid composite + record) and deterministic WebDataset shard writing.

Byte-reproducible tars: webdataset's TarWriter with a fixed mtime, fixed user/group,
USTAR format, members of a sample in sorted field order, samples in key order. A shard
is written under a temporary name and renamed, so a killed export never leaves a tar
that looks finished.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from pipelines.images import decode_rgb, encode_png
from pipelines.sample_schema import GRID_FIELD, JSON_FIELD, SCHEMA_VERSION, cell_boxes
from pipelines.store import atomic_path


def fit_cell(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size (Lanczos)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side]))
    return np.asarray(crop.resize((size, size), Image.LANCZOS))


def phrase(node: str) -> str:
    return "the photo" if node == "image" else f"the {node.replace('_', ' ')} map"


def minimal_instruction(rows: int, cols: int, columns: list[str]) -> dict[str, str]:
    layout = f"A grid of {rows} row{'s' if rows > 1 else ''} and {cols} columns."
    conditions = ", ".join(phrase(n) for n in columns[:-1])
    task = f"Each row turns {conditions} into {phrase(columns[-1])}."
    return {"layout": layout, "task": task, "content": "", "text": f"{layout} {task}"}


def assemble(sample: dict, cells: dict[tuple[str, str], bytes], cell_size: int) -> dict:
    """One shard sample: {__key__, json, grid.png}. `cells[(node, image_id)]` holds encoded node bytes."""
    columns, ids = sample["columns"], sample["image_ids"]
    rows, cols = len(ids), len(columns)
    grid = np.zeros((rows * cell_size, cols * cell_size, 3), np.uint8)
    boxes = cell_boxes(rows, cols, cell_size, cell_size)
    records = []
    for r, image_id in enumerate(ids):
        for c, node in enumerate(columns):
            x0, y0, x1, y1 = boxes[r * cols + c]
            grid[y0:y1, x0:x1] = fit_cell(decode_rgb(cells[(node, image_id)]), cell_size)
            records.append({"row": r, "col": c, "node": node, "image_id": image_id,
                            "role": "query" if r == rows - 1 else "context",
                            "is_target": r == rows - 1 and c == cols - 1, "box": [x0, y0, x1, y1]})
    record = {
        "schema": SCHEMA_VERSION, "key": sample["key"], "split": sample["split"], "task": sample["task"],
        "family": sample["family"], "columns": columns, "rows": rows, "cols": cols,
        "cell_height": cell_size, "cell_width": cell_size, "target_cell": {"row": rows - 1, "col": cols - 1},
        "cells": records, "instruction": minimal_instruction(rows, cols, columns),
    }
    return {"__key__": sample["key"], JSON_FIELD: json.dumps(record, sort_keys=True).encode(),
            GRID_FIELD: encode_png(grid)}


def write_tar(samples: list[dict], path, mtime: int = 0) -> int:
    """Write encoded samples ({__key__, field: bytes}) to `path` atomically; returns bytes written."""
    import webdataset as wds

    buf = io.BytesIO()
    writer = wds.TarWriter(buf, user="vicl", group="vicl", mode=0o644, mtime=float(mtime), encoder=False)
    for s in sorted(samples, key=lambda s: s["__key__"]):
        if "." in s["__key__"]:
            raise ValueError(f"WebDataset keys may not contain dots: {s['__key__']!r}")
        writer.write(s)
    writer.close()
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return len(buf.getvalue())
