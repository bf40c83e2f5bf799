"""Quality counts of a finished build (issue 18, done-when 3), read from its shards and tables.

Prints, from the build that a params file describes (paths.out, paths.store):
1. blank cells in the grid shards: per node type of the lines and labels kinds (pose skeletons,
   edge and line maps, boxes, masks and label maps), how many cells are blank - no pixel at or
   above 128 for lines (a skeleton or edge map with nothing drawn), no non-zero pixel for labels
   (an empty mask) - out of how many;
2. no-op pairs: cells of an edit, degradation, restoration source or mined edit whose row also
   holds the photo it was made from (`image`, or `mined_source`), counted as a no-op when fewer
   than 0.1 % of the cell's pixels differ from that photo's cell by more than 4 levels (the
   annotators' own no-op rule, annotators/quality.py, at cell size);
3. what was held back: `quality.parquet` per annotator and reason, and how many cells of the
   samples table (paths.store) still name a held-back (node, image) - 0 when the sampler honours
   the gates.
Exit status 1 when any blank cell, no-op pair or used held-back node is found (so CI can run it
after `make demo`).

    python benchmarks/quality_counts.py [--params params.yaml] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import pipelines  # noqa: F401  (vicl first: torchvision fallback)
from annotators.quality import changed_fraction, strong_fraction
from core.node_types import NODE_TYPES, resample_kind
from pipelines.report import quality_counts, read_quality

PAIR_GROUPS = ("synthetic_edit", "degradation", "restoration_source")
NO_OP_MIN_CHANGED, NO_OP_DELTA = 0.001, 4.0


def _group(node: str) -> str:
    if node.startswith("edit_"):
        return "synthetic_edit"
    return NODE_TYPES[node].group if node in NODE_TYPES else ""


def is_blank(cell: np.ndarray, kind: str) -> bool:
    if kind == "lines":
        return strong_fraction(cell, 128) == 0.0
    return not cell.any()  # labels


def source_of(node: str) -> str | None:
    """The node a pair cell was made from, or None when it is not one half of a pair."""
    if node == "mined_edit":
        return "mined_source"
    return "image" if _group(node) in PAIR_GROUPS else None


def shard_samples(out: Path):
    """(record, grid array) of every sample of the grid shards, in shard then key order
    (core.sample_reader: the shared reader; exported shards hold their samples in key order)."""
    from core.sample_reader import iter_samples

    paths = sorted((out / "shards").glob("*/*.tar"))
    for sample in iter_samples(paths) if paths else ():
        yield dict(sample.record), sample.image("grid.png")


def held_back_in_samples(held: list[dict], samples_path: Path | None) -> int:
    """Cells of the samples table whose (node, image id) was held back by a gate."""
    import pyarrow.parquet as pq

    if samples_path is None or not Path(samples_path).exists():
        return 0
    bad = {(r["node_type"], r["image_id"]) for r in held}
    table = pq.read_table(samples_path, columns=["cell_nodes", "cell_ids"]).to_pylist()
    return sum((n, i) in bad for s in table for n, i in zip(s["cell_nodes"], s["cell_ids"]))


def count(out: Path, samples_path: Path | None = None) -> dict:
    cells_per_node: Counter = Counter()
    blank_per_node: Counter = Counter()
    pairs_per_node: Counter = Counter()
    no_op_per_node: Counter = Counter()
    samples = 0
    examples: list[str] = []
    for record, grid in shard_samples(out):
        samples += 1
        crops = {}
        for cell in record["cells"]:
            x0, y0, x1, y1 = cell["box"]
            crops[(cell["row"], cell["node"])] = grid[y0:y1, x0:x1]
        for (row, node), crop in crops.items():
            kind = resample_kind(node)
            if kind in ("lines", "labels") and node not in ("image",):
                cells_per_node[node] += 1
                if is_blank(crop, kind):
                    blank_per_node[node] += 1
                    examples.append(f"{record['key']} row {row} {node}: blank")
            source = source_of(node)
            if source is not None and (row, source) in crops:
                pairs_per_node[node] += 1
                if changed_fraction(crops[(row, source)], crop, NO_OP_DELTA) < NO_OP_MIN_CHANGED:
                    no_op_per_node[node] += 1
                    examples.append(f"{record['key']} row {row} {node}: no-op")
    held = read_quality(out)
    return {
        "samples": samples,
        "map_cells": dict(sorted(cells_per_node.items())), "blank_cells": dict(sorted(blank_per_node.items())),
        "pair_cells": dict(sorted(pairs_per_node.items())), "no_op_pairs": dict(sorted(no_op_per_node.items())),
        "held_back": quality_counts(held), "held_back_total": len(held),
        "held_back_cells_in_samples": held_back_in_samples(held, samples_path), "examples": examples[:20],
    }


def main(argv=None) -> int:
    from pipelines.params import load_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args(argv)
    from pipelines.store import NodeStore

    params = load_params(args.params)
    out = Path(params.paths.out)
    result = count(out, NodeStore(params.paths.store).samples_path)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"{result['samples']} samples in {out / 'shards'}")
        print(f"blank map cells: {sum(result['blank_cells'].values())} of {sum(result['map_cells'].values())}")
        for node, n in result["map_cells"].items():
            print(f"  {node:24s} {result['blank_cells'].get(node, 0):5d} blank of {n}")
        print(f"no-op pairs: {sum(result['no_op_pairs'].values())} of {sum(result['pair_cells'].values())}")
        for node, n in result["pair_cells"].items():
            print(f"  {node:24s} {result['no_op_pairs'].get(node, 0):5d} no-op of {n}")
        print(f"held back by the quality gates: {result['held_back_total']}; sample cells that use one: "
              f"{result['held_back_cells_in_samples']}")
        for annotator, reasons in result["held_back"].items():
            print(f"  {annotator:24s} " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
        for line in result["examples"]:
            print(f"  e.g. {line}")
    bad = sum(result["blank_cells"].values()) + sum(result["no_op_pairs"].values())
    return 1 if bad or result["held_back_cells_in_samples"] else 0


if __name__ == "__main__":
    sys.exit(main())
