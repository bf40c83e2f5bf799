"""A static HTML contact sheet of exported samples: N per task, grid PNGs, instructions, target marked.

Reads the grid shard set through the reader the trainer uses (core/sample_reader.py: the tar
walk and the schema check), so the preview shows the written bytes, not a re-rendering. Output:
`<out>/preview/index.html` and `<out>/preview/img/<key>.png` (the grid with a red frame around the target cell). Self-contained: no scripts, no network.
Personalization episodes (`<out>/episodes/`, pipelines/episode_shards.py) get a section per split:
each concept's references under its label, the query, the question and the answer.

Shards are data, so nothing from them is trusted: a sample key becomes a file name only when
it is a plain WebDataset key (letters, digits, `_` and `-`: vicl writes `train_000000042`)
and the file lands inside `preview/img/`; any other key (an absolute member name, `../x`,
a separator), a repeated key, a member that is not a regular file, a record of another schema
version or a sample that cannot be rendered is skipped and listed in the page's "skipped" table.
Every value written into the page, text or attribute, is HTML-escaped.
"""

from __future__ import annotations

import html
import io
import json
import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from core.sample_reader import SchemaError, parse_sample, walk_shards
from core.sample_schema import GRID_FIELD
from pipelines.store import write_bytes

log = logging.getLogger(__name__)

_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,199}")


def key_problem(key: str, folder: Path) -> str | None:
    """Why `key` cannot name `<folder>/<key>.png`, or None when it is a plain key inside it."""
    if not _SAFE_KEY.fullmatch(key):
        return "unsafe sample key (only letters, digits, _ and - make a file name)"
    target = (folder / f"{key}.png").resolve()
    if target.parent != folder.resolve():
        return "sample key points outside the preview folder"
    return None


def iter_shard_samples(tars: list[Path], skipped: list[tuple[str, str]] | None = None):
    """(key, {field: bytes}) of every sample of the given tars, in file then member order
    (core.sample_reader.walk_shards; a repeated key comes out again, as its own sample).

    Members that are not regular files (links, folders, devices) or have no field are left out,
    each noted in `skipped` as (member name, reason) when a list is given.
    """
    for raw in walk_shards(tars, _noting(skipped)):
        yield raw.key, raw.fields


def _noting(skipped: list[tuple[str, str]] | None):
    """An on_skip for walk_shards that lists each left-out member in `skipped`."""
    return (lambda name, why: skipped.append((name, why))) if skipped is not None else None


def mark_target(grid_png: bytes, box: list[int], width: int = 3) -> bytes:
    grid = np.array(Image.open(io.BytesIO(grid_png)).convert("RGB"))
    x0, y0, x1, y1 = (int(v) for v in box)
    red = np.array([255, 0, 0], np.uint8)
    grid[y0:y0 + width, x0:x1] = red
    grid[y1 - width:y1, x0:x1] = red
    grid[y0:y1, x0:x0 + width] = red
    grid[y0:y1, x1 - width:x1] = red
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, "PNG")
    return buf.getvalue()


def pick_samples(out: Path, per_task: int,
                 skipped: list[tuple[str, str]] | None = None) -> dict[str, list[tuple[str, dict, bytes]]]:
    """task -> up to per_task (key, record, grid png), train split first, keys in order.

    Samples without a readable record of the supported schema version, or without a grid, are
    skipped (noted in `skipped`).
    """
    skipped = [] if skipped is None else skipped
    chosen: dict[str, list] = defaultdict(list)
    splits = sorted((p for p in (out / "shards").glob("*") if p.is_dir()),  # glob: no shards (episodes only)
                    key=lambda p: (p.name != "train", p.name))
    for split in splits:
        for raw in walk_shards(sorted(split.glob("*.tar")), _noting(skipped)):
            key = raw.key
            try:
                sample = parse_sample(raw)  # the schema check every reader makes
                record = dict(sample.record)
                task = str(record["task"])
                grid = sample.images[GRID_FIELD]
            except SchemaError as e:
                skipped.append((key, e.reason))
                continue
            except (KeyError, TypeError, ValueError) as e:
                skipped.append((key, f"no readable record and grid ({type(e).__name__})"))
                continue
            if len(chosen[task]) < per_task:
                chosen[task].append((key, record, grid))
    return dict(sorted(chosen.items()))


def _e(value) -> str:
    """HTML-escaped text of any value (quotes too, so it is safe inside an attribute)."""
    return html.escape(str(value), quote=True)


def _figure(key: str, record: dict, png: bytes, img_dir: Path) -> str:
    target = next(c for c in record["cells"] if c["is_target"])
    write_bytes(mark_target(png, target["box"]), img_dir / f"{key}.png")
    text = (record.get("instruction") or {}).get("text") or "(instruction dropped)"
    return (f'<figure><img src="img/{_e(key)}.png" alt="{_e(key)}">'
            f"<figcaption><b>{_e(key)}</b> {_e(record['rows'])}x{_e(record['cols'])}, "
            f"target r{_e(target['row'])}c{_e(target['col'])} ({_e(target['node'])})<br>"
            f"{_e(text)}</figcaption></figure>")


def require_shards(out: Path) -> None:
    """Stop (StageOrderError: one line, exit 2) when there is nothing to preview: no grid shard and
    no episode shard under `out`, as before any export; a page of nothing would look like success."""
    from pipelines.stage import StageOrderError

    if not any(out.glob("shards/*/*.tar")) and not any(out.glob("episodes/*/*.tar")):
        raise StageOrderError(f"{out / 'shards'} holds no shards: run `vicl export` first")


