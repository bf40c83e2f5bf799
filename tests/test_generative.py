"""Generative annotators on tiny random diffusers pipelines (same classes as the real ones), CPU."""

from __future__ import annotations

import numpy as np
import pytest

import annotators  # noqa: F401 - registers every annotator
from annotators.base import MissingWeightsError, seed_for
from annotators.generative.analogous_pairs import AnalogousPairs
from annotators.generative.depth_edit import DepthEdit
from annotators.generative.fill_edit import FillEdit, NoSubjectError, edit_region
from annotators.generative.style import InstantStyle, ReduxStyle
from pipelines.node_types import NODE_TYPES

TINY = {"resolution": 32, "steps": 2, "max_sequence_length": 32}
RECORD = {"prompt", "seed", "model", "steps", "guidance", "scheduler", "size", "dtype", "pipeline"}


@pytest.fixture(scope="module", autouse=True)
def _threads(one_torch_thread):
    yield


def _image(h, w, seed):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _mask_item(h, w, seed, box):
    mask = np.zeros((h, w, 3), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = (200, 40, 40)
    mask[0:4, 0:4] = (40, 200, 40)  # a second, smaller object
    return {"image": _image(h, w, seed), "image.meta": {}, "mask": mask,
            "mask.meta": {"colours": [[200, 40, 40], [40, 200, 40]], "names": ["dog", "ball"]}}


@pytest.fixture(scope="module")
def fill():
    ann = FillEdit(TINY)
    ann.load_random("tiny")
    return ann


@pytest.fixture(scope="module")
def fill_batch(fill):
    items = [_mask_item(40, 48, 0, (10, 25, 12, 30)), _mask_item(36, 36, 1, (8, 30, 8, 28))]
    return items, fill.annotate(items, ["img-a", "img-b"])


def test_fill_edit_sizes_dtypes_and_background_kept_exactly(fill, fill_batch):
    items, out = fill_batch
    assert set(out[0]) == set(FillEdit.produces) and len(FillEdit.produces) == 5
    for item, nodes in zip(items, out):
        image = item["image"]
        subject = np.all(item["mask"] == (200, 40, 40), axis=2)
        dilate_px = max(1, round(fill.params.dilate * min(image.shape[:2])))
        region, _ = edit_region(subject, dilate_px, fill.params.feather)
        for node in FillEdit.produces:
            arr = nodes[node].array
            assert arr.shape == image.shape and arr.dtype == np.uint8
            assert np.array_equal(arr[~region], image[~region])  # every pixel outside the dilated mask
            assert not np.array_equal(arr[subject], image[subject])  # the subject was regenerated


def test_fill_edit_meta_complete_and_seeded(fill_batch):
    _, out = fill_batch
    first = out[0]["FillEdit"].meta
    assert [o["node"] for o in first["outputs"]] == list(FillEdit.produces)
    names = set()
    for k, node in enumerate(FillEdit.produces):
        meta = out[0][node].meta
        assert RECORD | {"name", "description", "replaced"} <= set(meta)
        assert meta["replaced"] == "dog" and meta["description"] in meta["prompt"]
        assert meta["seed"] == seed_for("img-a", node, 0) and meta["scheduler"] == "FlowMatchEulerDiscreteScheduler"
        names.add(meta["name"])
    assert len(names) == 5  # five different new subjects per image


def test_fill_edit_is_deterministic_and_salted(fill, fill_batch):
    items, out = fill_batch
    again = fill.annotate(items[:1], ["img-a"])[0]  # alone, not in the batch of two
    assert np.array_equal(again["FillEdit_2"].array, out[0]["FillEdit_2"].array)
    salted = FillEdit({**TINY, "seed_salt": 1})
    salted.pipe, salted.prompter, salted.model_id, salted.dtype = fill.pipe, None, fill.model_id, fill.dtype
    other = salted.annotate(items[:1], ["img-a"])[0]
    assert other["FillEdit"].meta["seed"] != out[0]["FillEdit"].meta["seed"]
    assert not np.array_equal(other["FillEdit"].array, out[0]["FillEdit"].array)


def test_one_bad_image_fails_alone(fill, fill_batch):
    """A bad image raises for the whole batch (before any generation), so the annotate stage's
    image-by-image retry fails only that image; the good one comes out as it would have in the batch."""
    items, out = fill_batch
    empty = {**_mask_item(32, 32, 3, (0, 0, 0, 0)), "mask": np.zeros((32, 32, 3), np.uint8)}
    with pytest.raises(NoSubjectError, match="img-empty"):
        fill.annotate([items[0], empty], ["img-a", "img-empty"])
    alone = fill.annotate([items[0]], ["img-a"])[0]
    assert np.array_equal(alone["FillEdit_4"].array, out[0]["FillEdit_4"].array)


def test_depth_edit_regenerates_under_the_depth_map():
    ann = DepthEdit(TINY)
    ann.load_random("tiny")
    image = _image(40, 56, 4)
    depth = np.repeat(np.linspace(0, 255, 56, dtype=np.uint8)[None, :, None], 40, axis=0).repeat(3, axis=2)
    item = {"image": image, "image.meta": {}, "depth": depth, "depth.meta": {},
            "caption.meta": {"text": "a red barn in a field."}}
    a = ann.annotate([item], ["img-d"])[0]["DepthEdit"]
    b = ann.annotate([item], ["img-d"])[0]["DepthEdit"]
    assert a.array.shape == image.shape and a.array.dtype == np.uint8
    assert np.array_equal(a.array, b.array)
    assert RECORD | {"scene"} <= set(a.meta) and a.meta["pipeline"] == "FluxControlPipeline"
    assert "a red barn in a field" in a.meta["prompt"] and a.meta["scene"] in a.meta["prompt"]


@pytest.mark.parametrize("cls", [InstantStyle, ReduxStyle])
def test_styles_write_the_stylised_image_and_its_reference(cls, tmp_path):
    from PIL import Image

    bank = tmp_path / "bank"
    bank.mkdir()
    Image.fromarray(_image(24, 24, 9)).save(bank / "swirls.png")
    ann = cls({**TINY, "outputs": 3, "style_bank": None})
    ann.load_random("tiny")
    image = _image(36, 44, 5)
    out = ann.annotate([{"image": image, "image.meta": {}}], ["img-s"])[0]
    assert set(out) == set(cls.produces) and len(out) == 6
    base = cls.base_node
    for k, (node, ref) in enumerate(zip(cls.produces[::2], cls.produces[1::2])):
        assert out[node].array.shape == image.shape == out[ref].array.shape
        assert out[node].array.dtype == np.uint8 and out[ref].array.dtype == np.uint8
        meta = out[node].meta
        assert RECORD | {"style", "style_source", "reference_node"} <= set(meta) and meta["reference_node"] == ref
        assert out[ref].meta["stylised_node"] == node and out[ref].meta["style_source"] == "generated"
    assert len({out[n].meta["style"] for n in cls.produces[::2]}) == 3
    assert [o["node"] for o in out[base].meta["outputs"]] == list(cls.produces[::2])
    # a style bank gives the reference from the folder instead of rendering one
    banked = cls({**TINY, "outputs": 3, "style_bank": str(bank)})
    banked.pipe, banked.prompter, banked.model_id, banked.dtype = ann.pipe, None, ann.model_id, ann.dtype
    banked._bank = [bank / "swirls.png"]
    if cls is ReduxStyle:
        banked.prior = ann.prior
    else:
        banked.t2i = ann.t2i
    ref = banked.annotate([{"image": image, "image.meta": {}}], ["img-s"])[0][f"{base}_ref"]
    assert ref.meta["style_source"].endswith("swirls.png") and ref.meta["style"] == "swirls"


def test_analogous_pairs_share_their_instruction():
    ann = AnalogousPairs({**TINY, "edit_steps": 2, "max_new_tokens": 12, "instructions": ["make it night"]})
    ann.load_random("tiny")
    out = ann.annotate([{"image": _image(20, 20, 6), "image.meta": {}}], ["slot-1"])[0]
    assert set(out) == set(AnalogousPairs.produces) == {"analogous_source", "analogous_edit", "analogous_source_1",
                                                         "analogous_edit_1"}
    for k in ("", "_1"):
        src, edit = out[f"analogous_source{k}"], out[f"analogous_edit{k}"]
        assert src.array.shape == edit.array.shape == (32, 32, 3) and src.array.dtype == np.uint8
        assert src.meta["instruction"] == edit.meta["instruction"] == "make it night"
        assert edit.meta["source_node"] == f"analogous_source{k}" and edit.meta["pipeline"] == "FluxKontextPipeline"
        assert RECORD | {"scene", "pair_id"} <= set(edit.meta) and src.meta["scene"] == src.meta["prompt"]
    assert out["analogous_source"].meta["scene"] != out["analogous_source_1"].meta["scene"]


@pytest.mark.parametrize("cls", [FillEdit, DepthEdit, InstantStyle, ReduxStyle, AnalogousPairs])
def test_missing_weights_name_the_repo(cls, tmp_path):
    ann = cls({}, models_dir=tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        ann.load()
    assert any(spec.repo_id in str(err.value) for spec in cls.weights)


def test_load_reads_a_pipeline_from_the_models_dir(fill, fill_batch, tmp_path):
    """load() takes the diffusers folder layout from annotate.models_dir: same weights, same bytes."""
    fill.pipe.save_pretrained(tmp_path / "black-forest-labs--FLUX.1-Fill-dev")
    disk = FillEdit(TINY, models_dir=tmp_path)
    disk.load()
    items, out = fill_batch
    again = disk.annotate(items[:1], ["img-a"])[0]
    assert np.array_equal(again["FillEdit"].array, out[0]["FillEdit"].array)
    assert again["FillEdit"].meta["model"] == "black-forest-labs/FLUX.1-Fill-dev"


def test_nodes_registered_and_only_the_first_output_feeds_tasks():
    for cls in (FillEdit, DepthEdit, InstantStyle, ReduxStyle, AnalogousPairs):
        for node in cls.produces:
            assert node in NODE_TYPES, node
    assert NODE_TYPES["FillEdit"].group == "edit" and NODE_TYPES["FillEdit_4"].group == "generative_variant"
    assert NODE_TYPES["InstantStyle_ref"].group == "generative_variant"
    assert NODE_TYPES["analogous_edit"].group == "synthetic_pair"


def test_fewer_outputs_wait_for_the_stage():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="outputs"):
        FillEdit.Params(outputs=9)
    with pytest.raises(ValidationError, match="produces_for"):
        FillEdit.Params(outputs=2)
    assert FillEdit.produces_for(FillEdit.Params()) == FillEdit.produces


def test_chain_exports_style_samples_from_tiny_pipelines_on_disk(tmp_path_factory, ray_local):
    """annotate -> sample -> export with the style annotators loaded by `load()` from a models dir of
    tiny random repos: the style families get samples in the shards and nodes in the Graph200K export."""
    import glob
    import json
    from pathlib import Path

    import webdataset as wds

    from annotators.generative import style, tiny
    from pipelines.cli import run_stages
    from tests.pipeline_fixtures import small_params

    root = tmp_path_factory.mktemp("generative_chain")
    tiny.save_random_repos(root / "models", only={style.SDXL_REPO, style.IP_ADAPTER_REPO, style.FLUX_DEV_REPO,
                                                  style.REDUX_REPO})
    gen = {"params": {**TINY, "outputs": 3}, "num_gpus": 0, "batch_size": 4}
    params = small_params(root, count=6, annotators={"canny": {}, "instant_style": gen, "redux_style": gen},
                          annotate={"models_dir": str(root / "models"), "device": "cpu"},
                          export={"graph200k": True})
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    out = Path(params.paths.out)
    nodes = json.loads((out / "manifest.json").read_text())["counts"]["nodes"]
    assert nodes["InstantStyle"] == nodes["ReduxStyle"] == nodes["InstantStyle_ref_2"] == 6
    records = [json.loads(s["json"]) for s in wds.WebDataset(sorted(glob.glob(str(out / "shards/*/*.tar"))),
                                                             shardshuffle=False)]
    families = {r["family"] for r in records}
    assert {"style_transfer", "generation_with_style"} <= families
    cells = {c["node"] for r in records for c in r["cells"]}
    assert {"InstantStyle", "ReduxStyle"} <= cells
    rows = [row for split in glob.glob(str(out / "graph200k/*/data.json"))
            for row in json.loads(Path(split).read_text())]
    assert any("InstantStyle" in json.dumps(row) for row in rows)
