"""Dense-map annotators (depth, normals, model edges) on tiny random-weight builds of the real classes."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import annotators.depth as depth
import annotators.edges_models  # noqa: F401 - registers the edge annotators
import annotators.normals  # noqa: F401
from core.weights import MissingWeightsError
from annotators.registry import get
from core.node_types import get_node_type

# (annotator, node, channels, params for a fast tiny run)
CASES = [
    ("depth_anything_v2", "depth", 1, {"resolution": 56}),
    ("depth_midas", "depth", 1, {"resolution": 64}),
    ("depth_zoe", "depth", 1, {"resolution": 64}),
    ("normal_bae", "normal", 3, {"resolution": 64}),
    ("hed", "hed", 1, {"resolution": 64}),
    ("pidinet", "pidinet", 1, {"resolution": 64}),
    ("lineart", "lineart", 1, {"resolution": 64}),
    ("lineart_anime", "lineart_anime", 1, {"resolution": 64}),
    ("mlsd", "mlsd", 1, {"resolution": 128}),
    ("teed", "teed", 1, {"resolution": 64}),
]
IDS = [c[0] for c in CASES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    # Two real photos of different sizes and aspect ratios (odd sides on purpose).
    return [data.astronaut()[:101, :131].copy(), data.chelsea()[:97, :77].copy()]


@pytest.fixture(scope="module")
def built():
    cache: dict[str, object] = {}

    def build(name: str, params: dict):
        if name not in cache:
            ann = get(name)(params)
            ann.load_random("tiny")
            cache[name] = ann
        return cache[name]

    return build


@pytest.mark.parametrize("name,node,channels,params", CASES, ids=IDS)
def test_maps_have_source_size_dtype_node_and_are_deterministic(built, photos, name, node, channels, params):
    ann = built(name, params)
    assert node in ann.produces and get_node_type(node).group == "condition"
    out = ann.annotate([{"image": p} for p in photos], ["a", "b"])
    assert len(out) == 2
    for photo, produced in zip(photos, out):
        assert set(produced) == {node}
        arr = produced[node].array
        assert arr.dtype == np.uint8
        expected = photo.shape[:2] if channels == 1 else photo.shape[:2] + (3,)
        assert arr.shape == expected
    # Same input, same output (the first photo again, alone in its batch).
    again = ann.annotate([{"image": photos[0]}], ["a"])[0][node]
    np.testing.assert_array_equal(out[0][node].array, again.array)
    assert out[0][node].meta == again.meta


@pytest.mark.parametrize("name", IDS)
def test_load_without_weights_names_the_repo(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    ann = get(name)(models_dir=tmp_path / "models")
    with pytest.raises(MissingWeightsError) as err:
        ann.load()
    spec = ann.weights[0]
    assert spec.repo_id in str(err.value)
    if spec.filename:
        assert spec.filename in str(err.value)


def test_random_builds_are_reproducible_across_instances(photos):
    a, b = depth.DepthAnythingV2({"resolution": 56}), depth.DepthAnythingV2({"resolution": 56})
    a.load_random("tiny")
    b.load_random("tiny")
    ra = a.annotate([{"image": photos[0]}], ["x"])[0]["depth"].array
    rb = b.annotate([{"image": photos[0]}], ["x"])[0]["depth"].array
    np.testing.assert_array_equal(ra, rb)


def test_depth_anything_batch_equals_one_by_one(built, photos):
    ann = built("depth_anything_v2", {"resolution": 56})
    # Three images, two shapes: the first and third share a batch.
    batch = ann.annotate([{"image": photos[0]}, {"image": photos[1]}, {"image": photos[0]}], ["a", "b", "c"])
    singles = [ann.annotate([{"image": p}], ["s"])[0]["depth"].array for p in (photos[0], photos[1])]
    np.testing.assert_array_equal(batch[0]["depth"].array, singles[0])
    np.testing.assert_array_equal(batch[1]["depth"].array, singles[1])
    np.testing.assert_array_equal(batch[2]["depth"].array, singles[0])
    meta = batch[0]["depth"].meta
    assert meta["near"] == "bright" and meta["bits"] == 8
    assert meta["model"] == "depth-anything/Depth-Anything-V2-Small-hf"


def test_depth_anything_16_bit_and_variant_repo(photos):
    ann = depth.DepthAnythingV2({"resolution": 56, "bits": 16, "variant": "large"})
    assert ann.weight_spec.repo_id == "depth-anything/Depth-Anything-V2-Large-hf"
    ann.load_random("tiny")
    arr = ann.annotate([{"image": photos[1]}], ["a"])[0]["depth"].array
    assert arr.dtype == np.uint16 and arr.shape == photos[1].shape[:2]
    assert arr.min() == 0 and arr.max() == 65535


def test_depth_anything_full_sizes_match_the_published_parameter_counts():
    # Config only (no weights): the published sizes are 24.8M / 97.5M / 335.3M parameters.
    import torch
    from transformers import AutoModelForDepthEstimation

    for variant, millions in {"small": 24.8, "base": 97.5, "large": 335.3}.items():
        with torch.device("meta"):
            model = AutoModelForDepthEstimation.from_config(depth.depth_anything_config(variant))
        assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) < 0.1, variant


def test_normalise_depth_maps_near_to_bright():
    disparity = np.array([[0.0, 1.0], [2.0, 4.0]])  # larger disparity = nearer
    assert depth.normalise_depth(disparity).tolist() == [[0, 64], [128, 255]]
    assert depth.normalise_depth(disparity, 16).max() == 65535
    assert depth.normalise_depth(np.full((2, 2), 3.0)).tolist() == [[0, 0], [0, 0]]


def test_unknown_param_is_rejected():
    with pytest.raises(Exception, match="nonsense"):
        get("hed")({"nonsense": 1})


def test_models_catalog_lists_and_checks_weights(tmp_path, monkeypatch):
    import annotators.pose  # noqa: F401 - registers openpose
    from annotators import models_catalog

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    entries = models_catalog.catalog()
    pairs = {(name, spec.repo_id, spec.filename) for name, spec in entries}
    assert ("hed", "lllyasviel/Annotators", "ControlNetHED.pth") in pairs
    assert ("depth_anything_v2", "depth-anything/Depth-Anything-V2-Small-hf", None) in pairs
    assert ("openpose", "lllyasviel/Annotators", "body_pose_model.pth") in pairs
    assert [n for n, _ in entries] == sorted(n for n, _ in entries)

    models = tmp_path / "models"
    (models / "lllyasviel--Annotators").mkdir(parents=True)
    (models / "lllyasviel--Annotators" / "ControlNetHED.pth").write_bytes(b"x")
    (models / "depth-anything--Depth-Anything-V2-Small-hf").mkdir()
    (models / "depth-anything--Depth-Anything-V2-Small-hf" / "config.json").write_text("{}")
    status = {(s.repo_id, s.filename): present for s, present in models_catalog.check(models)}
    assert status[("lllyasviel/Annotators", "ControlNetHED.pth")] is True
    assert status[("depth-anything/Depth-Anything-V2-Small-hf", None)] is True
    assert status[("lllyasviel/Annotators", "table5_pidinet.pth")] is False
    assert status[("depth-anything/Depth-Anything-V2-Large-hf", None)] is False
    assert len(status) == len(models_catalog.check(models))  # each spec once

    files = {s.filename for s in models_catalog.specs_for_repo("lllyasviel/Annotators")}
    assert {"ControlNetHED.pth", "sk_model.pth", "sk_model2.pth", "scannet.pt", "ZoeD_M12_N.pt"} <= files
    assert models_catalog.specs_for_repo("nobody/nothing") == []
    table = models_catalog.format_table(models_catalog.check(models, ["hed", "pidinet"]))
    assert table.splitlines()[0].startswith("ok") and "missing" in table.splitlines()[1]
