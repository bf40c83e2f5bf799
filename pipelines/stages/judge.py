"""Judge: the mine stage's edit pairs -> one score table, `judged/scores.parquet`.

Every pair of known transform (`mined/labelled_pairs.parquet`) and both pairs of every mined
quadruplet (`mined/quadruplets.parquet`) is scored by each judge under `judge.judges`
(annotators/judges.py: clip_direction, clip_iqa, qwen_vl) into rows (pair_id, pair_key, judge,
judge_key, score, value). `pair_key` digests the pair's cells and instruction, `judge_key` the
judge's name, version, params and code, so a re-run scores only pairs or judges it has not scored
(incremental); rows of pairs or judges no longer there are dropped. A model judge runs in an actor
pool (pipelines/executor.py: the model loads once per actor; a chunk or two run in this process),
chunks of `judge.chunk_size` pairs each; the table is written atomically after each judge.
Thresholds are the sample stage's (`sample.judge_thresholds`, pipelines/judge_thresholds.py), so a
threshold change re-samples without re-scoring. No judges configured (the default): an empty table.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import executor
from pipelines.executor import resolve_device
from pipelines.models_cli import missing_weights_error
from pipelines.params import Params
from pipelines.stage import Stage
from pipelines.store import NodeStore, write_table

SCORES_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("pair_key", pa.string()),  # pair_key: digest of the cells and the instruction
    ("judge", pa.string()), ("judge_key", pa.string()),  # judge_key: digest of name, version, params, code
    ("score", pa.string()), ("value", pa.float64()),  # value null: the judge could not tell
])
PAIR_COLUMNS = ("pair_id", "source_id", "edited_id", "instruction", "source_node", "source_image", "edited_node",
                "edited_image")


def judged_pairs(store: NodeStore) -> list[dict]:
    """The labelled pairs and both pairs of each mined quadruplet, one row per pair id, by pair id."""
    rows = []
    if store.labelled_pairs_path.exists():
        rows += pq.read_table(store.labelled_pairs_path, columns=list(PAIR_COLUMNS)).to_pylist()
    if store.quadruplets_path.exists():
        quads = pq.read_table(store.quadruplets_path)
        for side in ("_a", "_b"):
            if f"source_node{side}" in quads.column_names:  # written by the mine stage (with its cells)
                cols = quads.select([c + side for c in PAIR_COLUMNS]).rename_columns(list(PAIR_COLUMNS))
                rows += cols.to_pylist()
    out = {}
    for r in sorted(rows, key=lambda r: r["pair_id"]):
        if r["pair_id"] not in out:
            blob = "\n".join(str(r[c]) for c in PAIR_COLUMNS[1:])
            out[r["pair_id"]] = {**r, "pair_key": hashlib.sha256(f"{r['pair_id']}\n{blob}".encode()).hexdigest()[:16]}
    return list(out.values())


def judge_key(name: str, params: dict) -> str:
    """`<name>-<12 hex>`: the judge's own key (name, version, params) and the digest of its module."""
    from annotators import judges

    cls = judges.get(name)
    model = cls.Params.model_validate(params)
    code = hashlib.sha256(Path(inspect.getsourcefile(cls)).read_bytes()).hexdigest()
    return f"{name}-{hashlib.sha256((cls.key(model) + code).encode()).hexdigest()[:12]}"


def models_dir(params: Params) -> str:
    return params.judge.models_dir or params.annotate.models_dir


class JudgeWorker:
    """One judge, built and loaded once per process (a Ray Data actor, or this process for a chunk or
    two), then called on chunks of pairs: read their cells from the store, decode, score."""

    def __init__(self, name: str, params_json: str, device: str, models_dir: str, store_root: str, batch_size: int,
                 key: str):
        from annotators import judges

        self.judge = judges.build(name, params_json, device=device, models_dir=models_dir)
        self.judge.load()  # MissingWeightsError naming the repository; never random weights
        self.store_root, self.batch_size, self.key, self._catalog = store_root, batch_size, key, None

    def score_pairs(self, pairs: list[dict]) -> list[dict]:
        from annotators.judges import EditPair
        from core.images import decode_rgb
        from pipelines.catalog import Catalog

        if self._catalog is None:
            self._catalog = Catalog.load(NodeStore(self.store_root))
        refs = [(p[f"{r}_node"], p[f"{r}_image"]) for p in pairs for r in ("source", "edited")]
        cells = self._catalog.read_cells(refs)
        # a cell gone since mining is not scored (the sampler skips such a pair too)
        readable = [p for p in pairs if (p["source_node"], p["source_image"]) in cells
                    and (p["edited_node"], p["edited_image"]) in cells]
        rows = []
        for k in range(0, len(readable), self.batch_size):
            batch = readable[k:k + self.batch_size]
            items = [EditPair(decode_rgb(cells[(p["source_node"], p["source_image"])]["data"]),
                              decode_rgb(cells[(p["edited_node"], p["edited_image"])]["data"]), p["instruction"])
                     for p in batch]
            for p, scores in zip(batch, self.judge.score(items)):
                for name in self.judge.scores:
                    value = scores.get(name)
                    value = float(value) if value is not None and math.isfinite(float(value)) else None
                    rows.append({"pair_id": p["pair_id"], "pair_key": p["pair_key"], "judge": self.judge.name,
                                 "judge_key": self.key, "score": name, "value": value})
        return rows

    def __call__(self, batch: dict) -> dict:
        """Ray Data: a batch of chunks (JSON lists of pairs) -> their score rows (JSON)."""
        return {"rows": [json.dumps(self.score_pairs(json.loads(c))) for c in batch["pairs"]]}


