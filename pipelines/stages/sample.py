"""Sample: the catalog's nodes -> splits, samples table and leakage report, written together as one set.

1. the catalog's compact node index (+ online nodes, rendered at export from the image);
2. tasks: the task families enumerated over the node types present (or the explicit list);
3. the split embedder's embedding node (computed by the annotate stage) -> near-duplicate groups
   (faiss, pipelines/splits.py) -> group-level train/eval split;
4. the sampler (pipelines/sampling.py): graph tasks (rows of a synthetic edit task share its transform
   key), and the mine stage's quadruplets and labelled pairs as `mined_edit` (pipelines/edit_quadruplets.py),
   in the task mix of pipelines/task_mix.py (the edit budget);
5. the leakage report, re-checked with content ids and dHash64 (not the embedder that grouped);
   with `sample.exclude`, store images near a benchmark image (split embedding or dHash64) and their
   records are in no split (pipelines/decontamination.py: excluded.parquet, leakage.json's section);
6. written under samples/ as one set (staged, then swapped in): samples.parquet, splits.parquet,
   leakage.json, inputs.json. A run whose inputs (catalog fingerprint, sample params, sampler
   code) match inputs.json does nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.catalog import Catalog
from pipelines.decontamination import benchmark_fingerprint, decontaminate  # issue 25
from pipelines.stage import Stage, StageOrderError, code_digest
from pipelines.params import Params
from pipelines.edit_quadruplets import pairing_summary
from pipelines.judge_thresholds import apply_judge_thresholds, scores_digest  # the judges' thresholds
from core.node_types import NODE_TYPES
from pipelines.sampling import eval_count, sample
from pipelines.sampling_params import SamplerParams
from pipelines.splits import (leakage_report, merge_groups, near_duplicate_groups, sample_image_ids,
                              separate_hash_near_duplicates)
from pipelines.store import (NodeStore, commit_folder, read_part, recover_folder, staging_folder, write_json,
                             write_table)
from pipelines.subject_sampling import stage_episodes, subject_sampling  # issue 14
from pipelines.task_mix import mix_summary
from pipelines.tasks import MINED_TASK, Task, configured_tasks

KEYED_GROUPS = ("synthetic_edit", "synthetic_pair")  # node groups whose meta holds a transform key

_INSTRUCTION = pa.struct([("layout", pa.string()), ("task", pa.string()), ("content", pa.string()),
                          ("text", pa.string())])
SAMPLES_SCHEMA = pa.schema([
    ("key", pa.string()), ("split", pa.string()), ("task", pa.string()), ("family", pa.string()),
    ("meta_task", pa.string()), ("semantic", pa.string()), ("locality", pa.string()),
    ("columns", pa.list_(pa.string())), ("permutation", pa.list_(pa.int64())),
    ("image_ids", pa.list_(pa.string())), ("source_ids", pa.list_(pa.string())),
    ("cell_nodes", pa.list_(pa.string())), ("cell_ids", pa.list_(pa.string())),
    ("target_row", pa.int64()), ("target_col", pa.int64()), ("instruction", _INSTRUCTION),
    ("context_mode", pa.string()),
    # JSON: what admitted the sample: an edit quadruplet's pairing (transform key, or cluster and
    # task-vector / visual / text cosines), a keyed task's shared pool key (pipelines/edit_quadruplets.py)
    ("scores", pa.string()),
])
SPLITS_SCHEMA = pa.schema([("image_id", pa.string()), ("group", pa.string()), ("split", pa.string())])


def samples_dir(store: NodeStore) -> Path:
    return store.samples_dir




def node_meta(cat: Catalog, node: str) -> dict[str, dict]:
    """image id -> parsed meta of one node type (nodes whose meta the sampler needs: categories, captions)."""
    if node not in cat.nodes:
        return {}
    out = {}
    for path in sorted(cat.nodes[node].folder.glob("part-*.parquet")):
        t = read_part(path, columns=["image_id", "meta", "error", "quality"], filters=[("node_type", "=", node)])
        for r in t.to_pylist():
            if r["error"] is None and r["quality"] is None:
                out.setdefault(r["image_id"], json.loads(r["meta"] or "{}"))
    return out


def _live_rows(table: pa.Table, sides: tuple[str, ...], cat: Catalog) -> list[dict]:
    """The rows of a pair or quadruplet table whose cells (`<role>_node<side>`, `<role>_image<side>`)
    are all live in the store (an edited image counts as the cell of its own pair)."""
    if not table.num_rows:
        return []
    index = cat.node_index()
    ok = np.ones(table.num_rows, bool)
    for side in sides:
        for role in ("source", "edited"):
            nodes = table[f"{role}_node{side}"]
            pos = index.positions(table[f"{role}_image{side}"])
            for node in pc.unique(nodes).to_pylist():
                rows = pc.equal(nodes, node).to_numpy(zero_copy_only=False)
                ok[rows] &= (pos[rows] >= 0) & index.has_cell(node)[np.maximum(pos[rows], 0)]
    return table.filter(pa.array(ok)).to_pylist()


def edit_pairs(store: NodeStore, cat: Catalog, sp: SamplerParams) -> tuple[list[dict], list[dict]]:
    """(task-vector quadruplets, labelled pairs) of the mine stage whose cells are live."""
    path = Path(sp.mined_quadruplets) if sp.mined_quadruplets else store.quadruplets_path
    mined = _live_rows(pq.read_table(path), ("_a", "_b"), cat) if path.exists() else []
    path = store.labelled_pairs_path
    labelled = _live_rows(pq.read_table(path), ("",), cat) if path.exists() and not sp.mined_quadruplets else []
    return mined, labelled


def transform_keys(cat: Catalog, tasks: list[Task]) -> dict[tuple[str, str], str]:
    """{(node, image id): transform key} of the tasks' nodes that carry one (synthetic edits): the rows
    of one sample must share it."""
    out = {}
    for node in sorted({n for t in tasks for n in t.path if NODE_TYPES.get(n) and NODE_TYPES[n].group in KEYED_GROUPS}):
        out.update({(node, i): m["transform_key"] for i, m in node_meta(cat, node).items() if m.get("transform_key")})
    return out


def record_links(store: NodeStore, index) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (first member, another member) of every record's images (edit pairs, subjects)."""
    firsts, others = [], []
    for roles in store.records().values():
        members = sorted(roles.values())
        firsts += [members[0]] * (len(members) - 1)
        others += members[1:]
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = index.positions(firsts), index.positions(others)
    keep = (a >= 0) & (b >= 0)
    return a[keep], b[keep]


