"""The sampler: rows, cloze, shared permutation, distinct sources, seeds, categories, weights, mined."""

import json

import numpy as np
import pytest

from pipelines.instructions import build_instruction
from pipelines.sampling import EVAL_UNSEEN, sample, task_counts
from pipelines.sampling_params import SamplerParams
from pipelines.tasks import Task, explicit_task

IDS = [f"img{i:04d}" for i in range(200)]


def index_for(*nodes, ids=IDS):
    return {n: set(ids) for n in ("image", *nodes)}


def three_column_task():
    return explicit_task("canny_and_depth_to_image", ["canny", "depth", "image"], "conditional_generation")


def test_row_distribution_and_cloze_probability_within_tolerance():
    params = SamplerParams(samples_per_task=3000, eval_fraction=0.0, cloze_probability=0.3)
    samples = sample(index_for("canny", "depth"), [three_column_task()], params)
    n = len(samples)
    rows = np.array([len(s["image_ids"]) for s in samples])
    for k, p in {1: 0.3, 2: 0.4, 3: 0.3}.items():
        assert abs((rows == k).mean() - p) < 0.03, (k, (rows == k).mean())
    # a cloze draw picks any of the 3 columns, the last one included: P(target not last) = 0.3 * 2/3
    not_last = np.mean([s["target_col"] != 2 for s in samples])
    assert abs(not_last - 0.3 * 2 / 3) < 0.03
    assert all(s["target_row"] == len(s["image_ids"]) - 1 for s in samples)  # always on the query row
    assert n == 3000


def test_permutation_shared_by_rows_target_column_last_and_distinct_sources():
    params = SamplerParams(samples_per_task=400, eval_fraction=0.0)
    samples = sample(index_for("canny", "depth"), [three_column_task()], params)
    orders = set()
    for s in samples:
        cols = len(s["columns"])
        assert s["columns"][-1] == "image"
        assert sorted(s["columns"][:-1]) == ["canny", "depth"]
        for r, image_id in enumerate(s["image_ids"]):  # every row: the same column order, one image
            assert s["cell_nodes"][r * cols:(r + 1) * cols] == s["columns"]
            assert set(s["cell_ids"][r * cols:(r + 1) * cols]) == {image_id}
        assert len(set(s["image_ids"])) == len(s["image_ids"])
        orders.add(tuple(s["columns"]))
    assert len(orders) == 2  # both orders of the two conditions occur


def test_rows_hold_every_node_of_the_path():
    index = {"image": set(IDS), "canny": set(IDS[:50]), "depth": set(IDS[25:80])}
    samples = sample(index, [three_column_task()], SamplerParams(samples_per_task=100, eval_fraction=0.0))
    assert {i for s in samples for i in s["image_ids"]} <= set(IDS[25:50])


def test_same_seed_same_samples_other_seed_other_samples():
    tasks = [three_column_task(), explicit_task("image_to_canny", ["image", "canny"])]
    a = sample(index_for("canny", "depth"), tasks, SamplerParams(samples_per_task=20, seed=3))
    b = sample(index_for("canny", "depth"), tasks, SamplerParams(samples_per_task=20, seed=3))
    c = sample(index_for("canny", "depth"), tasks, SamplerParams(samples_per_task=20, seed=4))
    assert a == b and a != c
    # adding a task does not change another task's samples
    d = sample(index_for("canny", "depth"), tasks[:1], SamplerParams(samples_per_task=20, seed=3))
    strip = [{k: v for k, v in s.items() if k != "key"} for s in a if s["task"] == tasks[0].name]
    assert strip == [{k: v for k, v in s.items() if k != "key"} for s in d]


def test_detection_rows_share_a_category():
    task = Task("image_to_detection_target", ("image", "detection_target"), "detection", "perception",
                same_category=True)
    categories = {("detection_target", i): ["cat", "dog", "car", None][k % 4] for k, i in enumerate(IDS)}
    samples = sample(index_for("detection_target"), [task], SamplerParams(samples_per_task=200, eval_fraction=0.0),
                     categories=categories)
    assert samples
    for s in samples:
        cats = {categories[("detection_target", i)] for i in s["image_ids"]}
        assert len(cats) == 1 and None not in cats


def test_retrieved_contexts_are_nearest_neighbours_outside_the_query_group():
    rng = np.random.default_rng(0)
    emb = {i: v / np.linalg.norm(v) for i, v in zip(IDS, rng.normal(size=(len(IDS), 8)))}
    groups = {i: i for i in IDS}
    params = SamplerParams(samples_per_task=50, eval_fraction=0.0, context="retrieved", retrieval_pool=3,
                           rows={3: 1.0})
    task = explicit_task("image_to_canny", ["image", "canny"])
    for s in sample(index_for("canny"), [task], params, groups=groups, embeddings=emb):
        query, contexts = s["image_ids"][-1], s["image_ids"][:-1]
        sims = sorted((float(emb[i] @ emb[query]), i) for i in IDS if i != query)
        nearest = {i for _, i in sims[-3:]}
        assert set(contexts) <= nearest and s["context_mode"] == "retrieved"


def test_task_weighting_uniform_family_temperature():
    tasks = [Task("a", ("x", "image"), "f1"), Task("b", ("y", "image"), "f1"), Task("c", ("z", "image"), "f2")]
    sizes = {"a": 100, "b": 100, "c": 400}
    assert task_counts(tasks, sizes, SamplerParams(samples_per_task=10)) == {"a": 10, "b": 10, "c": 10}
    fam = task_counts(tasks, sizes, SamplerParams(samples_per_task=10, task_weighting="family",
                                                  family_weights={"f1": 1, "f2": 1}))
    assert fam == {"a": 8, "b": 7, "c": 15}  # each family half of 30, shared by its tasks
    t1 = task_counts(tasks, sizes, SamplerParams(samples_per_task=10, task_weighting="temperature",
                                                 temperature=1.0))
    assert t1 == {"a": 5, "b": 5, "c": 20}
    hot = task_counts(tasks, sizes, SamplerParams(samples_per_task=10, task_weighting="temperature",
                                                  temperature=100.0))
    assert max(hot.values()) - min(hot.values()) <= 1 and sum(hot.values()) == 30


