"""The judges' thresholds, applied by the sample stage (`sample.judge_thresholds`) to the scores the
judge stage stored (`judged/scores.parquet`): an edit pair below a threshold, or without a value
(a VLM answer the parser could not read), is used in no quadruplet, and a quadruplet with such a
pair is dropped. Every failed (pair, judge score) is a row of `samples/judge_rejects.parquet`
(pair_id, judge, score, value, threshold), written with the sample stage's set: users build
preference data from it. Scores are never recomputed here: a threshold change only re-samples."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.judge_params import threshold_errors, threshold_key
from pipelines.params import ParamsError
from pipelines.stage import StageOrderError
from pipelines.store import NodeStore

REJECTS_SCHEMA = pa.schema([("pair_id", pa.string()), ("judge", pa.string()), ("score", pa.string()),
                            ("value", pa.float64()), ("threshold", pa.float64())])


def scores_digest(params, store: NodeStore) -> str:
    """What the samples depend on in the scores table: nothing without thresholds (a judge run then
    never re-samples), else the table's bytes."""
    path = store.judge_scores_path
    if not params.sample.judge_thresholds:
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "no scores"


def _scores(store: NodeStore, judges: set[str]) -> tuple[dict[tuple[str, str, str], float | None], dict[str, set]]:
    """({(pair id, judge, score): value}, {judge: pair ids it scored}) of the named judges."""
    path = store.judge_scores_path
    if not path.exists():
        return {}, {j: set() for j in judges}
    t = pq.read_table(path, columns=["pair_id", "judge", "score", "value"], filters=[("judge", "in", sorted(judges))])
    values, scored = {}, {j: set() for j in judges}
    for pair, judge, score, value in zip(*(t[c].to_pylist() for c in ("pair_id", "judge", "score", "value"))):
        values[(pair, judge, score)] = value
        scored[judge].add(pair)
    return values, scored


def apply_judge_thresholds(params, store: NodeStore, mined: list[dict], labelled: list[dict]
                           ) -> tuple[list[dict], list[dict], pa.Table]:
    """(quadruplets, labelled pairs) without the rejected pairs, and the rejects table."""
    thresholds = params.sample.judge_thresholds
    if not thresholds:
        return mined, labelled, REJECTS_SCHEMA.empty_table()
    for error in threshold_errors(params)[:1]:
        raise ParamsError(error)
    values, scored = _scores(store, {threshold_key(k)[0] for k in thresholds})
    pairs = sorted({p["pair_id"] for p in labelled} | {r[f"pair_id_{s}"] for r in mined for s in "ab"})
    for judge, done in sorted(scored.items()):
        unscored = [p for p in pairs if p not in done]
        if unscored:
            raise StageOrderError(f"{len(unscored)} of {len(pairs)} edit pairs have no {judge!r} score (first: "
                                  f"{unscored[0]}); judge.judges or the mined pairs changed since it ran: "
                                  "run `vicl judge` first")
    rows = []
    for pair in pairs:
        for key, minimum in sorted(thresholds.items()):
            judge, score = threshold_key(key)
            value = values.get((pair, judge, score))
            if value is None or value < minimum:
                rows.append({"pair_id": pair, "judge": judge, "score": score, "value": value, "threshold": minimum})
    rejected = {r["pair_id"] for r in rows}
    mined = [r for r in mined if r["pair_id_a"] not in rejected and r["pair_id_b"] not in rejected]
    labelled = [p for p in labelled if p["pair_id"] not in rejected]
    return mined, labelled, pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)
