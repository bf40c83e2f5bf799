"""A static HTML contact sheet of exported samples: N per task, grid PNGs, instructions, target marked.

Reads the grid shard set itself (what a trainer reads), so the preview shows the written
bytes, not a re-rendering. Output: `<out>/preview/index.html` and `<out>/preview/img/<key>.png`
(the grid with a red frame around the target cell). Self-contained: no scripts, no network.
"""

from __future__ import annotations

import html
import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.store import write_bytes


def iter_shard_samples(tars: list[Path]):
    """(key, {field: bytes}) of every sample of the given tars, in file then member order."""
    for path in tars:
        current, fields = None, {}
        with tarfile.open(path) as tf:
            for member in tf:
                key, _, field = member.name.partition(".")
                if key != current and current is not None:
                    yield current, fields
                    fields = {}
                current = key
                fields[field] = tf.extractfile(member).read()
        if current is not None:
            yield current, fields


def mark_target(grid_png: bytes, box: list[int], width: int = 3) -> bytes:
    grid = np.array(Image.open(io.BytesIO(grid_png)).convert("RGB"))
    x0, y0, x1, y1 = box
    red = np.array([255, 0, 0], np.uint8)
    grid[y0:y0 + width, x0:x1] = red
    grid[y1 - width:y1, x0:x1] = red
    grid[y0:y1, x0:x0 + width] = red
    grid[y0:y1, x1 - width:x1] = red
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, "PNG")
    return buf.getvalue()


def pick_samples(out: Path, per_task: int) -> dict[str, list[tuple[str, dict, bytes]]]:
    """task -> up to per_task (key, record, grid png), train split first, keys in order."""
    chosen: dict[str, list] = defaultdict(list)
    splits = sorted((p for p in (out / "shards").iterdir() if p.is_dir()), key=lambda p: (p.name != "train", p.name))
    for split in splits:
        for key, fields in iter_shard_samples(sorted(split.glob("*.tar"))):
            record = json.loads(fields["json"])
            if len(chosen[record["task"]]) < per_task:
                chosen[record["task"]].append((key, record, fields["grid.png"]))
    return dict(sorted(chosen.items()))


def write_preview(out: str | Path, per_task: int = 2) -> Path:
    out = Path(out)
    root = out / "preview"
    sections = []
    for task, items in pick_samples(out, per_task).items():
        figures = []
        for key, record, png in items:
            target = next(c for c in record["cells"] if c["is_target"])
            write_bytes(mark_target(png, target["box"]), root / "img" / f"{key}.png")
            text = record["instruction"].get("text") or "(instruction dropped)"
            figures.append(
                f'<figure><img src="img/{key}.png" alt="{html.escape(key)}">'
                f"<figcaption><b>{html.escape(key)}</b> {record['rows']}x{record['cols']}, "
                f"target r{target['row']}c{target['col']} ({html.escape(target['node'])})<br>"
                f"{html.escape(text)}</figcaption></figure>")
        first = items[0][1]
        axes = first.get("axes", {})
        sections.append(f"<section><h2>{html.escape(task)}</h2><p>family {html.escape(first['family'])}, "
                        f"columns {html.escape(' | '.join(first['columns']))}, axes "
                        f"{html.escape(str(axes.get('semantic', '')))} / {html.escape(str(axes.get('locality', '')))}"
                        f"</p>{''.join(figures)}</section>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vicl preview</title><style>"
            "body{font-family:sans-serif;margin:1em}figure{display:inline-block;vertical-align:top;"
            "margin:.5em;max-width:420px}img{max-width:400px;border:1px solid #ccc}"
            "figcaption{font-size:12px}</style></head><body>"
            f"<h1>vicl preview: {len(sections)} tasks, {per_task} samples each</h1>{''.join(sections)}"
            "</body></html>")
    write_bytes(page.encode(), root / "index.html")
    return root / "index.html"


def cmd_preview(params, n: int | None = None) -> int:
    """`vicl preview [--n N]`: contact sheet of the grid shards under paths.out."""

    per_task = n if n is not None else params.export.preview_per_task
    path = write_preview(params.paths.out, max(1, per_task))
    print(f"preview: {path}")
    return 0
