"""`vicl report`: what the dataset holds, as numbers (report.json) and plots (report.html).

Counts per task (per split), per node type, per VisRel axis cell, per meta-task, mined cluster
sizes (when the mine stage ran), failures per reason, and the leakage report; the task mix per
family and origin and the edit quadruplets with their instructions (pipelines/report_edits.py). Plots are
matplotlib PNGs (Agg backend) next to the page: `<out>/report/`.

The quality section (from `<out>/quality.parquet`): outputs held back by the quality gates per
annotator and reason, a gallery of a few of them per reason (thumbnails under
`<out>/report/quality/`, so a user can see the gate is right), and for each task the share of
its candidate images (images holding every node of its path) that the gates removed.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.node_types import LOCALITY_LEVELS, SEMANTIC_LEVELS
from pipelines.report_edits import collect_edits, edits_html
from pipelines.report_judges import collect_judges, judges_html
from pipelines.store import NodeStore, write_bytes, write_json


def read_samples(store: NodeStore) -> list[dict]:
    return pq.read_table(store.samples_path).to_pylist() if store.samples_path.exists() else []


def collect(params, store: NodeStore, samples: list[dict]) -> dict:
    from pipelines.catalog import Catalog

    out = Path(params.paths.out)
    per_task: dict[str, Counter] = defaultdict(Counter)
    axes = {s: dict.fromkeys(LOCALITY_LEVELS, 0) for s in SEMANTIC_LEVELS}
    for s in samples:
        per_task[s["task"]][s["split"]] += 1
        if s.get("semantic") in axes and s.get("locality") in LOCALITY_LEVELS:
            axes[s["semantic"]][s["locality"]] += 1
    index = Catalog.load(store).node_index()
    failures = pq.read_table(out / "failures.parquet").to_pylist() if (out / "failures.parquet").exists() \
        else store.failures().to_pylist()
    clusters: dict[str, int] = {}
    quads = store.quadruplets_path
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
        "per_node_type": {n: int(index.has(n).sum()) for n in index.nodes()},
        "per_axis_cell": axes,
        "mined_cluster_sizes": clusters,
        "failures_per_reason": dict(sorted(Counter(f"{f['stage']}/{f['reason']}" for f in failures).items())),
        "leakage": json.loads(leakage_path.read_text()) if leakage_path.exists() else None,
        "samples_per_cell_size": _manifest_counts(out).get("samples_per_cell_size", {}),
    }


def _manifest_counts(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text()).get("counts", {}) if path.exists() else {}


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
                                ("clusters.png", data["mined_cluster_sizes"], "mined quadruplets per cluster"),
                                ("cells.png", data.get("samples_per_cell_size", {}),
                                 "grid samples per cell size (aspect bucket, width x height)"),
                                ("quality.png", {f"{a}/{r}": n for a, c in data.get("quality", {}).get(
                                    "per_annotator_reason", {}).items() for r, n in c.items()},
                                 "held back by the quality gates (annotator/reason)")):
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
    samples = read_samples(store)  # once, for the counts and the edit section
    data = collect(params, store, samples)
    data["quality"] = collect_quality(params, store, root)
    data["edits"] = collect_edits(store, root, samples)
    data["judges"] = collect_judges(params, store, root)  # score histograms, thresholds marked
    write_json(data, root / "report.json")
    images = plot(data, root)
    leak = data["leakage"] or {}
    rows = "".join(f"<tr><td>{html.escape(t)}</td><td>{c.get('train', 0)}</td><td>{c.get('eval', 0)}</td>"
                   f"<td>{c.get('eval_unseen', 0)}</td></tr>" for t, c in data["per_task"].items())
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vicl report</title><style>"
            "body{font-family:sans-serif;margin:1em}td,th{padding:2px 8px;font-size:12px}"
            ".gallery{display:flex;flex-wrap:wrap}figure{margin:4px}figcaption{font-size:10px}"
            "pre{font-size:9px;max-width:200px;white-space:pre-wrap}</style></head><body>"
            f"<h1>vicl report</h1><p>{data['samples']} samples; per split "
            f"{html.escape(json.dumps(data['per_split']))}; leakage: "
            f"{leak.get('eval_samples_with_near_duplicate_in_train', 'n/a')} eval samples with a near-duplicate "
            f"in train, {leak.get('eval_samples_sharing_an_image_with_train', 'n/a')} sharing an image</p>"
            + "".join(f'<img src="{name}" alt="{name}"><br>' for name in images)
            + "<table><tr><th>task</th><th>train</th><th>eval</th><th>eval_unseen</th></tr>"
            + rows + "</table>" + edits_html(data["edits"]) + judges_html(data["judges"])
            + quality_html(data["quality"]) + "</body></html>")
    write_bytes(page.encode(), root / "report.html")
    return root / "report.html"


def cmd_report(params) -> int:
    """`vicl report`: counts and plots of the exported dataset under paths.out/report."""
    path = write_report(params, NodeStore(params.paths.store))
    print(f"report: {path}")
    return 0


# --- quality gates ------------------------------------------------------------------------------
# From `<out>/quality.parquet` (written by the export stage: one row per held-back node, columns
# annotator, node_type, image_id, reason, part - the row's Parquet part relative to the store root).

QUALITY_FILE = "quality.parquet"
GALLERY_PER_REASON = 6
GALLERY_SIDE = 128  # longer side of a gallery thumbnail


def read_quality(out: Path) -> list[dict]:
    """The held-back rows, sorted (annotator, reason, node type, image id); [] before any export."""
    path = Path(out) / QUALITY_FILE
    if not path.exists():
        return []
    rows = pq.read_table(path, columns=["annotator", "node_type", "image_id", "reason", "part"]).to_pylist()
    return sorted(rows, key=lambda r: (r["annotator"], r["reason"], r["node_type"], r["image_id"]))


def quality_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """annotator -> reason -> held-back nodes."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[r["annotator"]][r["reason"]] += 1
    return {a: dict(sorted(c.items())) for a, c in sorted(counts.items())}