def score_with(name: str, params: Params, store: NodeStore, pairs: list[dict], key: str, progress=None) -> list[dict]:
    """Score rows of `pairs` by one judge: here for a chunk or two, else in an actor pool."""
    from annotators import judges

    spec, res = params.judge.judges[name], judges.get(name).resources
    num_gpus = spec.num_gpus if spec.num_gpus is not None else res.num_gpus
    kwargs = {"name": name, "params_json": json.dumps(spec.params), "key": key,
              "device": resolve_device(params.judge.device, num_gpus), "models_dir": models_dir(params),
              "store_root": str(store.root), "batch_size": spec.batch_size or res.batch_size}
    size = params.judge.chunk_size
    chunks = [pairs[k:k + size] for k in range(0, len(pairs), size)]
    if executor.inline(len(chunks)):
        worker = JudgeWorker(**kwargs)
        results = (worker.score_pairs(c) for c in chunks)
    else:
        actors, num_cpus = executor.pool_size(spec.concurrency or res.concurrency,
                                              spec.num_cpus or res.num_cpus, num_gpus > 0)
        ds = executor.actor_pool([{"pairs": json.dumps(c)} for c in chunks], JudgeWorker, size=actors,
                                 num_cpus=num_cpus, num_gpus=num_gpus, batch_size=1, constructor_kwargs=kwargs)
        results = (json.loads(r["rows"]) for r in ds.iter_rows())
    if progress:
        results = progress(results, total=len(chunks), desc=f"judge {name}")
    return [row for rows in results for row in rows]


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("pair_id", "ascending"), ("judge", "ascending"), ("score", "ascending")])


def run_judge(params: Params, store: NodeStore, progress=None, log=print) -> dict:
    path = store.judge_scores_path
    pairs = judged_pairs(store)
    keys = {name: judge_key(name, spec.params) for name, spec in sorted(params.judge.judges.items())}
    live = {p["pair_key"] for p in pairs}
    old = pq.read_table(path) if path.exists() else SCORES_SCHEMA.empty_table()
    kept = old.filter(pa.compute.and_(pa.compute.is_in(old["judge_key"], pa.array(sorted(keys.values()), pa.string())),
                                      pa.compute.is_in(old["pair_key"], pa.array(sorted(live), pa.string()))))
    done = set(zip(kept["judge_key"].to_pylist(), kept["pair_key"].to_pylist()))
    summary = {"pairs": len(pairs), "judges": {}}
    table, changed = kept, kept.num_rows != old.num_rows or not path.exists()
    for name, key in keys.items():
        todo = [p for p in pairs if (key, p["pair_key"]) not in done]
        rows = score_with(name, params, store, todo, key, progress) if todo else []
        scored = len({r["pair_key"] for r in rows})
        summary["judges"][name] = {"key": key, "scored": scored, "reused": len(pairs) - len(todo),
                                   "unreadable": len(todo) - scored}
        if rows:
            table = pa.concat_tables([table, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA)])
            write_table(_sorted(table), path)  # after each judge: an interrupted run keeps finished judges
            changed = False
    if changed:
        write_table(_sorted(table), path)
    if not keys:
        summary["judges"] = "none configured"
    return summary


def judge_status(params: Params, store: NodeStore) -> list[str]:
    if not params.judge.judges:
        return ["judge:    no judges configured"]
    path = store.judge_scores_path
    if not path.exists():
        return ["judge:    not run"]
    t = pq.read_table(path, columns=["judge", "pair_key"])
    counts = {j: len(set(k for jj, k in zip(t["judge"].to_pylist(), t["pair_key"].to_pylist()) if jj == j))
              for j in sorted(params.judge.judges)}
    return [f"judge:    {name} {n} pairs scored" for name, n in counts.items()]


def check_judge_weights(params: Params, source: str) -> None:
    """WeightsMissing listing every weight a configured judge would not find, before any work."""
    from annotators import judges

    missing = []
    for name, spec in sorted(params.judge.judges.items()):
        cls = judges.get(name)
        judge = cls(cls.Params.model_validate(spec.params), models_dir=models_dir(params))
        missing += [(name, e) for e in judge.missing_weights()]
    if missing:
        raise missing_weights_error(missing, "judge", "judge.models_dir", models_dir(params))


STAGE = Stage(
    name="judge", help="score every edit pair with the configured judges (CLIP direction, CLIP-IQA, a VLM)",
    run=lambda params, store, progress=None: run_judge(params, store, progress), check=check_judge_weights,
    status=judge_status, reads=("{store}/images", "{store}/nodes", "{store}/mined"), writes=("{store}/judged",),
    persist=("{store}/judged",), done="store.judge_scores_path", params=("judge",),
    code=("annotators/judges.py", "pipelines/stages/judge.py", "pipelines/judge_params.py"))
