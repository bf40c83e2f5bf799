"""Which shard of a shard set holds which sample, kept from one export to the next.

A first export (or one after `export.shard_size` changed) lays a set out compactly: its samples
in key order, `shard_size` per shard. Later exports keep that layout: a sample already exported
stays in its shard, a new sample goes into a new shard (first into the numbers of shards that
emptied, then after the last), and a shard is rewritten only when a sample left it, joined it or
changed. With the ring sampler (pipelines/sampling.py) adding 1 % of images changes a few per cent
of the samples, so most shards keep their bytes and new samples land in new shards. When
shards would end up less than half full on average, the set is laid out compactly again.

Numbers stay contiguous (0..n-1, as WebDataset brace patterns expect): a number left empty with no
new samples to fill it takes the last shard, which is renamed, not re-rendered.

The layout is recorded per sample in `shards_index.parquet` (set, key, shard) beside the shards:
the same history of inputs gives the same layout on any machine. A user who wants the compact
layout back deletes that file (the next export lays every set out afresh).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from pipelines.store import read_part, write_table

INDEX_FILE = "shards_index.parquet"
INDEX_SCHEMA = pa.schema([("set", pa.string()), ("key", pa.string()), ("shard", pa.int32()),
                          ("cell", pa.string())])  # cell: "<width>x<height>" the sample was rendered at


def compact(keys: list[str], size: int) -> list[list[str]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


def layout(keys: list[str], previous: dict[str, int], size: int) -> list[list[str]]:
    """Shard number -> its keys (each in key order) for `keys` (sorted), keeping `previous`
    (key -> shard number of the last export of this set) where the key is still there."""
    if not previous:
        return compact(keys, size)
    kept: dict[int, list[str]] = defaultdict(list)
    new = []
    for key in keys:
        shard = previous.get(key)
        (new if shard is None else kept[shard]).append(key)
    free = [j for j in range(max(kept, default=-1) + 1) if j not in kept]
    top = max(kept, default=-1) + 1
    for chunk in compact(new, size):
        if free:
            kept[free.pop(0)] = chunk
        else:
            kept[top] = chunk
            top += 1
    for gap in free:  # no new samples left to fill it: the last shard moves down (a rename)
        last = max(kept)
        if last < gap:
            break
        kept[gap] = kept.pop(last)
    shards = [kept[j] for j in sorted(kept)]
    if len(keys) < 0.5 * size * len(shards):  # fragmented by many small changes: lay out afresh
        return compact(keys, size)
    return shards


def read_index(out: Path) -> dict[str, dict[str, int]]:
    """{set: {key: shard}} of the last export, {} when there is none."""
    path = Path(out) / INDEX_FILE
    if not path.exists():
        return {}
    index: dict[str, dict[str, int]] = defaultdict(dict)
    table = read_part(path)
    for set_name, key, shard in zip(*(table[c].to_pylist() for c in ("set", "key", "shard"))):
        index[set_name][key] = shard
    return dict(index)


def read_cells(out: Path) -> dict[tuple[str, str], str]:
    """{(set, key): cell size} the last export rendered each sample at."""
    path = Path(out) / INDEX_FILE
    if not path.exists():
        return {}
    table = read_part(path)
    if "cell" not in table.column_names:
        return {}
    return {(s, k): c for s, k, c in zip(*(table[n].to_pylist() for n in ("set", "key", "cell"))) if c}


def write_index(out: Path, sets: dict[str, list[list[str]]], cells: dict[tuple[str, str], str | None]) -> None:
    rows = {"set": [], "key": [], "shard": [], "cell": []}
    for set_name, shards in sorted(sets.items()):
        for j, keys in enumerate(shards):
            rows["set"] += [set_name] * len(keys)
            rows["key"] += keys
            rows["shard"] += [j] * len(keys)
            rows["cell"] += [cells.get((set_name, k)) for k in keys]
    write_table(pa.table(rows, schema=INDEX_SCHEMA), Path(out) / INDEX_FILE)