def gallery_picks(rows: list[dict], per_reason: int = GALLERY_PER_REASON) -> dict[str, list[dict]]:
    """Up to `per_reason` rows of each reason, taken round-robin over (annotator, node type) (so one
    prolific annotator or node does not fill a reason's gallery), each queue in image id order."""
    by_reason: dict[str, dict[tuple[str, str], list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_reason[r["reason"]][(r["annotator"], r["node_type"])].append(r)
    picks = {}
    for reason, per_annotator in sorted(by_reason.items()):
        queues = [list(v) for _, v in sorted(per_annotator.items())]
        chosen: list[dict] = []
        while len(chosen) < per_reason and any(queues):
            for q in queues:
                if q and len(chosen) < per_reason:
                    chosen.append(q.pop(0))
        picks[reason] = chosen
    return picks


def _read_node(store_root: Path, row: dict) -> dict | None:
    """data, meta and format of one held-back row, read from its part."""
    table = pq.read_table(Path(store_root) / row["part"], columns=["image_id", "node_type", "data", "meta"],
                          filters=[("image_id", "=", row["image_id"]), ("node_type", "=", row["node_type"])])
    return table.to_pylist()[0] if table.num_rows else None


def _thumbnail(data: bytes, node_type: str) -> bytes:
    """A small PNG of a held-back map, shrunk by its node type's resample kind (lines stay visible)."""
    from core.map_resize import resize_map
    from core.images import decode_rgb, encode_png
    from core.node_types import resample_kind

    rgb = decode_rgb(data)
    h, w = rgb.shape[:2]
    k = min(1.0, GALLERY_SIDE / max(h, w))
    kind = resample_kind(node_type)
    small = resize_map(rgb, max(1, round(h * k)), max(1, round(w * k)), kind)
    return encode_png(small, 6)


def quality_gallery(rows: list[dict], store_root: Path, root: Path,
                    per_reason: int = GALLERY_PER_REASON) -> dict[str, list[dict]]:
    """Write thumbnails of a few held-back outputs per reason under `root/quality/`; return, per
    reason, {annotator, node_type, image_id, file (relative to root) or meta (for metadata-only nodes)}."""
    gallery: dict[str, list[dict]] = {}
    for reason, picks in gallery_picks(rows, per_reason).items():
        entries = []
        for k, r in enumerate(picks):
            entry = {"annotator": r["annotator"], "node_type": r["node_type"], "image_id": r["image_id"]}
            node = _read_node(store_root, r)
            if node is None:
                entry["missing"] = True
            elif node.get("data"):
                name = f"quality/{reason}-{k:02d}.png"
                write_bytes(_thumbnail(node["data"], r["node_type"]), root / name)
                entry["file"] = name
            else:
                entry["meta"] = (node.get("meta") or "")[:300]
            entries.append(entry)
        gallery[reason] = entries
    return gallery


def task_losses(tasks, usable, held_back: dict[str, list[str]], online: set[str] = frozenset()) -> dict[str, dict]:
    """Per task: images holding every node of its path before the gates (usable or held back) and
    after them (usable only), and the share lost. Online nodes exist wherever the image does.
    `usable`: the catalog's NodeIndex (bool masks, no per-id objects), or {node: ids} (small cases)."""
    from pipelines.catalog import NodeIndex

    if not isinstance(usable, NodeIndex):
        ids = sorted(set().union(*usable.values()) if usable else ())
        pos = {i: k for k, i in enumerate(ids)}
        masks = {}
        for node, members in usable.items():
            masks[node] = np.zeros(len(ids), bool)
            masks[node][[pos[i] for i in members]] = True
        usable = NodeIndex(pa.array(ids, pa.string()), pa.array([""] * len(ids), pa.string()), masks)
    held_masks = {}
    for node, members in held_back.items():
        pos = usable.positions(sorted(members))
        held_masks[node] = np.zeros(len(usable), bool)
        held_masks[node][pos[pos >= 0]] = True

    def mask_of(node: str, with_held: bool) -> np.ndarray:
        node = "image" if node in online else node
        mask = usable.has(node)
        return mask | held_masks.get(node, np.zeros(len(usable), bool)) if with_held else mask

    out = {}
    for task in sorted(tasks, key=lambda t: t.name):
        before = np.logical_and.reduce([mask_of(n, True) for n in task.path]) if task.path else np.zeros(0, bool)
        after = np.logical_and.reduce([mask_of(n, False) for n in task.path]) if task.path else np.zeros(0, bool)
        b, a = int(before.sum()), int(after.sum())
        out[task.name] = {"candidates_before": b, "candidates_after": a,
                          "lost_share": round(1 - a / b, 4) if b else None}
    return out


def quality_section(rows: list[dict], store_root: Path, root: Path, tasks, usable,
                    online: set[str] = frozenset()) -> dict:
    """The report's quality section: counts, gallery (thumbnails written under root), task losses."""
    held: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        held[r["node_type"]].append(r["image_id"])
    return {"held_back": len(rows), "per_annotator_reason": quality_counts(rows),
            "per_reason": dict(sorted(Counter(r["reason"] for r in rows).items())),
            "gallery": quality_gallery(rows, store_root, root),
            "task_losses": task_losses(tasks, usable, held, online)}


def collect_quality(params, store: NodeStore, root: Path) -> dict:
    """The quality section of a finished build: held-back rows from paths.out, usable nodes from the
    catalog's node index (which leaves held-back rows out), tasks as the sample stage enumerates them."""
    from pipelines.catalog import Catalog
    from pipelines.tasks import configured_tasks

    rows = read_quality(Path(params.paths.out))
    cat = Catalog.load(store)
    usable = cat.node_index()
    online = set(cat.online)
    present = sorted(set(usable.nodes()) | {r["node_type"] for r in rows} | online)
    return quality_section(rows, store.root, root, configured_tasks(params, nodes=present), usable, online)


def quality_html(section: dict) -> str:
    """HTML of the quality section (counts table, gallery per reason, tasks that lose candidates)."""
    esc = html.escape
    parts = [f"<h2>Quality gates</h2><p>{section['held_back']} outputs held back (never sampled).</p>"]
    reasons = sorted(section["per_reason"])
    if reasons:
        head = "".join(f"<th>{esc(r)}</th>" for r in reasons)
        body = "".join(f"<tr><td>{esc(a)}</td>" + "".join(f"<td>{c.get(r, 0)}</td>" for r in reasons) + "</tr>"
                       for a, c in section["per_annotator_reason"].items())
        parts.append(f"<table><tr><th>annotator</th>{head}</tr>{body}</table>")
    for reason, entries in section["gallery"].items():
        cells = []
        for e in entries:
            label = esc(f"{e['annotator']} / {e['node_type']} / {e['image_id'][:12]}")
            if "file" in e:
                cells.append(f'<figure><img src="{esc(e["file"])}" alt="{label}"><figcaption>{label}'
                             "</figcaption></figure>")
            else:
                cells.append(f"<figure><pre>{esc(e.get('meta', '(row not found)'))}</pre>"
                             f"<figcaption>{label}</figcaption></figure>")
        parts.append(f"<h3>{esc(reason)}</h3><div class='gallery'>{''.join(cells)}</div>")
    lossy = {t: v for t, v in section["task_losses"].items() if v["lost_share"]}
    if lossy:
        rows = "".join(f"<tr><td>{esc(t)}</td><td>{v['candidates_before']}</td><td>{v['candidates_after']}</td>"
                       f"<td>{v['lost_share']:.1%}</td></tr>"
                       for t, v in sorted(lossy.items(), key=lambda kv: (-kv[1]["lost_share"], kv[0])))
        parts.append("<h3>Candidate images each task loses to the gates</h3><table><tr><th>task</th>"
                     f"<th>before</th><th>after</th><th>lost</th></tr>{rows}</table>")
    return "".join(parts)
