"""Read vicl WebDataset shards into batches of one layout (and, optionally, one task family).

A shard sample is `json` (core.sample_schema.SampleRecord) + `grid.png`, read by the shared
reader (core/sample_reader.py, which checks the schema version). The grid is
cut into cells with each cell's `box`; cells are resized to a multiple of 16 px so that
every cell covers whole FLUX/Qwen latent tokens (VAE /8, then 2x2 packing). FLUX position
ids and Qwen `img_shapes` are shared by a batch, so a batch only holds samples of one
layout (rows, cols, cell height, cell width).

Determinism: shard resampling, shuffling and family draws are seeded from (seed, rank), so
a resumed run can fast-forward the stream to where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from collections import OrderedDict
from glob import glob
from typing import Iterable, Iterator

import numpy as np
import webdataset as wds
from PIL import Image

import training  # noqa: F401  - torchvision shim before any image library
from core.sample_reader import Sample, parse_record, read_samples
from core.sample_schema import GRID_FIELD, JSON_FIELD

TOKEN_PX = 16  # one packed latent token: VAE factor 8 x patch 2


class GridSample:
    """One shard sample; its cells (row-major, each fitted to `cell_hw`, uint8) are decoded on
    first use, so batching, resume fast-forward and latent-cache hits never decode the PNG."""

    def __init__(self, key: str, record: dict, cells: list[np.ndarray] | None, cell_hw: tuple[int, int],
                 png: bytes | None = None):
        if cells is None and png is None:
            raise ValueError("a GridSample needs its cells or its grid PNG")
        self.key, self.record, self.cell_hw = key, record, cell_hw
        self._cells, self._png = cells, png
        self._digest: str | None = None

    @property
    def content_digest(self) -> str:
        """SHA-256 (hex) of what an encoder reads: the record (cells, boxes, instruction), the
        fitted cell size and the pixels (the grid PNG's bytes, or the cell arrays). A re-export
        that changes any of them changes the digest, so caches keyed by it never serve stale data."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(json.dumps(self.record, sort_keys=True).encode())
            h.update(repr(tuple(self.cell_hw)).encode())
            if self._png is not None:
                h.update(self._png)
            else:
                for c in self._cells:
                    h.update(repr(c.shape).encode())
                    h.update(np.ascontiguousarray(c).tobytes())
            self._digest = h.hexdigest()
        return self._digest

    @property
    def cells(self) -> list[np.ndarray]:
        if self._cells is None:
            self.content_digest  # noqa: B018 - from the PNG bytes, before they are dropped
            with Image.open(io.BytesIO(self._png)) as im:
                grid = np.asarray(im.convert("RGB"))
            self._cells = [_resize(c, self.cell_hw) for c in cut_cells(grid, self.record)]
            self._png = None
        return self._cells

    @property
    def rows(self) -> int:
        return int(self.record["rows"])

    @property
    def cols(self) -> int:
        return int(self.record["cols"])

    @property
    def family(self) -> str:
        return str(self.record.get("family") or self.record.get("task") or "")

    @property
    def target_index(self) -> int:
        t = self.record["target_cell"]
        return int(t["row"]) * self.cols + int(t["col"])

    @property
    def instruction(self) -> str:
        return str((self.record.get("instruction") or {}).get("text", ""))

    def layout(self) -> tuple[int, int, int, int]:
        return (self.rows, self.cols, *self.cell_hw)

    def grid(self) -> np.ndarray:
        """The re-composed grid of fitted cells (rows x cols)."""
        h, w = self.cell_hw
        out = np.zeros((self.rows * h, self.cols * w, 3), np.uint8)
        for i, cell in enumerate(self.cells):
            r, c = divmod(i, self.cols)
            out[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
        return out

    def target_box(self) -> tuple[int, int, int, int]:
        """[x0, y0, x1, y1] of the target cell in the fitted grid, pixels."""
        h, w = self.cell_hw
        r, c = divmod(self.target_index, self.cols)
        return (c * w, r * h, (c + 1) * w, (r + 1) * h)

    def sequence(self) -> list[np.ndarray]:
        """Separate-images layout: target first, then every other cell in row-major order."""
        t = self.target_index
        return [self.cells[t]] + [c for i, c in enumerate(self.cells) if i != t]


def fitted_cell_hw(record: dict, cell_size: int | None) -> tuple[int, int]:
    if cell_size is not None:
        if cell_size % TOKEN_PX:
            raise ValueError(f"data.cell_size={cell_size} is not a multiple of {TOKEN_PX}")
        return cell_size, cell_size
    h = int(record["cell_height"]) // TOKEN_PX * TOKEN_PX
    w = int(record["cell_width"]) // TOKEN_PX * TOKEN_PX
    if h == 0 or w == 0:
        raise ValueError(f"cell {record['cell_height']}x{record['cell_width']} is smaller than {TOKEN_PX} px")
    return h, w


def cut_cells(grid: np.ndarray, record: dict) -> list[np.ndarray]:
    """Cells in row-major order, cut exactly with their boxes."""
    cells = sorted(record["cells"], key=lambda c: (c["row"], c["col"]))
    return [grid[y0:y1, x0:x1] for x0, y0, x1, y1 in (c["box"] for c in cells)]


def _resize(cell: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if cell.shape[:2] == hw:
        return cell
    return np.asarray(Image.fromarray(cell).resize((hw[1], hw[0]), Image.Resampling.BICUBIC))


def decode_sample(raw: Sample | dict, cell_size: int | None = None) -> GridSample:
    """A shard sample (core.sample_reader.Sample, or a dict of bytes per field: `json`, `grid.png`,
    optionally `__key__`) into a GridSample; the PNG is not decoded yet."""
    if isinstance(raw, Sample):
        key, record, png = raw.key, dict(raw.record), raw.images[GRID_FIELD]
    else:
        record = dict(parse_record(raw[JSON_FIELD], key=raw.get("__key__"), shard=raw.get("__url__")))
        key, png = raw.get("__key__", record["key"]), raw[GRID_FIELD]
    return GridSample(key, record, None, fitted_cell_hw(record, cell_size), png=png)


def expand_shards(patterns: Iterable[str]) -> list[str]:
    """Globs expand here; brace patterns are left to webdataset."""
    urls: list[str] = []
    for p in patterns:
        if any(ch in p for ch in "*?[") and "{" not in p:
            urls.extend(sorted(glob(p)))
        else:
            urls.append(p)
    if not urls:
        raise FileNotFoundError(f"no shards match {list(patterns)}")
    return urls


def raw_sample_stream(urls: list[str], *, seed: int, shuffle_buffer: int) -> wds.DataPipeline:
    """Infinite, resampled stream of shard samples (core.sample_reader.Sample: record checked,
    images undecoded); split by node/worker for multi-node runs.

    This is WebDataset(resampled=True) spelled out so the shard draw is deterministic
    (ResampledShards seeds from rank*1000 + worker, the epoch and `seed`); the tars are walked
    by the shared reader.
    """
    stages = [
        wds.ResampledShards(urls, seed=seed, deterministic=True),
        wds.split_by_node,
        wds.split_by_worker,
        read_samples,
    ]
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 16),
                                  rng=random.Random(seed)))
    return wds.DataPipeline(*stages)