def inputs_fingerprint(params: Params, cat: Catalog) -> str:
    digest = hashlib.sha256(cat.fingerprint().encode())
    digest.update(params.sample.model_dump_json().encode())
    digest.update(code_digest(SAMPLER_CODE).encode())  # the code that decides the samples
    digest.update(scores_digest(params, cat.store).encode())  # the judge scores the thresholds read
    if params.sample.exclude:  # issue 25: the benchmark files (names, sizes, times)
        digest.update(benchmark_fingerprint(params.sample.exclude).encode())
    return digest.hexdigest()[:16]


def _embedding_node(params: Params) -> str:
    import annotators

    return annotators.get(params.sample.split_embedder).produces[0]


def run_sample(params: Params, store: NodeStore) -> dict:
    sp = params.sample
    folder = samples_dir(store)
    recover_folder(folder)
    cat = Catalog.load(store)
    fingerprint = inputs_fingerprint(params, cat)
    marker = store.sample_inputs_path
    if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint \
            and store.samples_path.exists():
        return {**json.loads(marker.read_text())["summary"], "up_to_date": True}
    index = cat.node_index()
    subjects = subject_sampling(cat, index, sp.subjects)  # issue 14: `reference` of passing subject records
    index = subjects.index
    tasks = configured_tasks(params, nodes=index.nodes())
    ids = index.ids
    emb_node = _embedding_node(params)
    if emb_node not in cat.nodes:
        raise StageOrderError(f"the store has no {emb_node!r} node ({sp.split_embedder}): run `vicl annotate` again")
    has_emb, emb = cat.vectors(emb_node)
    emb = np.asarray(emb, dtype=np.float32)  # no copy: 10^6 x 128 is 512 MB
    group = near_duplicate_groups(ids, emb, sp.near_duplicate_threshold, nprobe=sp.near_duplicate_nprobe)
    if "image_dhash" in cat.nodes:
        has_hash, codes = cat.vectors("image_dhash")
    else:
        has_hash, codes = np.zeros(len(index), bool), np.zeros((len(index), 8), np.uint8)
    # one group, hence one split: embedding near-duplicates, dHash near-duplicates (what the leakage
    # report re-checks with) and the images of one record (an edit pair, a subject)
    links = record_links(store, index)
    group = merge_groups(group, *links)
    group, splits = separate_hash_near_duplicates(ids, group, has_hash, codes, sp.leakage_max_hamming,
                                                  sp.eval_fraction, sp.seed)
    decon = None  # issue 25: near-duplicates of benchmark images (and their records) in no split
    if sp.exclude:
        decon = decontaminate(params, store, cat, ids, emb_node, emb, has_emb, codes, has_hash, links)
        index, splits = decon.apply(index, splits)
    categories = {}
    for node in sorted({n for t in tasks if t.same_category for n in t.path} & set(cat.nodes)):
        categories.update({(node, i): m.get("category") for i, m in node_meta(cat, node).items()})
    captions = {i: m.get("text", "") for i, m in node_meta(cat, "caption").items()}
    mined, labelled = edit_pairs(store, cat, sp)
    if decon is not None:  # issue 25: no pair with an excluded image
        mined, labelled = decon.rows(mined), decon.rows(labelled)
    mined, labelled, judge_rejects = apply_judge_thresholds(params, store, mined, labelled)  # docs/judges.md
    samples = sample(index, tasks, sp, split_of=splits, groups=group,
                     embeddings=emb if sp.context == "retrieved" else None,
                     categories=categories, captions=captions, transforms=transform_keys(cat, tasks),
                     mined=mined, labelled=labelled)
    hash_ids = ids.filter(pa.array(has_hash))
    leakage = leakage_report([s["split"] for s in samples], [sample_image_ids(s) for s in samples],
                             [s["key"] for s in samples], hash_ids, codes[has_hash],
                             grouping=f"{emb_node} cosine >= {sp.near_duplicate_threshold}, dHash64 Hamming <= "
                                      f"{sp.leakage_max_hamming} and records",
                             max_hamming=sp.leakage_max_hamming,
                             subject_of=subjects.subject_of)  # issue 14: subjects shared across splits
    per_task: dict[str, dict[str, int]] = {}
    for s in samples:
        per_task.setdefault(s["task"], {}).setdefault(s["split"], 0)
        per_task[s["task"]][s["split"]] += 1
    enumerated = [t.name for t in tasks] + ([MINED_TASK] if mined or labelled else [])
    summary = {"samples": len(samples), "tasks": len(per_task), "tasks_enumerated": len(enumerated),
               "tasks_without_samples": [t for t in enumerated if t not in per_task],
               "samples_per_task": {"train": sp.samples_per_task, "eval": eval_count(sp)},
               "near_duplicate_groups": int(len(np.unique(group))), "images_without_embedding": int((~has_emb).sum()),
               "leaking_eval_samples": leakage["eval_samples_with_near_duplicate_in_train"]
               + leakage["eval_samples_sharing_an_image_with_train"],
               "per_task": {t: sum(c.values()) for t, c in sorted(per_task.items())},
               "per_task_split": {t: dict(sorted(c.items())) for t, c in sorted(per_task.items())},
               "mix": mix_summary(samples), "edit_pairing": pairing_summary(samples, labelled)}
    staging = staging_folder(folder)
    write_table(pa.Table.from_pylist(samples, schema=SAMPLES_SCHEMA), staging / store.samples_path.name)
    split_table = pa.table({"image_id": ids, "group": ids.take(pa.array(group)), "split": pa.array(splits.tolist())},
                           schema=SPLITS_SCHEMA)
    if decon is not None:  # issue 25: excluded images are in no split (their rows: excluded.parquet)
        split_table = split_table.filter(pa.array(~decon.excluded))
        decon.write(staging, store.excluded_path.name, store.benchmark_cache_path.name)
        leakage["decontamination"] = decon.report
        summary["excluded_images"] = decon.report["excluded_images"]
    write_table(split_table, staging / store.splits_path.name)
    episodes = stage_episodes(subjects, index, splits, sp.episodes, staging)  # issue 14: episodes.parquet
    if episodes is not None:
        summary["episodes"] = episodes
    write_json(leakage, staging / store.leakage_path.name)
    write_table(judge_rejects, staging / store.judge_rejects_path.name)  # pairs the judge thresholds kept out
    if sp.judge_thresholds:
        summary["judge_rejected_pairs"] = len(set(judge_rejects["pair_id"].to_pylist()))
    write_json({"fingerprint": fingerprint, "summary": summary}, staging / store.sample_inputs_path.name)
    commit_folder(staging, folder)
    return summary


def sample_status(params: Params, store: NodeStore) -> list[str]:
    if not store.samples_path.exists():
        return ["sample:   not run"]
    return [f"sample:   {pq.read_metadata(store.samples_path).num_rows} samples"]


# The code that decides the samples: a change to it re-samples even when the data did not change.
SAMPLER_CODE = tuple(f"pipelines/{name}" for name in (
    "sampling.py", "ring.py", "sampling_params.py", "edit_quadruplets.py", "task_mix.py", "tasks.py",
    "task_families.yaml", "instructions.py", "instruction_phrases.yaml", "splits.py", "catalog.py", "subjects.py",
    "subject_sampling.py", "episodes.py", "stages/sample.py", "decontamination.py",
    "judge_thresholds.py")) + ("core/perceptual_hash.py",)

STAGE = Stage(
    name="sample", help="draw in-context samples (tasks x rows of distinct images) into the samples table",
    run=lambda params, store, progress=None: run_sample(params, store), status=sample_status,
    reads=("{store}/images", "{store}/nodes", "{store}/mined", "{store}/judged"), writes=("{store}/samples",),
    done="store.samples_path", params=("sample",), code=SAMPLER_CODE)
