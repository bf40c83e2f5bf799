"""An export option that does not touch the shards does not re-render them (issue 23, item 10)."""

from __future__ import annotations

from pipelines.cli import run_stages
from tests.pipeline_fixtures import small_params


def test_turning_on_the_graph200k_export_rewrites_no_shard(tmp_path):
    params = small_params(tmp_path, count=16, mine={"enabled": False})
    first = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)["export"]
    shards = sorted((tmp_path / "out").glob("shards/*/*.tar"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards}
    assert first["written"] == first["shards"] == len(shards) > 0
    on = params.model_copy(update={"export": params.export.model_copy(update={"graph200k": True,
                                                                             "preview_per_task": 5})})
    second = run_stages(("export",), on, log=lambda *_: None)["export"]
    assert second["written"] == 0 and second["graph200k_rows"] > 0
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards} == before  # not even rewritten alike


def _tar_keys(path) -> list[str]:
    from core.sample_reader import walk_shards

    return sorted({s.key for s in walk_shards([path])})


def test_a_grown_corpus_rewrites_only_the_shards_whose_samples_changed(tmp_path):
    """Adding images keeps every shard whose samples stayed (same bytes, not even rewritten), puts the
    samples of new queries in new shards, and every sample of the samples table is in exactly one shard."""
    import pyarrow.parquet as pq

    def build(count):
        params = small_params(tmp_path, count=count, annotators={"grayscale": {}}, mine={"enabled": False},
                              sample={"samples_per_task": 60, "eval_fraction": 0.0}, export={"shard_size": 6})
        return run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)["export"]

    first = build(160)
    shards = sorted((tmp_path / "out").glob("shards/*/*.tar"))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards}
    keys_before = {p.name: _tar_keys(p) for p in shards}
    second = build(162)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((tmp_path / "out").glob("shards/*/*.tar"))}
    kept = [name for name in before if after.get(name) == before[name]]
    assert 0 < second["written"] < first["shards"] / 2 and len(kept) >= len(before) - second["written"]
    samples = pq.read_table(tmp_path / "store" / "samples" / "samples.parquet")["key"].to_pylist()
    in_shards = [k for p in sorted((tmp_path / "out").glob("shards/*/*.tar")) for k in _tar_keys(p)]
    assert sorted(in_shards) == sorted(samples)  # each sample once
    # a sample exported before stays in its shard; the numbers stay contiguous
    where = {k: name for name, keys in keys_before.items() for k in keys}
    moved = [k for p in sorted((tmp_path / "out").glob("shards/*/*.tar")) for k in _tar_keys(p)
             if k in where and where[k] != p.name]
    assert moved == []
    names = sorted(after)
    assert names == [f"train-{j:05d}.tar" for j in range(len(names))]


def test_layout_keeps_samples_fills_gaps_then_appends_and_moves_the_last_shard_down():
    from pipelines.shard_layout import layout

    assert layout(list("abcdefg"), {}, 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    previous = {"a": 0, "b": 0, "c": 0, "d": 1, "e": 1, "f": 1, "g": 2}
    # "h" and "i" are new, "d" left: shard 1 is rewritten without it, the new ones make shard 3
    assert layout(list("abcefghi"), previous, 3) == [["a", "b", "c"], ["e", "f"], ["g"], ["h", "i"]]
    # every sample of shard 1 left, no new sample: the last shard takes its number (a rename)
    assert layout(list("abcg"), previous, 3) == [["a", "b", "c"], ["g"]]
    # every sample of shard 1 left, new samples: they fill number 1 first
    assert layout(list("abcgxy"), previous, 3) == [["a", "b", "c"], ["x", "y"], ["g"]]
    # less than half full on average: laid out afresh
    assert layout(list("adg"), previous, 3) == [["a", "d", "g"]]


def test_a_shard_planned_under_another_number_is_renamed_not_rendered(tmp_path):
    from pipelines.stages.export import _keep_or_move, item_digest

    shards = tmp_path / "shards" / "train"
    shards.mkdir(parents=True)
    item = {"set": "shards/train@4", "layout": "grid", "samples": "[...]"}
    digest_a, digest_b = item_digest({**item, "shard": 2, "path": "x"}), item_digest({**item, "samples": "[b]"})
    assert digest_a == item_digest({**item, "shard": 0, "path": "y"})  # its number is not what it is made from
    (shards / "train-00002.tar").write_bytes(b"A")
    (shards / "train-00000.tar").write_bytes(b"old")
    inode = (shards / "train-00002.tar").stat().st_ino
    old = {"shards/train/train-00000.tar": digest_b, "shards/train/train-00002.tar": digest_a}
    _keep_or_move(tmp_path, old, {"shards/train/train-00000.tar": digest_a})
    assert sorted(p.name for p in shards.iterdir()) == ["train-00000.tar"]
    assert (shards / "train-00000.tar").read_bytes() == b"A" and (shards / "train-00000.tar").stat().st_ino == inode
