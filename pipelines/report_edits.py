"""The report's task mix and edit quadruplets: what share each family and origin has, and the edit
quadruplets themselves (2 x 2 thumbnails with both pairs' instructions and the scores that admitted
them), so a user sees a flip paired with a flip of the other axis without opening a shard."""

from __future__ import annotations

import html
import json
from pathlib import Path


from pipelines.store import NodeStore, write_bytes

GALLERY_QUADRUPLETS = 24
THUMB_CELL = 96  # side of one cell of a quadruplet thumbnail


def pick_quadruplets(samples: list[dict], limit: int = GALLERY_QUADRUPLETS) -> list[dict]:
    """Up to `limit` `mined_edit` samples, round-robin over their sub-tasks (transform key or cluster,
    sorted), each queue in key order: every kind of edit shows, not only the most frequent one."""
    queues: dict[str, list[dict]] = {}
    for s in samples:
        if s["task"] == "mined_edit" and s.get("scores"):
            scores = json.loads(s["scores"])
            sub = scores.get("transform_key") or f"cluster {scores.get('cluster')}"
            queues.setdefault(sub, []).append({**s, "_scores": scores, "_sub": sub})
    ordered = [queues[k] for k in sorted(queues)]
    picked: list[dict] = []
    while len(picked) < limit and any(ordered):
        for q in ordered:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return picked


def _thumbnail(cells: list[bytes], nodes: list[str]) -> bytes:
    from core.images import decode_rgb, encode_png
    from core.grid import compose_grid, fit_cell
    from core.node_types import resample_kind

    fitted = [fit_cell(decode_rgb(c), (THUMB_CELL, THUMB_CELL), resample_kind(n)) for c, n in zip(cells, nodes)]
    return encode_png(compose_grid(fitted, 2, 2), 6)


def collect_edits(store: NodeStore, root: Path, samples: list[dict], limit: int = GALLERY_QUADRUPLETS) -> dict:
    """The section's data (`samples`: the samples table's rows); thumbnails are written under `root/edits/`."""
    from pipelines.catalog import Catalog

    summary_path = store.sample_inputs_path
    summary = json.loads(summary_path.read_text())["summary"] if summary_path.exists() else {}
    mined_path = store.mined_summary_path
    mined = json.loads(mined_path.read_text()) if mined_path.exists() else {}
    picks = pick_quadruplets(samples, limit)
    gallery = []
    if picks:
        cat = Catalog.load(store)
        cells = cat.read_cells([ref for s in picks for ref in zip(s["cell_nodes"], s["cell_ids"])])
        for k, s in enumerate(picks):
            refs = list(zip(s["cell_nodes"], s["cell_ids"]))
            name = f"edits/quadruplet-{k:02d}.png"
            write_bytes(_thumbnail([cells[r]["data"] for r in refs], s["cell_nodes"]), root / name)
            scores = s["_scores"]
            gallery.append({"key": s["key"], "sub_task": s["_sub"], "pairing": scores["pairing"], "file": name,
                            "instructions": scores["instructions"],
                            "scores": {k: v for k, v in scores.items() if k.startswith("cos_")}})
    keep = ("pairs", "pairs_by_origin", "labelled_pairs", "transform_keys", "quadruplets", "instruction_filter_heldout")
    return {"mix": summary.get("mix", {}), "edit_pairing": summary.get("edit_pairing", {}),
            "mining": {k: mined[k] for k in keep if k in mined}, "gallery": gallery}


def edits_html(section: dict) -> str:
    esc = html.escape
    parts = ["<h2>Task mix</h2>"]
    mix = section.get("mix") or {}
    for split, counts in (mix.get("per_family") or {}).items():
        share = mix["family_share"][split]
        rows = "".join(f"<tr><td>{esc(f)}</td><td>{n}</td><td>{share[f]:.1%}</td></tr>" for f, n in counts.items())
        parts.append(f"<h3>{esc(split)}: samples per family</h3><table><tr><th>family</th><th>samples</th>"
                     f"<th>share</th></tr>{rows}</table>")
    for split, counts in (mix.get("per_origin") or {}).items():
        rows = "".join(f"<tr><td>{esc(o)}</td><td>{n}</td></tr>" for o, n in counts.items())
        parts.append(f"<h3>{esc(split)}: samples per origin</h3><table>{rows}</table>")
    parts.append("<h2>Edit quadruplets</h2>")
    pairing = section.get("edit_pairing") or {}
    if pairing:
        rows = "".join(f"<tr><td>{esc(o)}</td><td>{e['samples']}</td><td>{esc(e['pairing'])}</td><td>"
                       f"{'unknown (no labels)' if e['transform_agreement'] is None else e['transform_agreement']}"
                       "</td></tr>" for o, e in pairing.items())
        parts.append("<table><tr><th>origin</th><th>samples</th><th>pairing</th><th>pairs sharing their transform"
                     f"</th></tr>{rows}</table>")
    held = (section.get("mining") or {}).get("instruction_filter_heldout")
    if held:
        f, c = held["filter"], held["cosine_only"]
        parts.append(f"<p>Instruction filter on {held['n_pairs']} held-out instruction pairs ({held['n_different']} "
                     f"opposite or different, {held['n_same']} paraphrases; mining/instruction_pairs_heldout.yaml): "
                     f"precision {f['precision']} and recall {f['recall']} (text cosine alone: precision "
                     f"{c['precision']}, recall {c['recall']}); the conflict check caught "
                     f"{held['different_caught_by_conflict']} of the {held['different_kept_by_cosine']} different "
                     f"pairs the cosine kept and rejected {held['same_rejected_by_conflict']} paraphrases.</p>")
    cells = []
    for e in section.get("gallery", []):
        lines = [f"{e['key']} · {e['sub_task']} · {e['pairing']}", f"exemplar: {e['instructions'][0]}",
                 f"query: {e['instructions'][1]}"] + ([json.dumps(e["scores"])] if e["scores"] else [])
        cells.append(f'<figure><img src="{esc(e["file"])}" alt="{esc(e["key"])}"><figcaption>'
                     f"{'<br>'.join(map(esc, lines))}</figcaption></figure>")
    if cells:
        parts.append("<p>Top row: the exemplar pair (source, edited); bottom row: the query pair, whose edited "
                     "image is the target.</p>"
                     f"<div class='gallery'>{''.join(cells)}</div>")
    return "".join(parts)
