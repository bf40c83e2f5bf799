"""annotate -> sample -> export with every Graph200K generative node, from tiny random models on disk.

The models dir holds tiny random repos in the hub layout, written through the same library
classes the real weights load into: the four generative pipelines (FLUX.1-Fill, FLUX.1-Depth,
SDXL + IP-Adapter, FLUX.1-Redux + FLUX.1-dev), Depth Anything V2 (transformers) for `depth`
and OWLv2 for the grounding boxes. Each annotator runs its real `load()` from there. The SAM
step that turns boxes into `mask` is `sam_boxes` on segment_anything's tiny build, loaded as a
plugin (tests/generative_chain_plugin.py says why). Every model is seeded, so the masks, the depth maps
and the generations are the same on every run.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.pipeline_fixtures import shard_records

TINY = {"resolution": 32, "steps": 2, "max_sequence_length": 32}
ROOT = Path(__file__).resolve().parents[1]
IMAGES = 6


@pytest.fixture(scope="module")
def plugin_ray():
    """A local Ray whose workers can import tests.generative_chain_plugin (as a user's plugin)."""
    import ray

    from pipelines import executor
    from pipelines.params import RayParams

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{saved or ''}"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if ray.is_initialized():
        ray.shutdown()
    executor.init(RayParams(num_cpus=2))
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def write_models_dir(models: Path) -> None:
    """Tiny random repos of every model the chain loads, in the layout of core/weights.py."""
    import torch
    from transformers import AutoModelForDepthEstimation, Owlv2Processor

    from annotators.depth import DEPTH_ANYTHING_V2_REPOS, depth_anything_config
    from annotators.generative import analogous_pairs, depth_edit, fill_edit, random_repos, style, tiny
    from annotators.generative.common import PROMPT_MODEL_DEFAULT
    from annotators.grounding import OWLV2_DEFAULT, GroundingOwlv2

    random_repos.save_random_repos(models, only={fill_edit.FILL_REPO, depth_edit.DEPTH_REPO, style.SDXL_REPO,
                                         style.IP_ADAPTER_REPO, style.FLUX_DEV_REPO, style.REDUX_REPO,
                                         analogous_pairs.KONTEXT_REPO, PROMPT_MODEL_DEFAULT})
    torch.manual_seed(0)
    depth = AutoModelForDepthEstimation.from_config(depth_anything_config("tiny"))
    depth.save_pretrained(models / DEPTH_ANYTHING_V2_REPOS["small"].replace("/", "--"))
    owl = GroundingOwlv2()
    owl.load_random("tiny")
    repo = models / OWLV2_DEFAULT.replace("/", "--")
    owl._model.save_pretrained(repo)
    Owlv2Processor(image_processor=owl._image_processor, tokenizer=owl._tokenizer).save_pretrained(repo)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, plugin_ray):
    from pipelines.cli import run_stages
    from tests.pipeline_fixtures import small_params

    root = tmp_path_factory.mktemp("generative_chain")
    write_models_dir(root / "models")
    cpu = {"num_gpus": 0, "batch_size": 4}
    annotators = {
        "depth_anything_v2": {"params": {"resolution": 56, "min_relative_spread": 0.0}},
        # random OWLv2 scores are near 0.5 everywhere: keep the four best boxes of every image
        "grounding_owlv2": {"params": {"threshold": 0.0, "max_boxes": 4}, **cpu},
        # a tiny random SAM predicts IoU ~0.36: its confidence gate would hold back every mask
        "sam_boxes_tiny_random": {"params": {"min_predicted_iou": 0.0, "min_stability_score": 0.0}, **cpu},
        "fill_edit": {"params": {**TINY, "outputs": 2}, **cpu},  # fewer than Graph200K's 5
        "depth_edit": {"params": TINY, **cpu},
        "instant_style": {"params": {**TINY, "outputs": 2}, **cpu},
        "redux_style": {"params": {**TINY, "outputs": 1}, **cpu},
        # VIRAL's second stream: K = 2 generated (A, A') pairs per image slot, one instruction each
        "analogous_pairs": {"params": {**TINY, "edit_steps": 2, "outputs": 2, "max_new_tokens": 8,
                                       "instructions": ["make it look like winter", "turn day into night"]},
                            **cpu},
    }
    params = small_params(root, count=IMAGES, annotators=annotators, export={"graph200k": True},
                          annotate={"models_dir": str(root / "models"), "device": "cpu",
                                    "plugins": ["tests.generative_chain_plugin"]},
                          # random weights render near-alike images: no de-duplication, no visual filter
                          mine={"kmeans": {"clusters": {"c": 0.5, "k_min": 1}}, "dedup": {"enabled": False},
                                "neighbours": {"min_cos_delta": -1.0},
                                "filters": {"tau_visual": 1.0, "min_task_vector_norm": 0.0}})
    results = run_stages(("ingest", "annotate", "mine", "sample", "export"), params, log=lambda *_: None)
    return params, results


def _rows(params, annotator: str) -> list[dict]:
    from pipelines.store import NodeStore

    paths = sorted(glob.glob(str(NodeStore(params.paths.store).nodes_dir / annotator / "*" / "part-*.parquet")))
    columns = ["image_id", "node_type", "error", "quality"]
    return [r for p in paths for r in pq.read_table(p, columns=columns).to_pylist()]


