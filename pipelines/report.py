"""`vicl report`: what the dataset holds, as numbers (report.json) and plots (report.html).

Counts per task (per split), per node type, per VisRel axis cell, per meta-task, mined cluster
sizes (when the mine stage ran), failures per reason, and the leakage report. Plots are
matplotlib PNGs (Agg backend) next to the page: `<out>/report/`.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.node_types import LOCALITY_LEVELS, SEMANTIC_LEVELS
from pipelines.store import NodeStore, write_bytes, write_json


def collect(params, store: NodeStore) -> dict:
    from pipelines.stages.sample import index_by_node

    out = Path(params.paths.out)
    samples = pq.read_table(store.samples_path).to_pylist() if store.samples_path.exists() else []
    per_task: dict[str, Counter] = defaultdict(Counter)
    axes = {s: dict.fromkeys(LOCALITY_LEVELS, 0) for s in SEMANTIC_LEVELS}
    for s in samples:
        per_task[s["task"]][s["split"]] += 1
        if s.get("semantic") in axes and s.get("locality") in LOCALITY_LEVELS:
            axes[s["semantic"]][s["locality"]] += 1
    index, _ = index_by_node(params, store)
    failures = pq.read_table(out / "failures.parquet").to_pylist() if (out / "failures.parquet").exists() \
        else store.failures().to_pylist()
    clusters: dict[str, int] = {}
    quads = store.root / "mined" / "quadruplets.parquet"
    if quads.exists():
        table = pq.read_table(quads)
        if "cluster" in table.column_names:
            clusters = {str(k): v for k, v in sorted(Counter(table["cluster"].to_pylist()).items())}
    leakage_path = out / "leakage.json"
    return {
        "samples": len(samples),
        "per_split": dict(sorted(Counter(s["split"] for s in samples).items())),
        "per_task": {t: dict(sorted(c.items())) for t, c in sorted(per_task.items())},
        "per_meta_task": dict(sorted(Counter(s.get("meta_task") or s["family"] for s in samples).items())),
        "per_node_type": {n: len(ids) for n, ids in sorted(index.items())},
        "per_axis_cell": axes,
        "mined_cluster_sizes": clusters,
        "failures_per_reason": dict(sorted(Counter(f"{f['stage']}/{f['reason']}" for f in failures).items())),
        "leakage": json.loads(leakage_path.read_text()) if leakage_path.exists() else None,
    }


def _bar(ax, counts: dict, title: str):
    names = list(counts)
    ax.barh(range(len(names)), [counts[n] for n in names], color="#4878a8")
    ax.set_yticks(range(len(names)), names, fontsize=6 if len(names) > 30 else 8)
    ax.invert_yaxis()
    ax.set_title(title)


def plot(data: dict, root: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []

    def save(fig, name):
        fig.tight_layout()
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80, metadata={"Software": None})  # no version stamp: stable bytes
        plt.close(fig)
        files.append(name)

    per_task_total = {t: sum(c.values()) for t, c in data["per_task"].items()}
    for name, counts, title in (("tasks.png", per_task_total, "samples per task"),
                                ("nodes.png", data["per_node_type"], "images per node type"),
                                ("meta_tasks.png", data["per_meta_task"], "samples per meta-task"),
                                ("failures.png", data["failures_per_reason"], "failures per reason"),
                                ("clusters.png", data["mined_cluster_sizes"], "mined quadruplets per cluster")):
        if counts:
            fig, ax = plt.subplots(figsize=(7, max(2.0, 0.16 * len(counts) + 1)))
            _bar(ax, counts, title)
            save(fig, name)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    grid = [[data["per_axis_cell"][s][c] for c in LOCALITY_LEVELS] for s in SEMANTIC_LEVELS]
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(3), LOCALITY_LEVELS)
    ax.set_yticks(range(3), SEMANTIC_LEVELS)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_title("samples per VisRel axis cell")
    save(fig, "axes.png")
    return files


def write_report(params, store: NodeStore) -> Path:
    root = Path(params.paths.out) / "report"
    data = collect(params, store)
    write_json(data, root / "report.json")
    images = plot(data, root)
    leak = data["leakage"] or {}
    rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{c.get('train', 0)}</td><td>{c.get('eval', 0)}</td>"
                   f"<td>{c.get('eval_unseen', 0)}</td></tr>" for t, c in data["per_task"].items())
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vicl report</title><style>"
            "body{font-family:sans-serif;margin:1em}td,th{padding:2px 8px;font-size:12px}</style></head><body>"
            f"<h1>vicl report</h1><p>{data['samples']} samples; per split "
            f"{html.escape(json.dumps(data['per_split']))}; leakage: "
            f"{leak.get('eval_samples_with_near_duplicate_in_train', 'n/a')} eval samples with a near-duplicate "
            f"in train, {leak.get('eval_samples_sharing_an_image_with_train', 'n/a')} sharing an image</p>"
            + "".join(f'<img src="{name}" alt="{name}"><br>' for name in images)
            + "<table><tr><th>task</th><th>train</th><th>eval</th><th>eval_unseen</th></tr>"
            + rows + "</table></body></html>")
    write_bytes(page.encode(), root / "report.html")
    return root / "report.html"


def cmd_report(params) -> int:
    """`vicl report`: counts and plots of the exported dataset under paths.out/report."""
    path = write_report(params, NodeStore(params.paths.store))
    print(f"report: {path}")
    return 0
