"""The contract between the exporter and every reader of vicl shards (the bundled trainer included).

A shard set is `<out>/shards/<split>/<split>-NNNNN.tar`, WebDataset layout. Every sample
carries exactly these fields (so HF `datasets` infers one schema):

- `__key__`   : `<split>_<9-digit index>` (no dots).
- `json`      : a `SampleRecord` (below), UTF-8 JSON with sorted keys.
- `grid.png`  : the composite: `rows` x `cols` cells, each `cell_height` x `cell_width`,
                rows top to bottom (context rows first, the query row last), columns left
                to right in `columns` order. Lossless, so a reader can cut cells out of it
                exactly with each cell's `box` and get the separate-images layout.

`SampleRecord` fields:
- schema: SCHEMA_VERSION
- key, split, task, family: names
- columns: node types of the columns in grid order (conditions..., target)
- rows, cols, cell_height, cell_width: ints
- target_cell: {"row", "col"} the cell a model must generate (on the query row)
- cells: list of {"row", "col", "node", "image_id", "role": "context"|"query",
          "is_target": bool, "box": [x0, y0, x1, y1]} in row-major order
- instruction: {"layout": str, "task": str, "content": str, "text": str}
"""

from __future__ import annotations

from typing import TypedDict

SCHEMA_VERSION = "vicl.sample/1"
GRID_FIELD = "grid.png"
JSON_FIELD = "json"


class CellRecord(TypedDict):
    row: int
    col: int
    node: str
    image_id: str
    role: str
    is_target: bool
    box: list[int]


class SampleRecord(TypedDict):
    schema: str
    key: str
    split: str
    task: str
    family: str
    columns: list[str]
    rows: int
    cols: int
    cell_height: int
    cell_width: int
    target_cell: dict[str, int]
    cells: list[CellRecord]
    instruction: dict[str, str]


def cell_boxes(rows: int, cols: int, cell_height: int, cell_width: int) -> list[list[int]]:
    """Row-major [x0, y0, x1, y1] of every cell of a grid."""
    return [[c * cell_width, r * cell_height, (c + 1) * cell_width, (r + 1) * cell_height]
            for r in range(rows) for c in range(cols)]
