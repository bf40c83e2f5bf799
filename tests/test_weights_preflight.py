"""Missing model weights are found before any work starts, all of them at once, each with the
command that fetches it (issue 23, item 6); the trainer names its own params key."""

from __future__ import annotations

import pytest

from pipelines.models_cli import WeightsMissing, missing_weights, require_weights
from pipelines.params import parse_params


def _params(models_dir, **annotators):
    return parse_params({"annotate": {"models_dir": str(models_dir), "annotators": annotators}})


def test_every_missing_weight_is_listed_with_its_fetch_command(tmp_path):
    params = _params(tmp_path / "models", canny={}, depth_anything_v2={"params": {"variant": "large"}},
                     sam_auto={"params": {"model_type": "vit_b"}}, semantic_seg={"params": {"repo_id": "me/my-segformer"}})
    with pytest.raises(WeightsMissing) as err:
        require_weights(params)
    text = str(err.value)
    # the configured variant, model type and repository, not the class defaults; weight-free canny absent
    assert "depth-anything/Depth-Anything-V2-Large-hf" in text and "Small" not in text
    assert "sam_vit_b_01ec64.pth" in text and "sam_vit_h" not in text
    assert "me/my-segformer" in text and "nvidia/segformer" not in text
    assert "canny" not in text and text.count("vicl models fetch ") >= 3
    assert "annotate.models_dir" in text


def test_weights_on_disk_pass_the_check(tmp_path):
    models = tmp_path / "models"
    (models / "depth-anything--Depth-Anything-V2-Large-hf").mkdir(parents=True)
    (models / "depth-anything--Depth-Anything-V2-Large-hf" / "config.json").write_text("{}")
    (models / "sam_vit_b_01ec64.pth").write_bytes(b"\0")  # found where sam's load() looks first
    params = _params(models, canny={}, depth_anything_v2={"params": {"variant": "large"}},
                     sam_auto={"params": {"model_type": "vit_b"}})
    assert missing_weights(params) == []
    require_weights(params)


def test_generative_nodes_need_the_prompt_model_only_when_prompts_come_from_it(tmp_path):
    names = lambda p: {e.spec.repo_id for _, e in missing_weights(p)}  # noqa: E731
    listed = names(_params(tmp_path, fill_edit={}))
    assert "black-forest-labs/FLUX.1-Fill-dev" in listed and not any("Qwen" in r for r in listed)
    assert any("Qwen" in r for r in names(_params(tmp_path, fill_edit={"params": {"prompt_source": "model"}})))


def test_the_trainer_names_its_own_models_dir_key(tmp_path):
    from core.weights import MissingWeightsError
    from training.base_weights import repo_dir

    with pytest.raises(MissingWeightsError, match=r"train\.model\.models_dir") as err:
        repo_dir("black-forest-labs/FLUX.1-dev", tmp_path, ("transformer",))
    assert "annotate.models_dir" not in str(err.value)


def test_validate_and_run_stop_before_any_work_listing_every_missing_weight(tmp_path, capsys):
    from pipelines.cli import main
    from tests.pipeline_fixtures import small_params, write_params

    params = small_params(tmp_path, count=4, annotators={"canny": {}, "depth_anything_v2": {},
                                                         "sam_auto": {"params": {"model_type": "vit_b"}}},
                          annotate={"models_dir": str(tmp_path / "models")})
    path = write_params(tmp_path, params)
    for command in ("validate", "run", "annotate"):
        assert main([command, "--params", path]) == 2, command
        err = capsys.readouterr().err
        assert "depth_anything_v2" in err and "sam_vit_b_01ec64.pth" in err and "Traceback" not in err
        assert err.count("vicl models fetch ") >= 2
    assert not (tmp_path / "store" / "images").exists()  # `run` stopped before ingest: nothing written


def test_models_fetch_offline_is_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    from pipelines.cli import main
    from tests.pipeline_fixtures import small_params, write_params

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    path = write_params(tmp_path, small_params(tmp_path, count=4))
    assert main(["models", "fetch", "depth_anything_v2", "--params", path, "--models-dir", str(tmp_path / "m")]) == 69
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert main(["models", "fetch", "no/such-thing", "--params", path]) == 2
    assert "neither a known repository" in capsys.readouterr().err