def test_held_out_tasks_only_in_unseen_eval_on_eval_images():
    tasks = [explicit_task("image_to_canny", ["image", "canny"]), explicit_task("canny_to_image", ["canny", "image"])]
    split_of = {i: ("eval" if k % 5 == 0 else "train") for k, i in enumerate(IDS)}
    params = SamplerParams(samples_per_task=10, eval_fraction=0.2, heldout_tasks=["canny_to_image"])
    samples = sample(index_for("canny"), tasks, params, split_of=split_of)
    by_split = {}
    for s in samples:
        by_split.setdefault(s["split"], set()).add(s["task"])
        assert {split_of[i] for i in s["image_ids"]} == ({"train"} if s["split"] == "train" else {"eval"})
    assert by_split == {"train": {"image_to_canny"}, "eval": {"image_to_canny"}, EVAL_UNSEEN: {"canny_to_image"}}
    assert len({s["key"] for s in samples}) == len(samples) and all("." not in s["key"] for s in samples)


def test_instruction_parts_and_drop_probabilities():
    rng = np.random.default_rng(0)
    outs = [build_instruction(2, ["canny", "image"], rng, caption="a cat on a mat") for _ in range(4000)]
    empty = np.mean([o["text"] == "" for o in outs])
    kept = [o for o in outs if o["text"]]
    assert abs(empty - 0.1) < 0.02
    assert abs(np.mean([bool(o["task"]) for o in kept]) - 0.8) < 0.03
    assert abs(np.mean([o["content"] == "a cat on a mat" for o in kept]) - 0.8) < 0.03
    assert all(o["layout"] and "2" in o["layout"] for o in kept)
    assert all("[IMAGE1]" in o["task"] and "[IMAGE2]" in o["task"] for o in kept if o["task"])
    # no content unless the target is the photo
    assert not any(build_instruction(2, ["image", "canny"], rng, caption="x")["content"] for _ in range(50))
    one_row = [build_instruction(1, ["canny", "image"], rng, drop_all=0.0)["layout"] for _ in range(40)]
    assert not any("1 rows" in t for t in one_row) and any("1 row" in t for t in one_row)
    a = build_instruction(3, ["canny", "depth", "image"], np.random.default_rng(5))
    assert a == build_instruction(3, ["canny", "depth", "image"], np.random.default_rng(5))


def _quad(a: str, b: str, src_a: str, src_b: str, text_a: str = "", text_b: str = "") -> dict:
    """A mine-stage quadruplet row: pair a is an edit-corpus pair (two store images), pair b a
    synthetic edit (an image and its edit node)."""
    return {"pair_id_a": a, "pair_id_b": b, "instruction_a": text_a, "instruction_b": text_b, "cluster": 3,
            "cos_delta": 0.8, "cos_visual": 0.4, "cos_text": 0.9,
            "source_node_a": "image", "source_image_a": src_a, "edited_node_a": "image", "edited_image_a": f"{a}-e",
            "source_node_b": "image", "source_image_b": src_b, "edited_node_b": "edit_sepia",
            "edited_image_b": src_b}


def test_mined_quadruplets_become_their_own_task_within_one_split():
    split_of = {"s1": "train", "s2": "train", "s3": "eval"}
    index = {"image": {"s1", "s2", "s3"}}
    rows = [_quad("p1", "p2", "s1", "s2", "make it sepia", "sepia tone"), _quad("p1", "p3", "s1", "s3", "x", "y")]
    out = sample(index, [], SamplerParams(instructions={"drop_all": 0.0, "task_keep": 1.0}), split_of=split_of,
                 mined=rows)
    assert len(out) == 1  # the second crosses splits
    s = out[0]
    assert s["task"] == "mined_edit" and s["split"] == "train" and s["image_ids"] == ["s2", "s1"]
    # VisRel's 2 x 2 grid: exemplar B -> B' on top, query A -> A' below, the cells the real nodes
    assert s["cell_nodes"] == ["image", "edit_sepia", "image", "image"] and (s["target_row"], s["target_col"]) == (1, 1)
    assert s["cell_ids"] == ["s2", "s2", "s1", "p1-e"] and "make it sepia" in s["instruction"]["text"]
    assert json.loads(s["scores"]) == {"pairing": "task_vector", "origins": ["corpus", "corpus"],
                                       "pair_ids": ["p2", "p1"], "instructions": ["sepia tone", "make it sepia"],
                                       "cluster": 3, "cos_delta": 0.8, "cos_visual": 0.4, "cos_text": 0.9}
    many = [_quad(f"p{k}", f"q{k}", "s1", "s2") for k in range(50)]
    # one cluster is one sub-task: samples_per_task of it, like any task; a seeded draw, the same every run
    first = sample(index, [], SamplerParams(samples_per_task=7), split_of=split_of, mined=many)
    assert len(first) == 7 and first == sample(index, [], SamplerParams(samples_per_task=7), split_of=split_of,
                                               mined=many)
    capped = sample(index, [], SamplerParams(samples_per_task=40, mined_max_samples=20), split_of=split_of,
                    mined=many)
    assert len(capped) == 20


def test_bad_rows_param_rejected():
    with pytest.raises(ValueError):
        SamplerParams(rows={1: 0.5, 2: 0.2})
