"""Edit quadruplets (A, A', B, B') as samples of the task `mined_edit`: VisRel's 2 x 2 grid.

Two kinds of candidates, each grouped into sub-tasks that the task mix (pipelines/task_mix.py)
treats like tasks of their own:
- label-paired: pairs whose transformation vicl knows (a synthetic edit's family and the params
  that change its meaning, a generated analogous pair's instruction) carry a `transform_key`;
  two pairs form a quadruplet only when their keys are equal and both sources lie in one split.
  Pairs of one (split, key) are put in a seeded order (by digest, so an added pair changes only its
  neighbours) and each is the query of the next one's exemplar (a cycle), so every pair is a query
  once. Sub-task: the key.
- task-vector mined: the mine stage's quadruplets of pairs whose transformation is unknown (edit
  corpora), kept when both sources lie in one split. Sub-task: the K-Means cluster.
Each sample keeps the scores that admitted it (`scores`: pairing, transform key or cosines,
origins, pair ids, instructions), so a user can re-threshold without rebuilding.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable

import numpy as np

from pipelines.instructions import build_instruction
from pipelines.ring import digest64
from pipelines.tasks import mined_task

CELL_ROLES = ("source", "edited")


def _pair_cells(row: dict, side: str) -> dict:
    """The cells of a labelled pair row as one side (`a` or `b`) of a quadruplet row."""
    return {f"{role}_{col}_{side}": row[f"{role}_{col}"] for role in CELL_ROLES for col in ("node", "image")}


def label_quadruplets(pairs: list[dict], split_of: Callable[[str], str], seed: int,
                      group_of: Callable[[str], object] | None = None) -> dict[str, dict[str, list[dict]]]:
    """{split: {transform key: quadruplet rows}} of labelled pairs (rows with pair_id, transform_key,
    instruction, origin and the cells source_node/source_image/edited_node/edited_image). Two pairs
    whose sources are near-duplicates (`group_of`: the split's grouping) never form one."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for p in pairs:
        if p.get("transform_key"):
            groups[(split_of(p["source_image"]), p["transform_key"])].append(p)
    out: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for (split, key), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        # a seeded order by digest (not a shuffle of positions): a pair added later enters the cycle
        # at one place, and only the two quadruplets beside it change
        members = sorted(members, key=lambda p: (digest64(f"{seed}/{split}/{key}/{p['pair_id']}"), p["pair_id"]))
        order = list(range(len(members)))
        quads = []
        for j in range(len(order) if len(order) > 2 else 1):
            a, b = members[order[j]], members[order[(j + 1) % len(order)]]
            if {(a["source_node"], a["source_image"]), (a["edited_node"], a["edited_image"])} & \
                    {(b["source_node"], b["source_image"]), (b["edited_node"], b["edited_image"])}:
                continue  # one image in both pairs: the exemplar would show the query
            if group_of is not None and group_of(a["source_image"]) == group_of(b["source_image"]) and \
                    a["source_image"] != b["source_image"]:
                continue  # near-duplicate sources: the exemplar would show the answer
            quads.append({**_pair_cells(a, "a"), **_pair_cells(b, "b"),
                          "scores": {"pairing": "label", "transform_key": key,
                                     "origins": [b["origin"], a["origin"]], "pair_ids": [b["pair_id"], a["pair_id"]],
                                     "instructions": [b["instruction"], a["instruction"]]}})
        if quads:
            out[split][key] = quads
    return out


def mined_quadruplets(rows: list[dict], split_of: Callable[[str], str]) -> dict[str, dict[str, list[dict]]]:
    """{split: {"cluster:<k>": quadruplet rows}} of the mine stage's task-vector quadruplets whose two
    sources lie in one split (the table's order kept)."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        splits = {split_of(r["source_image_b"]), split_of(r["source_image_a"])}
        if len(splits) != 1:
            continue
        scores = {"pairing": "task_vector", "cluster": int(r["cluster"]), "origins": ["corpus", "corpus"],
                  "pair_ids": [r["pair_id_b"], r["pair_id_a"]],
                  "instructions": [r["instruction_b"], r["instruction_a"]],
                  **{k: round(float(r[k]), 6) for k in ("cos_delta", "cos_visual", "cos_text") if k in r}}
        cells = {f"{role}_{col}_{side}": r[f"{role}_{col}_{side}"] for role in CELL_ROLES for col in ("node", "image")
                 for side in "ab"}
        out[splits.pop()][f"cluster:{int(r['cluster'])}"].append({**cells, "scores": scores})
    return {split: dict(subtasks) for split, subtasks in out.items()}


def merge(*candidates: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for c in candidates:
        for split, subtasks in c.items():
            for name, rows in subtasks.items():
                out[split].setdefault(name, []).extend(rows)
    return dict(out)


def quadruplet_identity(row: dict) -> str:
    """What a quadruplet is: its eight cells (node and image of each), as one string."""
    return "/".join(str(row[f"{role}_{col}_{side}"]) for side in "ba" for role in CELL_ROLES for col in ("node", "image"))


def draw(rows: list[dict], count: int, salt: str) -> list[dict]:
    """`count` of `rows`: those of smallest seeded digest (`salt`: seed, split, sub-task), in table
    order. A row added later takes a place only if its digest is among the smallest, so a grown
    table keeps the rows drawn before but one."""
    if count >= len(rows):
        return list(rows)
    ranked = sorted(range(len(rows)), key=lambda i: (digest64(f"{salt}/{quadruplet_identity(rows[i])}"), i))
    return [rows[i] for i in sorted(ranked[:count])]


def quadruplet_sample(row: dict, split: str, rng: np.random.Generator, params) -> dict:
    """One sample of `mined_edit`: row 0 the exemplar pair B -> B', row 1 the query A -> A'; the
    target is A'. The instruction states the edit (the query pair's text)."""
    task = mined_task()
    columns = list(task.path)
    scores = row["scores"]
    text = scores["instructions"][1] or scores["instructions"][0] or ""
    ip = params.instructions
    instruction = build_instruction(2, columns, rng, task_keep=ip.task_keep, content_keep=0.0, drop_all=ip.drop_all,
                                    phrases_file=ip.phrases_file,
                                    task_text=f"Each row applies the same edit: {text}" if text else "")
    sources = [row["source_image_b"], row["source_image_a"]]
    return {"split": split, "task": task.name, "family": task.family, "meta_task": task.meta_task,
            "semantic": task.semantic, "locality": task.locality, "columns": columns, "permutation": [0],
            "image_ids": sources, "source_ids": list(sources),
            "cell_nodes": [row[f"{role}_node_{side}"] for side in "ba" for role in CELL_ROLES],
            "cell_ids": [row[f"{role}_image_{side}"] for side in "ba" for role in CELL_ROLES],
            "target_row": 1, "target_col": 1, "instruction": instruction, "context_mode": "mined",
            "scores": json.dumps(scores, sort_keys=True)}


def pairing_summary(samples: list[dict], labelled: list[dict]) -> dict[str, dict]:
    """Per origin of the `mined_edit` samples: how their pairs were paired and, where vicl knows the
    transforms, the share whose two pairs share one, read back from the labelled pairs table (not
    from the pairing's own record). Corpus pairs have no known transform: their agreement is None,
    and the mine stage's held-out instruction-filter precision stands for it."""
    key_of = {p["pair_id"]: p["transform_key"] for p in labelled}
    out: dict[str, dict] = {}
    for s in samples:
        if s.get("context_mode") != "mined" or not s.get("scores"):
            continue
        scores = json.loads(s["scores"])
        origin = "+".join(sorted(set(scores["origins"])))
        entry = out.setdefault(origin, {"samples": 0, "pairing": scores["pairing"], "known": 0, "agree": 0})
        entry["samples"] += 1
        keys = [key_of.get(i) for i in scores["pair_ids"]]
        if all(keys):
            entry["known"] += 1
            entry["agree"] += keys[0] == keys[1]
    return {o: {"samples": e["samples"], "pairing": e["pairing"],
                "transform_agreement": round(e["agree"] / e["known"], 4) if e["known"] else None}
            for o, e in sorted(out.items())}