def batch_by_layout(samples: Iterator[GridSample], batch_size: int, *, max_buffered: int = 4096,
                    family_for_step: Iterator[str] | None = None) -> Iterator[list[GridSample]]:
    """Group samples of one layout into batches.

    With `family_for_step` (decoupled task sampling) each batch is drawn from the family the
    iterator names, and also of one layout; samples of other families wait in their buckets.
    """
    buckets: OrderedDict[tuple, list[GridSample]] = OrderedDict()
    buffered = 0
    want = next(family_for_step) if family_for_step is not None else None
    for s in samples:
        fam = s.family if family_for_step is not None else None
        k = (fam, s.layout())
        buckets.setdefault(k, []).append(s)
        buffered += 1
        while True:
            ready = next((key for key, b in buckets.items()
                          if len(b) >= batch_size and (want is None or key[0] == want)), None)
            if ready is None:
                break
            batch, buckets[ready] = buckets[ready][:batch_size], buckets[ready][batch_size:]
            buffered -= batch_size
            yield batch
            if family_for_step is not None:
                want = next(family_for_step)
        if buffered > max_buffered:
            raise RuntimeError(
                f"{buffered} samples buffered without completing a batch of {batch_size} for "
                f"family {want!r}: too many layouts, or the family is missing from the shards")


def family_draws(families: list[str], weights: dict[str, float], *, seed: int, rank: int) -> Iterator[str]:
    """VIRAL's decoupled task sampling: this rank's family for each successive step."""
    fams = sorted(families)
    w = [float(weights.get(f, 1.0 if not weights else 0.0)) for f in fams]
    if not any(w):
        raise ValueError(f"family_weights {weights} give zero weight to every family {fams}")
    rng = random.Random(f"{seed}:{rank}:families")
    while True:
        yield rng.choices(fams, weights=w, k=1)[0]


def scan_families(urls: list[str]) -> list[str]:
    """Families present in the shards (decodes no image)."""
    fams = set()
    for sample in wds.DataPipeline(wds.SimpleShardList(urls), read_samples):  # SimpleShardList: braces
        rec = sample.record
        fams.add(str(rec.get("family") or rec.get("task") or ""))
    return sorted(fams)


def grid_batches(params, *, seed: int, rank: int = 0) -> Iterator[list[GridSample]]:
    """Batches for training from `params.data` (a training.config.DataParams)."""
    urls = expand_shards(params.shards)
    raw = raw_sample_stream(urls, seed=seed, shuffle_buffer=params.shuffle_buffer)
    decoded = (decode_sample(r, params.cell_size) for r in raw)
    draws = None
    if params.decoupled_tasks:
        fams = list(params.family_weights) or scan_families(urls)
        draws = family_draws(fams, params.family_weights, seed=seed, rank=rank)
    return batch_by_layout(decoded, params.batch_size, max_buffered=params.max_buffered,
                           family_for_step=draws)
