"""The report's judges section: the distribution of every judge score over the edit pairs
(`judged/scores.parquet`), a histogram each with its `sample.judge_thresholds` entry marked, and how
many pairs the thresholds rejected (`samples/judge_rejects.parquet`), so a user picks a threshold by
looking at where the pairs lie."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipelines.store import NodeStore

BINS = 30


def collect_judges(params, store: NodeStore, root: Path) -> dict:
    """{scores: {"<judge>.<score>": stats, threshold, file}, rejected_pairs}; histograms under `root/judges/`."""
    path = store.judge_scores_path
    if not path.exists():
        return {"scores": {}, "rejected_pairs": None}
    table = pq.read_table(path, columns=["pair_id", "judge", "score", "value"])
    values: dict[str, list] = {}
    for judge, score, value in zip(table["judge"].to_pylist(), table["score"].to_pylist(), table["value"].to_pylist()):
        values.setdefault(f"{judge}.{score}", []).append(value)
    thresholds = params.sample.judge_thresholds
    section = {}
    for key in sorted(set(values) | set(thresholds)):
        known = np.asarray([v for v in values.get(key, []) if v is not None], np.float64)
        threshold = thresholds.get(key)
        entry = {"pairs": len(values.get(key, [])), "missing": len(values.get(key, [])) - len(known),
                 "threshold": threshold, "file": None}
        if len(known):
            entry.update({"min": round(float(known.min()), 4), "median": round(float(np.median(known)), 4),
                          "max": round(float(known.max()), 4)})
            if threshold is not None:
                entry["below_threshold"] = int((known < threshold).sum()) + entry["missing"]
            entry["file"] = f"judges/{key}.png"
            _histogram(known, key, threshold, root / entry["file"])
        section[key] = entry
    rejects = store.judge_rejects_path
    rejected = None
    if rejects.exists():
        rejected = len(set(pq.read_table(rejects, columns=["pair_id"])["pair_id"].to_pylist()))
    return {"scores": section, "rejected_pairs": rejected}


def _histogram(values: np.ndarray, key: str, threshold: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6))
    ax.hist(values, bins=BINS, color="#4878a8")
    if threshold is not None:
        ax.axvline(threshold, color="#c03030", linestyle="--", label=f"threshold {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_title(f"{key} ({len(values)} pairs)")
    ax.set_xlabel("score")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)


def judges_html(section: dict) -> str:
    scores = section.get("scores") or {}
    if not scores:
        return ""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{e['pairs']}</td><td>{e['missing']}</td><td>{e.get('min', '')}</td>"
        f"<td>{e.get('median', '')}</td><td>{e.get('max', '')}</td>"
        f"<td>{'' if e['threshold'] is None else e['threshold']}</td><td>{e.get('below_threshold', '')}</td></tr>"
        for k, e in scores.items())
    rejected = section.get("rejected_pairs")
    lines = [f"<h2>Judges</h2><p>Scores of the edit pairs (docs/judges.md); a dashed line marks the sample "
             f"threshold. {'' if rejected is None else f'{rejected} pairs rejected by the thresholds.'}</p>",
             "<table><tr><th>judge.score</th><th>pairs</th><th>no value</th><th>min</th><th>median</th><th>max</th>"
             f"<th>threshold</th><th>below</th></tr>{rows}</table>"]
    lines += [f'<img src="{esc(e["file"])}" alt="{esc(k)}"><br>' for k, e in scores.items() if e["file"]]
    return "".join(lines)
