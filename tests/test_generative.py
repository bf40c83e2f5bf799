"""Generative annotators on tiny random diffusers pipelines (same classes as the real ones), CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import annotators  # noqa: F401 - registers every annotator
from annotators.base import seed_for
from core.weights import MissingWeightsError
from annotators.generative.analogous_pairs import AnalogousPairs
from annotators.generative.depth_edit import DepthEdit
from annotators.generative.fill_edit import FillEdit, NoSubjectError, edit_region
from annotators.generative.style import InstantStyle, ReduxStyle
from core.node_types import NODE_TYPES

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


def test_node_registry_knows_every_output_without_the_generative_package():
    """core/node_types.py lists the further outputs itself (same entries as annotators.generative.nodes),
    so the sampler, the export and `vicl tasks` know them in a process that never imports diffusers."""
    import json
    import subprocess
    import sys

    from annotators.generative.nodes import variant_node_types

    code = ("import sys, json; from core.node_types import NODE_TYPES, axes_of; "
            "assert 'annotators.generative' not in sys.modules; "
            "print(json.dumps({n: [t.group, t.description, list(axes_of(n))] for n, t in NODE_TYPES.items()}))")
    listed = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                       cwd=Path(__file__).resolve().parents[1]).stdout)
    for name, group, description in variant_node_types():
        assert listed[name][:2] == [group, description], name
    assert listed["FillEdit_3"][2] == ["object", "regional"] and listed["analogous_edit_1"][2] == ["object", "global"]


def test_fewer_outputs_produce_fewer_nodes(fill, fill_batch):
    """`outputs` below Graph200K's count: `produces_for(params)` names the nodes the stage writes, and
    annotate returns exactly those (the chain test checks the stage's rows, tests/test_generative_chain.py)."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="outputs"):
        FillEdit.Params(outputs=9)
    assert FillEdit.produces_for(FillEdit.Params()) == FillEdit.produces
    assert FillEdit.produces_for(FillEdit.Params(outputs=2)) == ("FillEdit", "FillEdit_1")
    assert InstantStyle.produces_for(InstantStyle.Params(outputs=1)) == ("InstantStyle", "InstantStyle_ref")
    assert AnalogousPairs.produces_for(AnalogousPairs.Params(outputs=1)) == ("analogous_source", "analogous_edit")
    two = FillEdit({**TINY, "outputs": 2})
    two.pipe, two.prompter, two.model_id, two.dtype = fill.pipe, None, fill.model_id, fill.dtype
    items, out = fill_batch
    got = two.annotate(items[:1], ["img-a"])[0]
    assert set(got) == {"FillEdit", "FillEdit_1"}
    assert [o["node"] for o in got["FillEdit"].meta["outputs"]] == ["FillEdit", "FillEdit_1"]
    assert np.array_equal(got["FillEdit_1"].array, out[0]["FillEdit_1"].array)  # same seed, same bytes


def test_configured_outputs_decide_the_produced_nodes(tmp_path):
    """The params checks and the plan ask `produces_for`: a task path on a node the params leave out is refused."""
    from pipelines.annotation_plan import plan
    from pipelines.params import ParamsError, produced_nodes
    from pipelines.store import NodeStore
    from tests.pipeline_fixtures import small_params

    gen = {"params": {**TINY, "outputs": 2}, "num_gpus": 0}
    params = small_params(tmp_path, count=2, annotators={"canny": {}, "instant_style": gen})
    produced = produced_nodes(params)
    assert "InstantStyle_ref_1" in produced and "InstantStyle_2" not in produced
    run = next(r for r in plan(params, NodeStore(params.paths.store)) if r.name == "instant_style")
    assert run.produces == ("InstantStyle", "InstantStyle_ref", "InstantStyle_1", "InstantStyle_ref_1")
    with pytest.raises(ParamsError, match="InstantStyle_2"):
        small_params(tmp_path, count=2, annotators={"canny": {}, "instant_style": gen},
                     sample={"tasks": [{"name": "styled", "path": ["canny", "InstantStyle_2"]}]})


def test_use_caption_reads_the_caption_node(fill, fill_batch, tmp_path):
    """`use_caption` adds the caption node to what the annotator reads: the params check wants its
    producer, the plan reads its parts, and every prompt carries the caption's text."""
    from annotators.generative.common import MissingCaptionError
    from pipelines.annotation_plan import plan
    from pipelines.params import ParamsError
    from pipelines.store import NodeStore
    from tests.pipeline_fixtures import small_params

    assert FillEdit.requires_for(FillEdit.Params()) == ("image", "mask")
    assert FillEdit.requires_for(FillEdit.Params(use_caption=True)) == ("image", "mask", "caption.meta")
    assert AnalogousPairs.requires_for(AnalogousPairs.Params()) == ("image",)  # its pixels are not used
    gen = {"params": {**TINY, "outputs": 1, "use_caption": True}, "num_gpus": 0}
    with pytest.raises(ParamsError, match="requires node type 'caption'"):
        small_params(tmp_path, count=2, annotators={"instant_style": gen})
    params = small_params(tmp_path, count=2, annotators={"caption_qwen_vl": {}, "instant_style": gen})
    order = plan(params, NodeStore(params.paths.store))
    names = [r.name for r in order]
    assert order[names.index("instant_style")].requires == ("image", "caption")
    assert names.index("caption_qwen_vl") < names.index("instant_style")  # the caption is made first
    captioned = FillEdit({**TINY, "outputs": 1, "use_caption": True})
    captioned.pipe, captioned.prompter, captioned.model_id, captioned.dtype = fill.pipe, None, fill.model_id, fill.dtype
    items, _ = fill_batch
    with pytest.raises(MissingCaptionError, match="img-a"):
        captioned.annotate(items[:1], ["img-a"])
    out = captioned.annotate([{**items[0], "caption.meta": {"text": "a dog on a lawn."}}], ["img-a"])[0]
    assert "a dog on a lawn" in out["FillEdit"].meta["prompt"]
