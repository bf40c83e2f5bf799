"""`vicl status`: per stage, what exists in the store and what a run would still compute."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipelines.params import Params
from pipelines.store import NodeStore


def status_report(params: Params, store: NodeStore) -> str:
    from pipelines.stages.annotate import plan

    lines = []
    marker = store.images_dir / "ingest.json"
    if not marker.exists():
        lines.append("ingest:   not run")
        return "\n".join(lines + ["annotate: waiting for ingest", "sample:   waiting", "export:   waiting"])
    total = json.loads(marker.read_text())["parts"]
    parts = store.image_parts()
    lines.append(f"ingest:   {len(parts)}/{total} parts" + ("" if len(parts) == total else " (incomplete)"))
    for run in plan(params, store):
        done = sum((run.folder / p.name).exists() for p in parts)
        lines.append(f"annotate: {run.name:<20} {done}/{len(parts)} parts  -> {', '.join(run.produces)}")
    if store.samples_path.exists():
        import pyarrow.parquet as pq

        n = pq.read_metadata(store.samples_path).num_rows
        lines.append(f"sample:   {n} samples")
    else:
        lines.append("sample:   not run")
    out = Path(params.paths.out)
    shards = sorted((out / "shards").glob("*/*.tar"))
    manifest = out / "manifest.json"
    lines.append(f"export:   {len(shards)} shards" + (", manifest written" if manifest.exists() else ", no manifest"))
    failures = store.failures().to_pylist()
    if failures:
        reasons = Counter(f"{f['stage']}/{f['reason']}" for f in failures)
        lines.append("failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    return "\n".join(lines)
