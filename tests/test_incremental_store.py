"""The store grows with the corpus: new inputs are new parts, and only missing outputs are computed."""

import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import run_stages
from pipelines.sources import embedded_refs, render_embedded
from pipelines.store import NodeStore
from tests.pipeline_fixtures import shard_records, small_params

ANNOTATORS = {"canny": {}, "grayscale": {}, "degrade_GaussianNoise": {}}


def write_photos(folder: Path, first: int, count: int) -> list[Path]:
    """Distinct real photo crops as PNG files (the embedded crops, saved as a user's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, ref in enumerate(embedded_refs(first + count, 96)[first:]):
        path = folder / f"photo_{first + k:04d}.png"
        path.write_bytes(render_embedded(ref))
        paths.append(path)
    return paths


def node_parts(store: NodeStore) -> dict[str, bytes]:
    return {str(p.relative_to(store.root)): p.read_bytes()
            for p in sorted([*store.images_dir.glob("part-*.parquet"), *store.nodes_dir.glob("*/*/part-*.parquet")])}


def computed(results) -> dict[str, int]:
    return {r["annotator"]: r["computed_parts"] for r in results["annotate"]}


@pytest.fixture(scope="module")
def grown(tmp_path_factory, ray_local):
    """A folder of 16 photos built, then 4 more added (25 %: one new part of part_size 4)."""
    root = tmp_path_factory.mktemp("grow")
    photos = root / "photos"
    write_photos(photos, 0, 16)
    params = small_params(root, annotators=ANNOTATORS, sources=[{"kind": "folder", "path": str(photos)}],
                          ingest={"part_size": 4}, mine={"enabled": False})
    first = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    store = NodeStore(params.paths.store)
    before = node_parts(store)
    write_photos(photos, 16, 4)
    second = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    return root, params, store, first, second, before


def test_adding_images_computes_only_their_part_and_keeps_every_existing_file(grown):
    root, params, store, first, second, before = grown
    assert first["ingest"]["new_parts"] == 4 and second["ingest"]["new_parts"] == 1
    assert set(computed(first).values()) == {4} and set(computed(second).values()) == {1}
    after = node_parts(store)
    assert {k: after[k] for k in before} == before  # every existing part byte-identical
    assert len(after) == len(before) + 1 + len(computed(second))  # one image part + one per annotator
    assert second["ingest"]["ok"] == 20


def test_nothing_changed_means_no_stage_does_work(grown):
    root, params, store, *_ = grown
    again = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    assert again["ingest"]["new_parts"] == 0 and set(computed(again).values()) == {0}
    assert again["sample"]["up_to_date"] is True and again["export"]["written"] == 0


def test_removing_an_input_drops_it_from_samples_without_recomputing(grown):
    root, params, store, *_ = grown
    photos = root / "photos"
    victim = photos / "photo_0003.png"
    from core.images import content_id

    victim_id = content_id(victim.read_bytes())
    before = node_parts(store)
    victim.unlink()
    result = run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    assert result["ingest"]["new_parts"] == 0 and set(computed(result).values()) == {0}
    assert node_parts(store) == before  # nothing recomputed or rewritten: the row is tombstoned
    assert result["ingest"]["ok"] == 19
    samples = pq.read_table(store.samples_path).to_pylist()
    assert samples and all(victim_id not in s["cell_ids"] for s in samples)
    splits = pq.read_table(store.samples_dir / "splits.parquet")["image_id"].to_pylist()
    assert victim_id not in splits and len(splits) == 19
    out = Path(params.paths.out)
    records = shard_records(out)
    assert records and all(c["image_id"] != victim_id for r in records for c in r["cells"])
    victim.write_bytes(render_embedded(embedded_refs(4, 96)[3]))  # back, with a new mtime: a new input
    back = run_stages(("ingest", "annotate"), params, log=lambda *_: None)
    assert back["ingest"]["new_parts"] == 1 and back["ingest"]["ok"] == 20 and set(computed(back).values()) == {1}


def test_changing_one_fused_annotators_params_computes_only_it(grown):
    root, params, store, *_ = grown
    changed = params.model_copy(deep=True)
    changed.annotate.annotators["canny"].params = {"low_threshold": 50, "high_threshold": 150}
    result = run_stages(("ingest", "annotate"), changed, log=lambda *_: None)
    work = computed(result)
    assert work.pop("canny") == 6 and set(work.values()) == {0}  # the other fused members are untouched


def test_a_changed_annotator_code_digest_gives_a_new_output_folder(tmp_path):
    """The output key covers the annotator's module source: editing the code recomputes it."""
    plugin = tmp_path / "digest_plugin.py"
    body = ("from annotators.base import Annotator, NodeOutput\n"
            "from annotators.registry import register\n"
            "@register\n"
            "class DigestProbe(Annotator):\n"
            "    name = 'digest_probe'\n"
            "    produces = ('foreground_mask',)\n"
            "    def annotate(self, inputs, image_ids):\n"
            "        return [{'foreground_mask': NodeOutput(x['image'][..., 0])} for x in inputs]\n")
    plugin.write_text(body)
    sys.path.insert(0, str(tmp_path))
    try:
        from pipelines.annotation_plan import plan

        params = small_params(tmp_path, annotators={"digest_probe": {}, "canny": {}},
                              annotate={"plugins": ["digest_plugin"]})
        store = NodeStore(params.paths.store)
        keys = {r.name: r.key for r in plan(params, store)}
        plugin.write_text(body.replace("[..., 0]", "[..., 1]"))  # a "bug fix": other channel
        again = {r.name: r.key for r in plan(params, store)}
        assert again["digest_probe"] != keys["digest_probe"] and again["canny"] == keys["canny"]
        params.annotate.code_digest = False
        assert plan(params, store)[0].code_digest == "off"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("digest_plugin", None)


def test_output_files_follow_the_umask(grown):
    root, params, store, *_ = grown
    for path in [*store.images_dir.glob("part-*.parquet"), *Path(params.paths.out).glob("shards/*/*.tar"),
                 Path(params.paths.out) / "manifest.json"]:
        mask = os.umask(0)
        os.umask(mask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
