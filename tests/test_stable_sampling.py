"""Sampling is stable under growth (issue 23, item 10): adding 1 % of images changes only the samples
beside them on the ring and the last query of each task's walk; every other sample keeps its key
and its content, so an export rewrites only the shards that hold what changed."""

from __future__ import annotations

import hashlib

import numpy as np

from pipelines.ring import places, walk
from pipelines.sampling import context_window, sample
from pipelines.sampling_params import SamplerParams
from pipelines.splits import split_of_group
from pipelines.tasks import Task, explicit_task


def _ids(first: int, count: int) -> list[str]:
    return [hashlib.sha256(f"photo {k}".encode()).hexdigest()[:32] for k in range(first, first + count)]


TASKS = [explicit_task("image_to_canny", ["image", "canny"]), explicit_task("canny_to_image", ["canny", "image"]),
         explicit_task("gray_to_image", ["gray", "image"], "restoration")]


def _draw(ids, **kwargs):
    index = {n: set(ids) for n in ("image", "canny", "gray")}
    params = SamplerParams(samples_per_task=kwargs.pop("per_task", 150), eval_fraction=0.1, seed=5, **kwargs)
    return {s["key"]: s for s in sample(index, TASKS, params)}


def test_adding_one_percent_of_images_keeps_almost_every_sample():
    before_ids = _ids(0, 600)
    added = _ids(600, 6)
    before, after = _draw(before_ids), _draw(before_ids + added)
    kept = [k for k in before if after.get(k) == before[k]]
    assert len(kept) >= 0.9 * len(before), f"{len(kept)} of {len(before)} samples kept"
    # what changed has an added image among the few pool images that follow its query on the ring
    # (its context window), or is a query newly reached or pushed off the end of a task's walk
    grown = before_ids + added
    split = {i: split_of_group(i, 0.1, 5) for i in grown}
    window = context_window(max(SamplerParams().rows) - 1)
    for key in (set(before) - set(kept)) & set(after):
        query = after[key]["image_ids"][-1]
        pool = np.array(sorted(i for i in grown if split[i] == split[query]), dtype=object)
        order = walk(np.arange(len(pool)), places(list(pool), 5), 0)
        at = order.tolist().index(int(np.nonzero(pool == query)[0][0]))
        following = {pool[order[(at + 1 + d) % len(order)]] for d in range(window)}
        assert following & set(added), key
    assert len(set(after) - set(before)) <= 6 * len(TASKS) + 2 * len(TASKS)


def test_keys_sort_by_the_query_place_and_never_depend_on_sample_counts():
    ids = _ids(0, 300)
    few, many = _draw(ids, per_task=40), _draw(ids, per_task=80)
    assert list(few) == sorted(few) and len(set(few)) == len(few)
    # more samples per task: the walk goes further, the first 40 of each task are the same samples
    assert sum(many.get(k) == s for k, s in few.items()) >= 0.9 * len(few)
    for s in many.values():
        query_place = int(places([s["image_ids"][-1]], 5)[0])
        assert s["key"].split("_", 1)[1][:16] == f"{query_place:016x}"


def test_a_walk_cycles_when_a_task_asks_for_more_samples_than_images():
    ids = _ids(0, 12)
    samples = _draw(ids, per_task=30)
    train = [s for s in samples.values() if s["split"] == "train" and s["task"] == "image_to_canny"]
    queries = [s["image_ids"][-1] for s in train]
    assert len(train) == 30
    counts = {q: queries.count(q) for q in set(queries)}
    assert max(counts.values()) - min(counts.values()) <= 1  # every image queried as often, give or take one


def test_walk_is_ring_order_from_the_start_ties_by_position():
    members = np.array([4, 1, 7, 3])
    member_places = np.array([30, 10, 10, 20], np.uint64)
    assert walk(members, member_places, 15).tolist() == [3, 4, 1, 7]
    assert walk(members, member_places, 0).tolist() == [1, 7, 3, 4]
    assert walk(members, member_places, 31).tolist() == [1, 7, 3, 4]
