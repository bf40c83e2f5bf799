"""`vicl models`: what is needed, what is missing (exit 1), and the error for an unknown name."""

import pytest

from pipelines.cli import main


def test_check_all_reports_missing_weights_and_fails(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(f"annotate:\n  models_dir: {tmp_path / 'models'}\n")
    assert main(["models", "check", "--all", "--params", str(tmp_path / "params.yaml")]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "Qwen/Qwen-Image-Edit-2511" not in out  # check covers annotators, not the trainer
    assert "facebook/mask2former-swin-large-coco-panoptic" in out


def test_configured_weight_free_profile_needs_nothing(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("annotate:\n  annotators:\n    canny: {}\n")
    assert main(["models", "check", "--params", str(tmp_path / "params.yaml")]) == 0
    assert "need no weights" in capsys.readouterr().out


def test_list_all_includes_trainer_bases(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("{}\n")
    assert main(["models", "list", "--all", "--params", str(tmp_path / "params.yaml")]) == 0
    assert "Qwen/Qwen-Image-Edit-2511" in capsys.readouterr().out


def test_fetch_unknown_name_is_a_clear_error():
    from pipelines.models_cli import models_fetch

    with pytest.raises(KeyError, match="neither a known repository nor an annotator"):
        models_fetch("nobody/nothing", "models")


def test_list_all_names_every_generative_pipeline_repo(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("{}\n")
    assert main(["models", "list", "--all", "--params", str(tmp_path / "params.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for annotator, repo in [("fill_edit", "black-forest-labs/FLUX.1-Fill-dev"),
                            ("depth_edit", "black-forest-labs/FLUX.1-Depth-dev"),
                            ("instant_style", "stabilityai/stable-diffusion-xl-base-1.0"),
                            ("instant_style", "h94/IP-Adapter"),
                            ("redux_style", "black-forest-labs/FLUX.1-Redux-dev"),
                            ("redux_style", "black-forest-labs/FLUX.1-dev"),
                            ("analogous_pairs", "black-forest-labs/FLUX.1-Kontext-dev"),
                            ("analogous_pairs", "Qwen/Qwen2.5-1.5B-Instruct")]:
        assert any(line.split()[:2] == [annotator, repo] for line in lines), (annotator, repo)