def test_fewer_outputs_write_exactly_those_nodes(chain):
    params, results = chain
    assert all(r["unfinished_parts"] == 0 for r in results["annotate"])
    expected = {"fill_edit": {"FillEdit", "FillEdit_1"}, "depth_edit": {"DepthEdit"},
                "instant_style": {"InstantStyle", "InstantStyle_ref", "InstantStyle_1", "InstantStyle_ref_1"},
                "redux_style": {"ReduxStyle", "ReduxStyle_ref"}}
    for annotator, nodes in expected.items():
        rows = _rows(params, annotator)
        assert {r["node_type"] for r in rows} == nodes, annotator  # no rows for FillEdit_2..4 and the like
        assert len(rows) == IMAGES * len(nodes) and not any(r["error"] for r in rows), annotator
    from pipelines.store import NodeStore

    catalog = json.loads(NodeStore(params.paths.store).catalog_path.read_text())["nodes"]
    assert "FillEdit_1" in catalog and "FillEdit_2" not in catalog and "ReduxStyle_1" not in catalog
    # the masks of the tiny SAM are real objects: every image got its subject replaced
    masks = [r for r in _rows(params, "sam_boxes_tiny_random") if r["node_type"] == "mask"]
    assert len(masks) == IMAGES and not any(r["error"] or r["quality"] for r in masks)


def test_edit_and_style_families_have_samples_in_shards_and_graph200k(chain):
    params, _ = chain
    out = Path(params.paths.out)
    nodes = json.loads((out / "manifest.json").read_text())["counts"]["nodes"]
    assert all(nodes.get(n) == IMAGES for n in ("FillEdit", "FillEdit_1", "DepthEdit", "InstantStyle",
                                                 "InstantStyle_ref_1", "ReduxStyle", "ReduxStyle_ref")), nodes
    assert "FillEdit_2" not in nodes
    records = shard_records(out)
    families = {}
    for r in records:
        families.setdefault(r["family"], set()).update(c["node"] for c in r["cells"])
    assert {"FillEdit", "DepthEdit"} <= families.get("editing", set())
    assert {"InstantStyle", "ReduxStyle"} <= families.get("style_transfer", set())
    assert "InstantStyle" in families.get("generation_with_style", set())
    assert "InstantStyle" in families.get("style_transfer_with_condition", set())

    rows = [row for split in sorted(glob.glob(str(out / "graph200k/*/data.json")))
            for row in json.loads(Path(split).read_text())]
    assert len(rows) == IMAGES
    for row in rows:
        cond = row["condition"]
        fill = cond["FillEdit"]
        assert len(fill["image_path"]) == len(fill["names"]) == 2 and fill["name"] and fill["description"]
        assert isinstance(cond["DepthEdit"], str) and Path(cond["DepthEdit"]).is_file()
        assert len(cond["InstantStyle"]["image_path"]) == len(cond["InstantStyle"]["style_path"]) == 2
        assert len(cond["ReduxStyle"]["image_path"]) == len(cond["ReduxStyle"]["style_path"]) == 1
        for path in fill["image_path"] + cond["InstantStyle"]["style_path"] + cond["ReduxStyle"]["image_path"]:
            assert Path(path).is_file()


def test_a_style_family_can_carry_each_row_s_own_reference(chain):
    """Every image is stylised in its own drawn style, so a style row needs its reference: in rows of
    [image, <Style>_ref, <Style>] (the style_transfer family; VisualCloze's reader likewise turns a style
    node into the reference, then the stylised image), each reference cell is the one that image was
    stylised with."""
    params, _ = chain
    out = Path(params.paths.out)
    records = shard_records(out)
    rows = [r for r in records if r["family"] == "style_transfer" and r["columns"][0] != "reference"]
    # the condition columns are shuffled per sample (Graph200K); the stylised image stays the target
    assert {(frozenset(r["columns"][:-1]), r["columns"][-1]) for r in rows} == {
        (frozenset({"image", "InstantStyle_ref"}), "InstantStyle"),
        (frozenset({"image", "ReduxStyle_ref"}), "ReduxStyle")}
    for r in rows:
        for row in range(r["rows"]):
            cells = [c for c in r["cells"] if c["row"] == row]
            assert len({c["image_id"] for c in cells}) == 1  # the photo, its reference and its stylisation


def test_generated_analogous_pairs_are_label_paired_into_quadruplets(chain):
    """The analogous pairs' A and A' are two nodes of one image slot (A' names its A in
    `meta.source_node`), keyed by the instruction the editing model applied: the mine stage lists
    them as labelled pairs, the sampler pairs two of one key, and the quadruplets reach the shards."""
    params, results = chain
    mined = results["mine"]
    assert mined["pairs_by_origin"] == {"analogous": 2 * IMAGES} and mined["labelled_pairs"] == 2 * IMAGES, mined
    pairs = pq.read_table(Path(params.paths.store) / "mined" / "labelled_pairs.parquet").to_pylist()
    assert all(p["transform_key"] == f"analogous:{p['instruction']}" for p in pairs)
    assert all(p["source_node"].startswith("analogous_source") and p["edited_node"].startswith("analogous_edit")
               for p in pairs)
    out = Path(params.paths.out)
    records = shard_records(out)
    mined_records = [r for r in records if r["task"] == "mined_edit"]
    assert mined_records and all(c["node"].startswith("analogous_") for r in mined_records for c in r["cells"])
    for r in mined_records:  # both pairs apply one instruction
        assert r["scores"]["pairing"] == "label" and len(set(r["scores"]["instructions"])) == 1
