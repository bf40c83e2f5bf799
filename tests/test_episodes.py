"""Personalization episodes (ICPT): K concepts, M references each, a query of one of them; split-respecting;
the episode shard layout and its preview."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import run_stages
from pipelines.episodes import concept_label, draw_episodes
from pipelines.preview import write_preview
from pipelines.sampling_params import EpisodeParams
from pipelines.store import NodeStore
from pipelines.subjects import Subject, load_subjects
from tests.pipeline_fixtures import small_params
from tests.subject_fixtures import subject_dataset


def _subjects(n: int, views: int = 2) -> list[Subject]:
    return [Subject(f"s{i:02d}", tuple(f"img{i:02d}_{v}" for v in range(views)), f"thing {i}") for i in range(n)]


def _check(episodes: list[dict], subjects: list[Subject], split_of: dict[str, str], k: int, m: int) -> None:
    by_record = {s.record: s for s in subjects}
    for e in episodes:
        assert e["concept_labels"] == [concept_label(j) for j in range(k)]
        assert len(set(e["concept_records"])) == k and all(len(r) == m for r in e["reference_ids"])
        for record, refs, name in zip(e["concept_records"], e["reference_ids"], e["concept_names"]):
            assert set(refs) <= set(by_record[record].views) and name == by_record[record].name
        assert len(e["query_ids"]) == 1 and e["query_concepts"] and set(e["query_concepts"]) <= set(e["concept_labels"])
        q = e["concept_labels"].index(e["query_concepts"][0])
        shown = by_record[e["concept_records"][q]]
        assert e["query_ids"][0] in shown.views and e["query_ids"][0] not in e["reference_ids"][q]
        every = [i for refs in e["reference_ids"] for i in refs] + e["query_ids"]
        assert len(set(every)) == len(every) and {split_of[i] for i in every} == {e["split"]}
        assert e["query_concepts"][0] in e["answer"] and all(label in e["question"] for label in e["concept_labels"])
        assert [qa["answer"] for qa in e["qa"]] == ["yes" if j == q else "no" for j in range(k)]


def test_episodes_have_k_concepts_m_references_and_a_query_among_them():
    subjects = _subjects(12, views=3)
    split_of = {v: ("eval" if int(s.record[1:]) % 4 == 0 else "train") for s in subjects for v in s.views}
    params = EpisodeParams(enabled=True, k=3, m=2, count={"train": 15, "eval": 2})
    episodes, summary = draw_episodes(subjects, split_of, params)
    assert summary["episodes"] == {"train": 15, "eval": 2} and summary["subjects_across_splits"] == 0
    _check(episodes, subjects, split_of, 3, 2)
    assert [e["key"] for e in episodes][:2] == ["train_ep000000000", "train_ep000000001"]
    assert {e["concept_labels"].index(e["query_concepts"][0]) for e in episodes} == {0, 1, 2}  # query anywhere
    assert draw_episodes(subjects, split_of, params) == (episodes, summary)  # seeded
    other = draw_episodes(subjects, split_of, EpisodeParams(enabled=True, k=3, m=2, count={"train": 15, "eval": 5}))
    assert [e for e in other[0] if e["split"] == "train"] == [e for e in episodes if e["split"] == "train"]


def test_a_subject_whose_views_the_splits_separate_is_in_no_episode():
    subjects = _subjects(6)
    split_of = {v: "train" for s in subjects for v in s.views}
    split_of[subjects[0].views[1]] = "eval"  # this subject crosses the splits
    episodes, summary = draw_episodes(subjects, split_of, EpisodeParams(enabled=True, k=2, count={"train": 30}))
    assert summary["subjects_across_splits"] == 1 and len(episodes) == 30
    assert subjects[0].record not in {r for e in episodes for r in e["concept_records"]}
    _check(episodes, subjects, split_of, 2, 1)
    # too few concepts for K: no episode, and the summary says why
    few, summary = draw_episodes(subjects[:2], {v: "train" for s in subjects[:2] for v in s.views},
                                 EpisodeParams(enabled=True, k=3, count={"train": 5}))
    assert few == [] and "needs 3" in summary["short"]["train"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("episodes")
    subject_dataset(8, [5, 5, 2, 5, 4, 5, 3, 5]).to_parquet(str(root / "subjects.parquet"))
    params = small_params(root, sources=[{"kind": "parquet", "path": str(root / "subjects.parquet"),
                                          "layout": "subjects200k"}],
                          annotators={}, sample={"samples_per_task": 2, "eval_fraction": 0.3,
                                                 "families": ["reference_to_image"],
                                                 "episodes": {"enabled": True, "k": 2, "m": 1,
                                                              "count": {"train": 6, "eval": 2}}},
                          export={"shard_size": 4})
    results = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    return root, params, results


def test_chain_writes_split_respecting_episodes_as_shards(chain):
    root, params, results = chain
    store = NodeStore(params.paths.store)
    episodes = pq.read_table(store.samples_dir / "episodes.parquet").to_pylist()
    t = pq.read_table(store.samples_dir / "splits.parquet")
    split_of = dict(zip(t["image_id"].to_pylist(), t["split"].to_pylist()))
    subjects = [s for s in load_subjects(store) if s.quality["objectConsistency"] >= 3]  # the default filter
    assert results["sample"]["episodes"]["episodes"]["train"] == 6 and episodes
    _check(episodes, subjects, split_of, 2, 1)
    assert results["export"]["episodes"] == len(episodes)

    import webdataset as wds

    out = Path(params.paths.out)
    got = {}
    for tar in sorted(out.glob("episodes/*/*.tar")):
        for s in wds.WebDataset(str(tar), shardshuffle=False):
            record = json.loads(s["json"])
            assert set(s) - {"__key__", "__url__", "__local_path__"} == {"json", "c0_r0.jpg", "c1_r0.jpg",
                                                                         "query_0.jpg"}
            assert record["roles"] == {"c0_r0.jpg": "reference", "c1_r0.jpg": "reference", "query_0.jpg": "query"}
            got[record["key"]] = record
    assert sorted(got) == sorted(e["key"] for e in episodes)
    import datasets  # the shard set's fields are uniform: HF's webdataset builder reads it

    tars = sorted(str(p) for p in out.glob("episodes/train/*.tar"))
    hf = datasets.load_dataset("webdataset", data_files={"train": tars}, split="train", cache_dir=str(root / "hf"))
    assert len(hf) == 6 and hf[0]["json"]["k"] == 2 and hf[0]["query_0.jpg"].size
    e = episodes[0]
    assert got[e["key"]]["query"]["concepts"] == e["query_concepts"] and got[e["key"]]["answer"] == e["answer"]
    # an unchanged re-run writes nothing; the preview shows the episodes
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("episodes/*/*.tar")}
    again = run_stages(("sample", "export"), params, log=lambda *_: None)
    assert again["sample"].get("up_to_date") and stamps
    assert {p: p.stat().st_mtime_ns for p in out.glob("episodes/*/*.tar")} == stamps
    page = write_preview(out, per_task=2).read_text()
    assert "episodes: train" in page and e["question"].split(":")[0] in page
    assert (out / "preview" / "img" / f"{episodes[0]['key']}_query_0.jpg").is_file()
