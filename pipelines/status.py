"""`vicl status`: per stage, what exists in the store and what a run would still compute."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipelines.params import Params
from pipelines.store import NodeStore


def status_report(params: Params, store: NodeStore) -> str:
    from pipelines.annotation_plan import plan
    from pipelines.stages.ingest import summarise_ingest

    lines = []
    marker = store.images_dir / "ingest.json"
    if not marker.exists():
        return "\n".join(["ingest:   not run (`vicl ingest`)", "annotate: waiting for ingest", "mine:     waiting",
                          "sample:   waiting", "export:   waiting"])
    info = json.loads(marker.read_text())
    parts = store.image_parts()
    ingest = summarise_ingest(store)
    lines.append(f"ingest:   {len(parts)}/{info['parts']} parts, {ingest['ok']} images, {ingest['failed']} failed"
                 + ("" if len(parts) == info["parts"] else " (incomplete: run `vicl ingest`)"))
    runs = plan(params, store)
    for run in runs:
        done = sum((run.folder / p.name).exists() for p in parts)
        lines.append(f"annotate: {run.name:<24} {done}/{len(parts)} parts  -> {', '.join(run.produces)}")
    mined = store.mined_dir / "mined.json"
    if not params.mine.enabled:
        lines.append("mine:     disabled")
    elif mined.exists() and json.loads(mined.read_text()).get("enabled", True):
        m = json.loads(mined.read_text())
        labelled = (f"{m['labelled_pairs']} of known transform ({m.get('transform_keys', 0)} keys, paired by label "
                    "at sample), ") if m.get("labelled_pairs") else ""
        lines.append(f"mine:     {m.get('pairs', 0)} pairs: {labelled}{m.get('quadruplets', 0)} mined quadruplets")
    else:
        lines.append("mine:     not run")
    if store.samples_path.exists():
        import pyarrow.parquet as pq

        n = pq.read_metadata(store.samples_path).num_rows
        lines.append(f"sample:   {n} samples")
    else:
        lines.append("sample:   not run")
    out = Path(params.paths.out)
    grid = sorted((out / "shards").glob("*/*.tar"))
    seq = sorted((out / "shards_seq").glob("*/*/*.tar"))
    plan_file = out / "shards_plan.json"
    planned = len(json.loads(plan_file.read_text())) if plan_file.exists() else 0
    manifest = out / "manifest.json"
    lines.append(f"export:   {len(grid) + len(seq)}/{planned} shards ({len(grid)} grid, {len(seq)} sequence)"
                 + (", manifest written" if manifest.exists() else ", no manifest"))
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
