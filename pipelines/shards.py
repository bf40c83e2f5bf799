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

from pipelines.images import decode_rgb
from pipelines.layouts import cell_shape, compose_grid, fit_cell, png_bytes, sequence_fields
from pipelines.sample_schema import GRID_FIELD, JSON_FIELD, SCHEMA_VERSION, cell_boxes
from pipelines.sampling_params import ExportParams
from pipelines.store import atomic_path


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
    """The SampleRecord (pipelines/sample_schema.py) plus vicl's added keys."""
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
    }


def sample_cells(sample: dict, cells: dict[tuple[str, str], bytes], export: ExportParams) -> tuple[list, tuple]:
    """The fitted cell images (row-major) and their (height, width)."""
    decoded = [decode_rgb(cells[ref]) for ref in cell_refs(sample)]
    aspect = 1.0
    if export.aspect == "query":
        query = decoded[-len(sample["columns"])]  # first cell of the query row
        aspect = query.shape[1] / query.shape[0]
    hw = cell_shape(export.cell_size, aspect, export.max_aspect)
    return [fit_cell(d, hw) for d in decoded], hw


def assemble(sample: dict, cells: dict[tuple[str, str], bytes], export: ExportParams | int) -> dict:
    """{"grid": shard sample, "sequence": shard sample or None}; `cells[(node, image_id)]` = encoded bytes."""
    if isinstance(export, int):
        export = ExportParams(cell_size=export)
    fitted, hw = sample_cells(sample, cells, export)
    record = build_record(sample, hw)
    rows, cols = record["rows"], record["cols"]
    grid = {"__key__": sample["key"], JSON_FIELD: json.dumps({**record, "layout": "grid"}, sort_keys=True).encode(),
            GRID_FIELD: png_bytes(compose_grid(fitted, rows, cols), export.png_compress_level)}
    sequence = None
    if "sequence" in export.layouts:
        sequence = {"__key__": sample["key"],
                    JSON_FIELD: json.dumps({**record, "layout": "sequence"}, sort_keys=True).encode(),
                    **sequence_fields(fitted, cols, export.png_compress_level)}
    return {"grid": grid, "sequence": sequence}


def tar_bytes(samples: list[dict], mtime: int = 0) -> bytes:
    """Encoded samples ({__key__, field: bytes}) as one deterministic tar."""
    import webdataset as wds

    buf = io.BytesIO()
    writer = wds.TarWriter(buf, user="vicl", group="vicl", mode=0o644, mtime=float(mtime), encoder=False)
    for s in sorted(samples, key=lambda s: s["__key__"]):
        if "." in s["__key__"]:
            raise ValueError(f"WebDataset keys may not contain dots: {s['__key__']!r}")
        writer.write(s)
    writer.close()
    return buf.getvalue()


def write_tar(samples: list[dict], path, mtime: int = 0) -> int:
    """Write encoded samples to `path` atomically; returns bytes written."""
    data = tar_bytes(samples, mtime)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


