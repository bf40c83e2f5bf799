"""`vicl eval`: score predictions on an exported eval shard set, next to baselines.

Input: grid shards (`json` + `grid.png`) or sequence shards (`json` + `r<i>c<j>.png`), and
predictions for the target cell of each sample, from one of
- a folder of images named by sample key (`<key>.png|.jpg|.jpeg|.webp`, any size: resized to
  the cell), so any external model can be scored without vicl's trainer;
- a trained adapter, run through `training.infer.Predictor` (the code `vicl infer` runs),
  batched by layout, bf16 on a GPU, with optional seed selection.

Baselines in the same run: `copy_query` (B' = B), `copy_exemplar` (B' = A', the exemplar's
target) and `annotator` (the configured annotator that produces the target's node type,
run on the query's source cell: the ceiling the data allows).

Output (`out_dir`): `eval.json` (every sample's metrics; tables per split, then per task,
family and VisRel axis cell), `index.html` (tables, a plot per split, best and worst samples
per task), `predictions/<key>.png` (when an adapter made them) and a one-line summary.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

import training  # noqa: F401
from core.sample_reader import RawSample, Sample, decode_png, parse_sample, read_samples, shard_paths
from training import metrics as M

BASELINES = ("copy_query", "copy_exemplar", "annotator")
MODEL = "model"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# -- the eval set ----------------------------------------------------------------------------

@dataclass
class EvalSample:
    """One exported sample: its record and its cells (row-major, at the shard's cell size)."""

    key: str
    record: dict
    cells: list[np.ndarray]

    @property
    def cols(self) -> int:
        return int(self.record["cols"])

    @property
    def rows(self) -> int:
        return int(self.record["rows"])

    @property
    def target_index(self) -> int:
        t = self.record["target_cell"]
        return int(t["row"]) * self.cols + int(t["col"])

    @property
    def target(self) -> np.ndarray:
        return self.cells[self.target_index]

    def node(self, index: int) -> str:
        return str(_cells_sorted(self.record)[index]["node"])

    @property
    def target_node(self) -> str:
        return self.node(self.target_index)

    @property
    def split(self) -> str:
        return str(self.record.get("split", ""))

    @property
    def axes_cell(self) -> str:
        axes = self.record.get("axes") or {}
        return f"{axes.get('semantic') or '-'}/{axes.get('locality') or '-'}"

    def query_index(self) -> int:
        """B: the query-row cell nearest the target's column (the left one on a tie)."""
        r, tc = divmod(self.target_index, self.cols)
        others = sorted((c for c in range(self.cols) if c != tc), key=lambda c: (abs(c - tc), c > tc))
        return r * self.cols + others[0]

    def exemplar_indices(self) -> tuple[int, int] | None:
        """(A, A'): the last context row's cells in B's and the target's columns; None without context."""
        if self.rows < 2:
            return None
        r = self.rows - 2
        return r * self.cols + self.query_index() % self.cols, r * self.cols + self.target_index % self.cols


def _cells_sorted(record: dict) -> list[dict]:
    return sorted(record["cells"], key=lambda c: (c["row"], c["col"]))


def _decode(data: bytes) -> np.ndarray:
    return decode_png(data)  # any format PIL reads (prediction folders hold jpg and webp too)


def decode_eval_sample(raw: Sample | dict) -> EvalSample:
    """A shard sample of either layout (core.sample_reader.Sample, or a dict of bytes per field with
    `json` and `grid.png` or `r<i>c<j>.png`), its cells decoded; the record's schema is checked."""
    if not isinstance(raw, Sample):
        fields = {k: v for k, v in raw.items() if not k.startswith("__")}
        key = raw.get("__key__") or json.loads(fields.get("json", b"{}")).get("key", "")
        raw = parse_sample(RawSample(str(raw.get("__url__", "")), str(key), fields))
    return EvalSample(raw.key, dict(raw.record), raw.cells())


def shard_urls(paths: Iterable[str | Path]) -> list[str]:
    """Tar files from files, globs and folders (searched recursively), sorted and deduplicated."""
    paths = list(paths)
    try:
        return shard_paths(paths)
    except FileNotFoundError:
        raise FileNotFoundError(f"no eval shards in {list(map(str, paths))}") from None


def read_eval_set(paths: Iterable[str | Path], limit: int | None = None) -> list[EvalSample]:
    """Every sample of the shards, in key order (a sample in both layouts is read once)."""
    seen: dict[str, EvalSample] = {}
    for sample in read_samples(shard_urls(paths)):
        if sample.key not in seen:
            seen[sample.key] = decode_eval_sample(sample)
    samples = [seen[k] for k in sorted(seen)]
    return samples[:limit] if limit else samples


# -- predictions -----------------------------------------------------------------------------

class FolderPredictions:
    """Predictions of any model: `<dir>/<key>.<png|jpg|jpeg|webp>`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"predictions folder {self.folder} does not exist")

    def __call__(self, samples: list[EvalSample]) -> list[tuple[np.ndarray | None, dict]]:
        out = []
        for s in samples:
            path = next((self.folder / f"{s.key}{ext}" for ext in IMAGE_SUFFIXES
                         if (self.folder / f"{s.key}{ext}").is_file()), None)
            out.append((_decode(path.read_bytes()) if path else None, {}))
        return out


class AdapterPredictions:
    """Predictions of a trained adapter through `Predictor` (batched by layout; seed selection)."""

    def __init__(self, predictor, *, num_steps: int = 28, shift: float = 3.0, seed: int = 0, seeds: int = 1,
                 select: str = "first", probe_steps=(0, 1, 2), blocks=None, cell_size: int | None = None):
        self.predictor, self.cell_size = predictor, cell_size
        self.opts = dict(num_steps=num_steps, shift=shift, seed=seed, seeds=seeds, select=select,
                         probe_steps=tuple(probe_steps), blocks=blocks)
        self.probe_calls = 0

    def grid_sample(self, s: EvalSample):
        """The sample as the trainer reads it, with the target cell blanked (it is never seen)."""
        from training.data import GridSample, _resize, fitted_cell_hw

        hw = fitted_cell_hw(s.record, self.cell_size)
        cells = [_resize(c, hw) for c in s.cells]
        cells[s.target_index] = np.zeros_like(cells[s.target_index])
        return GridSample(s.key, s.record, cells, hw)

    def __call__(self, samples: list[EvalSample]) -> list[tuple[np.ndarray | None, dict]]:
        from training.seed_selection import generate_selected

        res = generate_selected(self.predictor, [self.grid_sample(s) for s in samples], **self.opts)
        self.probe_calls += res.probe_calls
        return [(img, {"seed": c.seed, **({"pivot_scores": c.scores} if c.scores else {})})
                for img, c in zip(res.images, res.choices)]


# -- the annotator ceiling -------------------------------------------------------------------

class AnnotatorCeiling:
    """Runs the annotator that produced the target's node type on the query row's source cell.

    Available when the node comes from a configured annotator whose inputs (its `requires`)
    are cells of the query row; weights load as in `vicl annotate` (MissingWeightsError when
    absent: never random)."""

    def __init__(self, params):
        from annotators.registry import produced_nodes

        self.params = params
        self.producers = produced_nodes(params.annotate.annotators)
        self._built: dict[str, tuple] = {}

    def _annotator(self, name: str):
        if name not in self._built:
            from annotators.runtime import build_annotator

            from training.infer import resolve_device

            ann = self.params.annotate
            spec = ann.annotators[name]
            device = str(resolve_device(ann.device))
            self._built[name] = build_annotator(name, json.dumps(spec.params), device=device,
                                                models_dir=ann.models_dir, plugins=ann.plugins)
        return self._built[name]

    def __call__(self, s: EvalSample) -> np.ndarray | None:
        from annotators.runtime import encode_output
        from core.images import decode_rgb
        from core.grid import fit_cell
        from core.node_types import resample_kind

        node = s.target_node
        name = self.producers.get(node)
        if name is None or name == "ingest":
            return None
        cls, annotator = self._annotator(name)
        r = s.target_index // s.cols
        row = {s.node(i): i for i in range(r * s.cols, (r + 1) * s.cols) if i != s.target_index}
        if not set(cls.requires) <= set(row):
            return None
        inputs = {n: s.cells[row[n]] for n in cls.requires}
        inputs.update({f"{n}.meta": {} for n in cls.requires})
        image_id = str(_cells_sorted(s.record)[row[cls.requires[0]]].get("image_id", s.key))
        out = annotator.annotate([inputs], [image_id])[0].get(node)
        if out is None or out.array is None:
            return None
        cell = decode_rgb(encode_output(out)["data"])  # the exporter's own conversion of a node
        return fit_cell(cell, s.target.shape[:2], resample_kind(node))


# -- scoring ---------------------------------------------------------------------------------

@dataclass
class EvalResult:
    rows: list[dict]
    tables: dict
    summary: str = ""
    thumbs: dict = field(default_factory=dict)  # key -> PNG bytes of [B | A' | target | prediction]
    probe_calls: int = 0


def _context(s: EvalSample) -> M.Context:
    ex = s.exemplar_indices()
    return M.Context(query=s.cells[s.query_index()], exemplar_src=s.cells[ex[0]] if ex else None,
                     exemplar_tgt=s.cells[ex[1]] if ex else None)


def baseline_predictions(s: EvalSample, which: tuple[str, ...], ceiling: AnnotatorCeiling | None) -> dict:
    out: dict[str, np.ndarray | None] = {}
    if "copy_query" in which:
        out["copy_query"] = s.cells[s.query_index()]
    if "copy_exemplar" in which:
        ex = s.exemplar_indices()
        out["copy_exemplar"] = s.cells[ex[1]] if ex else None
    if "annotator" in which:
        out["annotator"] = ceiling(s) if ceiling is not None else None
    return out


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else round(float(v), 6)) for k, v in sorted(metrics.items())}


def _thumb(cells: list[np.ndarray | None], side: int = 96) -> bytes:
    blank = np.full((side, side, 3), 235, np.uint8)  # a cell that does not exist (no exemplar, no prediction)
    tiles = [blank if c is None else M.fit_to(c, (side, side)) for c in cells]
    buf = io.BytesIO()
    Image.fromarray(np.concatenate(tiles, 1)).save(buf, format="PNG")
    return buf.getvalue()


def evaluate(samples: list[EvalSample], predict: Callable | None = None, *, params=None,
             baselines: tuple[str, ...] = BASELINES, embedder=None, perceptual=None, batch_size: int = 4,
             predictions_dir: str | Path | None = None, sheet_per_task: int = 3,
             log: Callable[[str], None] | None = None) -> EvalResult:
    """Score `predict`'s outputs (and the baselines) on every sample.

    `predict(list[EvalSample]) -> [(image or None, info)]` is called on batches of one layout.
    `params` (pipelines Params) enables the annotator ceiling; `embedder` (default: the
    weight-free colour_gradient_stats) scores edits by task vectors."""
    if embedder is None:
        from mining.embed import ColourGradientStats

        embedder = ColourGradientStats()
    ceiling = AnnotatorCeiling(params) if params is not None and "annotator" in baselines else None
    rows, thumbs = [], {}
    sheet: dict[tuple[str, str], list] = defaultdict(list)  # (split, task) -> [(rank, key)] kept for the sheet
    for batch in _layout_batches(samples, batch_size):
        preds = predict(batch) if predict is not None else [(None, {})] * len(batch)
        for s, (pred, info) in zip(batch, preds):
            if pred is not None and predictions_dir is not None and isinstance(predict, AdapterPredictions):
                Path(predictions_dir).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pred).save(Path(predictions_dir) / f"{s.key}.png")
            ctx = _context(s)
            sources = {MODEL: pred, **baseline_predictions(s, baselines, ceiling)}
            scored = {name: (_clean(M.score(s.target_node, img, s.target, context=ctx, embedder=embedder,
                                             perceptual=perceptual)) if img is not None else None)
                      for name, img in sources.items()}
            row = {"key": s.key, "split": s.split, "task": str(s.record.get("task", "")),
                   "family": str(s.record.get("family", "")), "axes": s.axes_cell, "node": s.target_node,
                   "kind": M.metric_kind(s.target_node), "metrics": scored, **info}
            if row["kind"] == "edges":  # per-threshold counts: the group tables sum them into ODS
                row["edge_counts"] = {name: M.edge_counts(M.fit_to(img, s.target.shape[:2]), s.target).tolist()
                                      for name, img in sources.items() if img is not None}
            rows.append(row)
            rank = _rank(row)
            if rank is not None:
                kept = sheet[row["split"], row["task"]]
                kept.append((rank, s.key))
                kept.sort()
                ex = s.exemplar_indices()
                thumbs[s.key] = _thumb([ctx.query, s.cells[ex[1]] if ex else None, s.target, pred])
                for _, gone in kept[sheet_per_task:-sheet_per_task]:  # keep only the best and worst few
                    thumbs.pop(gone, None)
                del kept[sheet_per_task:-sheet_per_task]
        if log:
            log(f"scored {len(rows)}/{len(samples)}")
    rows.sort(key=lambda r: r["key"])
    tables = aggregate(rows)
    return EvalResult(rows, tables, summary_line(rows, tables), thumbs,
                      getattr(predict, "probe_calls", 0))


def _rank(row: dict) -> tuple | None:
    """Sort key of a sample for the contact sheet (best first; ties by key), None without a score."""
    primary = M.PRIMARY[row["kind"]]
    value = (row["metrics"].get(MODEL) or {}).get(primary)
    if value is None:
        return None
    return (-value if M.HIGHER_IS_BETTER.get(primary, True) else value,)


def _layout_batches(samples: list[EvalSample], batch_size: int) -> Iterator[list[EvalSample]]:
    """Batches of one layout (rows, cols, cell size), in key order within a layout."""
    groups: dict[tuple, list[EvalSample]] = defaultdict(list)
    for s in samples:
        groups[(s.rows, s.cols, *s.cells[0].shape[:2])].append(s)
    for layout in sorted(groups):
        items = groups[layout]
        for i in range(0, len(items), batch_size):
            yield items[i:i + batch_size]


# -- tables ----------------------------------------------------------------------------------

def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals else None


def group_table(rows: list[dict]) -> dict:
    """{n, nodes, primary, metrics: {metric: {source: mean}}, missing: {source: count}} of a group."""
    sources = sorted({src for r in rows for src in r["metrics"]}, key=lambda x: (x != MODEL, x))
    metrics = sorted({m for r in rows for v in r["metrics"].values() if v for m in v})
    kinds = sorted({r["kind"] for r in rows})
    table = {"n": len(rows), "nodes": sorted({r["node"] for r in rows}), "kinds": kinds,
             "primary": M.PRIMARY[kinds[0]] if len(kinds) == 1 else None, "metrics": {},
             "missing": {src: sum(r["metrics"].get(src) is None for r in rows) for src in sources}}
    for m in metrics:
        table["metrics"][m] = {src: _mean([(r["metrics"].get(src) or {}).get(m) for r in rows]) for src in sources}
    if any("edge_counts" in r for r in rows):  # ODS needs the set, not a mean of per-sample values
        table["metrics"]["edge_ods"] = {}
        for src in sources:
            counts = [np.asarray(r["edge_counts"][src]) for r in rows if src in r.get("edge_counts", {})]
            table["metrics"]["edge_ods"][src] = round(M.ods(counts), 6) if counts else None
    return table


def aggregate(rows: list[dict]) -> dict:
    """Per split (seen-task `eval` apart from `eval_unseen`): overall, by task, family, axis cell."""
    out: dict = {}
    for split in sorted({r["split"] for r in rows}):
        mine = [r for r in rows if r["split"] == split]
        section = {"overall": {"n": len(mine), "tasks": len({r["task"] for r in mine})}}
        for by in ("task", "family", "axes"):
            groups: dict[str, list[dict]] = defaultdict(list)
            for r in mine:
                groups[r[by]].append(r)
            section[f"by_{by}"] = {g: group_table(groups[g]) for g in sorted(groups)}
        out[split] = section
    return out


def task_verdicts(tables: dict, split: str) -> dict[str, dict[str, bool | None]]:
    """Per task: does the model beat copy_query, and reach the annotator ceiling, on the primary metric?"""
    out = {}
    for task, t in tables[split]["by_task"].items():
        m = t["primary"]
        vals = t["metrics"].get(m, {}) if m else {}
        model, floor, ceil = vals.get(MODEL), vals.get("copy_query"), vals.get("annotator")
        out[task] = {"beats_copy_query": None if model is None or floor is None else M.better(m, model, floor),
                     "reaches_ceiling": None if model is None or ceil is None else not M.better(m, ceil, model)}
    return out


def summary_line(rows: list[dict], tables: dict) -> str:
    parts = []
    for split in tables:
        v = task_verdicts(tables, split)
        beats = [x["beats_copy_query"] for x in v.values() if x["beats_copy_query"] is not None]
        reach = [x["reaches_ceiling"] for x in v.values() if x["reaches_ceiling"] is not None]
        missing = sum(r["metrics"].get(MODEL) is None for r in rows if r["split"] == split)
        text = f"{split}: {tables[split]['overall']['n']} samples, {len(v)} tasks"
        if beats:
            text += f", model beats copy_query on {sum(beats)}/{len(beats)} tasks"
        if reach:
            text += f", reaches the annotator ceiling on {sum(reach)}/{len(reach)}"
        if missing:
            text += f", {missing} without a prediction"
        parts.append(text)
    return "vicl eval: " + "; ".join(parts)


# -- report files ----------------------------------------------------------------------------

def write_report(result: EvalResult, out_dir: str | Path, *, per_task: int = 3, meta: dict | None = None) -> tuple[Path, Path]:
    """eval.json and index.html (tables, plots, best/worst contact sheet) under `out_dir`;
    `per_task` must not exceed the `sheet_per_task` that `evaluate` kept thumbnails for."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    doc = {"summary": result.summary, "meta": meta or {}, "probe_calls": result.probe_calls,
           "tables": result.tables, "samples": result.rows}
    json_path = out / "eval.json"
    json_path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    sections = []
    for split, sec in result.tables.items():
        sections.append(f"<h2>split {html.escape(split)}: {sec['overall']['n']} samples, "
                        f"{sec['overall']['tasks']} tasks</h2>")
        sections.append(_plot(sec["by_task"], split))
        for by in ("task", "family", "axes"):
            sections.append(f"<h3>by {by}</h3>" + _table_html(sec[f"by_{by}"]))
        sections.append("<h3>best and worst samples per task (B | A' | target | prediction)</h3>")
        sections.append(_sheet_html(result, split, per_task, out / "img"))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>vicl eval</title><style>"
            "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th:first-child,td:first-child"
            "{text-align:left}figure{display:inline-block;vertical-align:top;margin:.5em}"
            "img{border:1px solid #ccc}figcaption{font-size:12px}</style></head><body>"
            f"<h1>vicl eval</h1><p>{html.escape(result.summary)}</p>{''.join(sections)}</body></html>")
    html_path = out / "index.html"
    html_path.write_text(page)
    return json_path, html_path


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def _table_html(groups: dict) -> str:
    sources = [MODEL, *BASELINES]
    head = "<tr><th>group</th><th>n</th><th>target nodes</th><th>metric</th>" + "".join(
        f"<th>{s}</th>" for s in sources) + "</tr>"
    body = []
    for g, t in groups.items():
        for m, vals in t["metrics"].items():
            star = " *" if m == t["primary"] else ""
            arrow = "↑" if M.HIGHER_IS_BETTER.get(m, True) else "↓"
            body.append(f"<tr><td>{html.escape(g)}</td><td>{t['n']}</td><td>{html.escape(', '.join(t['nodes']))}"
                        f"</td><td>{html.escape(m)} {arrow}{star}</td>"
                        + "".join(f"<td>{_fmt(vals.get(s))}</td>" for s in sources) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _plot(by_task: dict, split: str) -> str:
    """Per task, the primary metric of the model and each baseline (own y axis), as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t, v in by_task.items() if v["primary"]]
    if not tasks:
        return ""
    sources = [MODEL, *BASELINES]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.2 * len(tasks) + 0.5, 2.6), dpi=90, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = by_task[task]["primary"]
        vals = [by_task[task]["metrics"].get(metric, {}).get(src) for src in sources]
        ax.bar(range(len(sources)), [np.nan if v is None else v for v in vals], color=colours)
        ax.set_xticks(range(len(sources)))
        ax.set_xticklabels(sources, rotation=45, ha="right", fontsize=7)
        arrow = "higher" if M.HIGHER_IS_BETTER.get(metric, True) else "lower"
        ax.set_title(f"{task}\n{metric} ({arrow} is better)", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{split}: primary metric per task", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _sheet_html(result: EvalResult, split: str, per_task: int, img_dir: Path) -> str:
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in result.rows:
        if r["split"] == split and _rank(r) is not None:
            by_task[r["task"]].append(r)
    parts = []
    for task in sorted(by_task):
        ranked = sorted(by_task[task], key=lambda r: (_rank(r), r["key"]))
        primary = M.PRIMARY[ranked[0]["kind"]]
        best = ranked[:per_task]
        picks = [("best", r) for r in best] + [("worst", r) for r in ranked[::-1][:per_task] if r not in best]
        figs = []
        for label, r in picks:
            (img_dir / f"{r['key']}.png").write_bytes(result.thumbs[r["key"]])
            figs.append(f"<figure><img src='img/{r['key']}.png' alt='{html.escape(r['key'])}'><figcaption>"
                        f"{label}: {html.escape(r['key'])}, {primary} {_fmt(r['metrics'][MODEL][primary])}"
                        "</figcaption></figure>")
        parts.append(f"<h4>{html.escape(task)}</h4>{''.join(figs)}")
    return "".join(parts)


# -- entry point -----------------------------------------------------------------------------

def default_eval_shards(out: str | Path) -> list[str]:
    """The grid shards of `eval` and `eval_unseen` under paths.out."""
    out = Path(out)
    return [str(p) for p in sorted((out / "shards").glob("eval*/*.tar"))]


def run_eval(shards: list[str], *, out_dir: str | Path, params=None, adapter: str | None = None,
             predictions: str | None = None, baselines: tuple[str, ...] = BASELINES, batch_size: int = 4,
             limit: int | None = None, num_steps: int = 28, seed: int = 0, seeds: int = 1, select: str = "first",
             probe_steps=(0, 1, 2), blocks=None, device: str = "auto", dtype: str = "auto", models_dir=None,
             base=None, prompt_encoder: str = "pretrained", perceptual: str | None = None,
             log: Callable[[str], None] = print) -> EvalResult:
    """`vicl eval`: read, predict, score, write; returns the result (its summary is printed by the CLI)."""
    if adapter and predictions:
        raise ValueError("give --adapter or --predictions, not both")
    clip = None
    if perceptual == "clip":  # first, so a missing model stops the run before any sampling
        from mining.embed import OpenClipEmbedder

        clip = OpenClipEmbedder(models_dir=models_dir or (params.annotate.models_dir if params else None))
        clip.load()  # MissingWeightsError naming the repo when the CLIP weights are not on disk
    samples = read_eval_set(shards, limit)
    predict = None
    if predictions:
        predict = FolderPredictions(predictions)
    elif adapter:
        from training.infer import Predictor

        predictor = Predictor.from_adapter(adapter, base=base, models_dir=models_dir, prompt_encoder=prompt_encoder,
                                           device=device, dtype=dtype)
        predict = AdapterPredictions(predictor, num_steps=num_steps, seed=seed, seeds=seeds, select=select,
                                     probe_steps=probe_steps, blocks=blocks)
    result = evaluate(samples, predict, params=params, baselines=baselines, batch_size=batch_size,
                      perceptual=clip, predictions_dir=Path(out_dir) / "predictions", log=None)
    meta = {"shards": shard_urls(shards), "adapter": adapter, "predictions": predictions,
            "baselines": list(baselines), "seeds": seeds, "select": select, "num_steps": num_steps}
    json_path, html_path = write_report(result, out_dir, meta=meta)
    if result.probe_calls:
        log(f"seed selection ({select}, {seeds} candidates): {result.probe_calls} extra transformer calls")
    log(f"{result.summary}; json: {json_path}; html: {html_path}")
    return result