def write_preview(out: str | Path, per_task: int = 2) -> Path:
    out = Path(out)
    require_shards(out)
    root = out / "preview"
    img_dir = root / "img"
    skipped: list[tuple[str, str]] = []
    written: set[str] = set()
    sections = []
    for task, items in pick_samples(out, per_task, skipped).items():
        figures = []
        for key, record, png in items:
            problem = key_problem(key, img_dir) or ("repeated sample key" if key in written else None)
            if problem is None:
                try:
                    figures.append(_figure(key, record, png, img_dir))
                    written.add(key)
                    continue
                except (KeyError, TypeError, ValueError, StopIteration, OSError) as e:
                    problem = f"cannot render the sample ({type(e).__name__})"
            skipped.append((key, problem))
        if not figures:
            continue
        first = items[0][1]
        axes = first.get("axes", {}) if isinstance(first.get("axes"), dict) else {}
        columns = first.get("columns", [])
        sections.append(f"<section><h2>{_e(task)}</h2><p>family {_e(first.get('family', ''))}, "
                        f"columns {_e(' | '.join(map(str, columns)) if isinstance(columns, list) else columns)}, "
                        f"axes {_e(axes.get('semantic', ''))} / {_e(axes.get('locality', ''))}"
                        f"</p>{''.join(figures)}</section>")
    episodes = episode_sections(out, img_dir, per_task, skipped, written)  # issue 14: personalization episodes
    for key, reason in skipped:
        log.warning("preview: skipped %r: %s", key, reason)
    warning_rows = "".join(f"<tr><td>{_e(key)}</td><td>{_e(reason)}</td></tr>" for key, reason in skipped)
    warnings_table = (f"<section class='skipped'><h2>skipped: {len(skipped)}</h2><table>"
                      f"<tr><th>sample key / member</th><th>why</th></tr>{warning_rows}</table></section>"
                      if skipped else "")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vicl preview</title><style>"
            "body{font-family:sans-serif;margin:1em}figure{display:inline-block;vertical-align:top;"
            "margin:.5em;max-width:420px}img{max-width:400px;border:1px solid #ccc}"
            "figcaption{font-size:12px}.skipped td{font-family:monospace}</style></head><body>"
            f"<h1>vicl preview: {len(sections)} tasks, {per_task} samples each</h1>{warnings_table}"
            f"{''.join(sections)}{''.join(episodes)}</body></html>")
    write_bytes(page.encode(), root / "index.html")
    return root / "index.html"


# --- issue 14: personalization episodes (pipelines/episode_shards.py) ------------------------------
_IMAGE_FIELD = re.compile(r"(c[0-9]{1,3}_r[0-9]{1,3}|query_[0-9]{1,3})\.(jpg|png|webp)")


def episode_sections(out: Path, img_dir: Path, n: int, skipped: list, written: set) -> list[str]:
    """One section per split with up to n episodes: each concept's references under its label and
    name, the query, and the question and answer; the images as stored in the shards."""
    sections = []
    for split_dir in sorted((p for p in (out / "episodes").glob("*") if p.is_dir()),
                            key=lambda p: (p.name != "train", p.name)):
        figures = []
        for key, fields in iter_shard_samples(sorted(split_dir.glob("*.tar")), skipped):
            if len(figures) >= n:
                break
            problem = key_problem(key, img_dir) or ("repeated sample key" if key in written else None)
            try:
                record = json.loads(fields["json"]) if problem is None else None
            except (KeyError, ValueError) as e:
                problem = f"no readable episode record ({type(e).__name__})"
            if problem is None:
                try:
                    figures.append(_episode_figure(key, record, fields, img_dir))
                    written.add(key)
                    continue
                except (KeyError, TypeError, ValueError, OSError) as e:
                    problem = f"cannot render the episode ({type(e).__name__})"
            skipped.append((key, problem))
        if figures:
            sections.append(f"<section><h2>episodes: {_e(split_dir.name)}</h2>{''.join(figures)}</section>")
    return sections


def _episode_figure(key: str, record: dict, fields: dict, img_dir: Path) -> str:
    def image(field: str) -> str:
        if not _IMAGE_FIELD.fullmatch(field) or field not in fields:
            raise ValueError(f"no image field {field!r}")
        write_bytes(fields[field], img_dir / f"{key}_{field}")
        return f'<img src="img/{_e(key)}_{_e(field)}" alt="{_e(field)}" style="max-width:120px">'

    concepts = "".join(f"<div style='display:inline-block;margin:0 .5em'>{''.join(image(f) for f in c['images'])}"
                       f"<br>{_e(c['label'])} {_e(c.get('name', ''))}</div>" for c in record["concepts"])
    query = "".join(image(f) for f in record["query"]["images"])
    return (f"<figure style='max-width:none'><div>{concepts}<div style='display:inline-block;margin-left:1em'>"
            f"{query}<br>query</div></div><figcaption><b>{_e(key)}</b> K={_e(record['k'])}, M={_e(record['m'])}"
            f"<br>Q: {_e(record['question'])}<br>A: {_e(record['answer'])}</figcaption></figure>")
# --- end issue 14 ---------------------------------------------------------------------------------


def cmd_preview(params, n: int | None = None) -> int:
    """`vicl preview [--n N]`: contact sheet of the grid shards under paths.out."""

    per_task = n if n is not None else params.export.preview_per_task
    path = write_preview(params.paths.out, max(1, per_task))
    print(f"preview: {path}")
    return 0
