"""Sample assembly (grid composite, separate cells, record) and deterministic WebDataset shard writing.

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

from core.images import decode_rgb, encode_png
from core.grid import capped, cell_shape, compose_grid, fit_cell, nearest_bucket, sequence_field
from core.node_types import resample_kind
from core.sample_schema import GRID_FIELD, JSON_FIELD, SCHEMA_VERSION, cell_boxes
from pipelines.sampling_params import ExportParams
from pipelines.store import atomic_path


# node meta: a detector's own scores, which its confidence gate read (annotators/quality.py)
GATE_SCORES_KEY = "confidence"


def cell_refs(sample: dict) -> list[tuple[str, str]]:
    """(node, image id) of every cell, row-major."""
    if sample.get("cell_nodes"):
        return list(zip(sample["cell_nodes"], sample["cell_ids"]))
    return [(n, i) for i in sample["image_ids"] for n in sample["columns"]]


def target_of(sample: dict) -> tuple[int, int]:
    if sample.get("target_row") is not None:
        return int(sample["target_row"]), int(sample["target_col"])
    return len(sample["image_ids"]) - 1, len(sample["columns"]) - 1


def _instruction(sample: dict, rows: int, cols: int) -> dict[str, str]:
    if sample.get("instruction"):
        return dict(sample["instruction"])
    layout = f"A grid of {rows} row{'s' if rows > 1 else ''} and {cols} columns."
    return {"layout": layout, "task": "", "content": "", "text": layout}


def build_record(sample: dict, hw: tuple[int, int]) -> dict:
    """The SampleRecord (core/sample_schema.py) plus vicl's added keys."""
    columns, ids = list(sample["columns"]), list(sample["image_ids"])
    rows, cols = len(ids), len(columns)
    trow, tcol = target_of(sample)
    boxes = cell_boxes(rows, cols, hw[0], hw[1])
    cells = []
    for k, (node, image_id) in enumerate(cell_refs(sample)):
        r, c = divmod(k, cols)
        cells.append({"row": r, "col": c, "node": node, "image_id": image_id,
                      "role": "query" if r == rows - 1 else "context", "is_target": (r, c) == (trow, tcol),
                      "box": boxes[k]})
    return {
        "schema": SCHEMA_VERSION, "key": sample["key"], "split": sample["split"], "task": sample["task"],
        "family": sample["family"], "columns": columns, "rows": rows, "cols": cols, "cell_height": hw[0],
        "cell_width": hw[1], "target_cell": {"row": trow, "col": tcol}, "cells": cells,
        "instruction": _instruction(sample, rows, cols),
        # added in vicl (readers ignore unknown keys)
        "meta_task": sample.get("meta_task") or sample["family"],
        "axes": {"semantic": sample.get("semantic") or "", "locality": sample.get("locality") or ""},
        "permutation": list(sample.get("permutation") or range(cols - 1)),
        "context_mode": sample.get("context_mode") or "random",
        "source_ids": list(sample.get("source_ids") or ids),
        **({"scores": json.loads(sample["scores"])} if sample.get("scores") else {}),
        **({"gate_scores": sample["gate_scores"]} if sample.get("gate_scores") else {}),
    }


class CellCache:
    """The fitted cells of one shard: a cell that several samples share (same node, image and
    cell shape) is decoded and resized once, and its PNG (sequence layout) encoded once. The
    resize follows the node type's resample kind (lines, labels or continuous)."""

    def __init__(self, cells: dict[tuple[str, str], bytes], compress_level: int = 1):
        self.cells = cells
        self.compress_level = compress_level
        self._fitted: dict[tuple, np.ndarray] = {}
        self._png: dict[tuple, bytes] = {}

    def size(self, ref: tuple[str, str]) -> tuple[int, int]:
        """(width, height) from the header alone."""
        with Image.open(io.BytesIO(self.cells[ref])) as im:
            return im.size

    def fitted(self, ref: tuple[str, str], hw: tuple[int, int]) -> np.ndarray:
        key = (ref, hw)
        if key not in self._fitted:
            self._fitted[key] = fit_cell(decode_rgb(self.cells[ref]), hw, resample_kind(ref[0]))
        return self._fitted[key]

    def png(self, ref: tuple[str, str], hw: tuple[int, int]) -> bytes:
        key = (ref, hw)
        if key not in self._png:
            self._png[key] = encode_png(self.fitted(ref, hw), self.compress_level)
        return self._png[key]


def cell_hw(sample: dict, cache: CellCache, export: ExportParams) -> tuple[int, int]:
    """(height, width) of every cell of a sample (core/grid.py: the aspect rule, or the bucket nearest
    the query image's aspect), then capped to the grid's pixel budget."""
    aspect = 1.0
    if export.aspect == "query" or export.buckets:
        w, h = cache.size(cell_refs(sample)[-len(sample["columns"])])  # first cell of the query row
        aspect = w / h
    if export.buckets:
        bw, bh = nearest_bucket(aspect, [tuple(b) for b in export.buckets])
        hw = (bh, bw)
    else:
        hw = cell_shape(export.cell_size, aspect, export.max_aspect)
    return capped(hw, len(sample["image_ids"]), len(sample["columns"]), export.max_grid_pixels)


def assemble(sample: dict, cache: CellCache, export: ExportParams, layout: str = "grid") -> dict:
    """One shard sample ({__key__, json, images}) of `sample` in `layout`; one CellCache serves
    every sample of a shard, so shared cells are fitted once."""
    hw = cell_hw(sample, cache, export)
    record = build_record(sample, hw)
    rows, cols = record["rows"], record["cols"]
    refs = cell_refs(sample)
    out = {"__key__": sample["key"], JSON_FIELD: json.dumps({**record, "layout": layout}, sort_keys=True).encode()}
    if layout == "grid":
        grid = compose_grid([cache.fitted(ref, hw) for ref in refs], rows, cols)
        out[GRID_FIELD] = encode_png(grid, export.png_compress_level)
    elif layout == "sequence":
        out.update({sequence_field(*divmod(k, cols)): cache.png(ref, hw) for k, ref in enumerate(refs)})
    else:
        raise ValueError(f"unknown layout {layout!r} (grid or sequence)")
    return out


def write_tar(samples: list[dict], path, mtime: int = 0) -> int:
    """Encoded samples ({__key__, field: bytes}) as one deterministic tar, sorted by key, written
    to `path` atomically (streamed into a temporary file); returns its size."""
    import webdataset as wds

    # tarfile's stream mode writes 10 KiB records: a 1 MiB buffer turns them into few syscalls
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=1 << 20) as f:
        writer = wds.TarWriter(f, user="vicl", group="vicl", mode=0o644, mtime=float(mtime), encoder=False)
        for s in sorted(samples, key=lambda s: s["__key__"]):
            if "." in s["__key__"]:
                raise ValueError(f"WebDataset keys may not contain dots: {s['__key__']!r}")
            writer.write(s)
        writer.close()
        return f.tell()
