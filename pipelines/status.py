"""`vicl status`: per stage, what exists in the store and what a run would still compute."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipelines.params import Params
from pipelines.store import NodeStore


def status_report(params: Params, store: NodeStore) -> str:
    """Each stage's own lines (pipelines/stage.py), in run order; a stage whose inputs are not made
    yet is `waiting for` the stage that makes them. Then failures and held-back outputs."""
    from pipelines.annotation_plan import plan
    from pipelines.stage import producer, resolve
    from pipelines.stages import STAGES

    lines = []
    for stage in STAGES:
        before = [p for p in (producer(path, STAGES) for path in stage.reads)
                  if p is not None and p.done and not resolve(p.done, params).exists()]
        if before and stage.name != STAGES[0].name:
            lines.append(f"{stage.name + ':':<9} waiting for {before[0].name}")
        elif stage.status is not None:
            lines.extend(stage.status(params, store))
    if not store.images_dir.exists():
        return "\n".join(lines)
    runs = plan(params, store)
    out = Path(params.paths.out)
    failures = store.failures([r.folder for r in runs])
    if failures.num_rows:
        reasons = Counter(f"{s}/{r}" for s, r in zip(failures["stage"].to_pylist(), failures["reason"].to_pylist()))
        lines.append(f"failures: {failures.num_rows}: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    quality = out / "quality.parquet"
    if quality.exists():
        import pyarrow.parquet as pq

        q = pq.read_table(quality, columns=["annotator", "reason"])
        if q.num_rows:
            held = Counter(f"{a}/{r}" for a, r in zip(q["annotator"].to_pylist(), q["reason"].to_pylist()))
            lines.append(f"held back: {q.num_rows}: " + ", ".join(f"{k} x{v}" for k, v in sorted(held.items())))
    return "\n".join(lines)
