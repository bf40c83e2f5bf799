"""End to end on tiny models: updates, learning, save/load, resume, logs, base weights on disk."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load_file

from shard_fixtures import photo, write_shards
from training_helpers import tiny_base, tiny_params

from core.sample_reader import iter_samples
from core.weights import MissingWeightsError
from training import flow_matching as fm
from training.adapters import adapter_state
from training.backends import make_backend
from training.backends.common import collate
from training.cli import infer, infer_grid, load_train_params, train
from training.data import grid_batches
from training.infer import Predictor, triple_sample
from training.models import load_base, save_tiny_repo


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_samples=4, per_shard=2, cell=32)


def _eval_loss(params, base) -> float:
    """Loss on one fixed batch with fixed noise (16 draws): a deterministic learning signal."""
    backend = make_backend(params, base)
    batch = collate(backend.encode(next(grid_batches(params.data, seed=0))))
    with torch.no_grad():
        return float(np.mean([backend.loss(batch, fm.step_generator(99, 0, i)).loss.item() for i in range(16)]))


def test_step_changes_adapters_not_base(shards, tmp_path):
    params = tiny_params("flux", shards, tmp_path, moe={"enabled": True}, max_steps=2, grad_accum=2,
                         gradient_checkpointing=True, checkpoint_every=1, lora={"rank": 4, "alpha": 4})
    base = tiny_base("flux")
    frozen = {n: p.detach().clone() for n, p in base.transformer.named_parameters()}
    train(params, base=base)
    after = dict(base.transformer.named_parameters())
    trainable = {n for n, p in after.items() if p.requires_grad}
    assert any(".lora_B.vicl" in n for n in trainable) and any(n.endswith("router.weight") for n in trainable)
    assert any(n.endswith("ff.net.2.lora_A") for n in trainable)
    for n, p in after.items():  # every original weight is still there, unchanged
        if n not in trainable:
            key = n.replace(".base_layer", "").replace(".base.", ".")
            assert torch.equal(p, frozen.pop(key)), f"base weight {n} changed"
    assert not frozen
    # every adapter tensor (LoRA A/B, MoE experts, routers) moves between step 1 and step 2
    ckpts = tmp_path / "checkpoints"
    one = load_file(str(ckpts / "step-00000001" / "adapter.safetensors"))
    two = load_file(str(ckpts / "step-00000002" / "adapter.safetensors"))
    assert set(one) == set(two) == trainable
    unchanged = [n for n in one if torch.equal(one[n], two[n])]
    assert not unchanged, unchanged
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert {"loss", "flow_loss", "aux_loss", "loss_by_family", "expert_load"} <= set(log[0])
    assert set(log[0]["loss_by_family"]) <= {"gray", "invert"} and 0 < log[0]["aux_loss"] < 4


@pytest.mark.parametrize("kind,moe", [("flux", False), ("qwen_image", True)])
def test_loss_falls_on_fixed_shards(shards, tmp_path, kind, moe):
    params = tiny_params(kind, shards, tmp_path, max_steps=30, lora={"rank": 8, "alpha": 8},
                         optim={"lr": 1e-2}, data={"batch_size": 4}, moe={"enabled": moe})
    base = tiny_base(kind)
    before = _eval_loss(params, base)
    res = train(params, base=base)
    after = _eval_loss(params, base)
    assert after < 0.9 * before, (before, after)
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:10])


def test_resume_continues_the_same_loss_curve(shards, tmp_path):
    # both runs share one latent cache: the interrupted run reads what the full run encoded
    over = dict(max_steps=6, checkpoint_every=3, moe={"enabled": True}, optim={"lr": 1e-2, "warmup_steps": 2},
                data={"shuffle_buffer": 4, "cache_dir": str(tmp_path / "cache")})
    full = train(tiny_params("flux", shards, tmp_path / "full", **over), base=tiny_base("flux"))
    first = train(tiny_params("flux", shards, tmp_path / "cut", **over), base=tiny_base("flux"), max_steps=3)
    assert (tmp_path / "cut" / "checkpoints" / "step-00000003" / "state.json").is_file()
    assert 0 < len(list((tmp_path / "cache").rglob("*.safetensors"))) <= 4  # one file per sample key
    rest = train(tiny_params("flux", shards, tmp_path / "cut", **over), base=tiny_base("flux"))
    assert len(full.losses) == 6 and len(first.losses) == 3 and len(rest.losses) == 3
    np.testing.assert_allclose(first.losses + rest.losses, full.losses, rtol=0, atol=1e-6)
    cut_log = [json.loads(x)["loss"] for x in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(cut_log, full.losses, atol=1e-6)  # one log across the restart
    a = (tmp_path / "full" / "adapter" / "adapter.safetensors").read_bytes()
    assert a == (tmp_path / "cut" / "adapter" / "adapter.safetensors").read_bytes()


@pytest.mark.parametrize("kind", ["flux", "qwen_image"])
def test_save_load_gives_identical_outputs(shards, tmp_path, kind):
    params = tiny_params(kind, shards, tmp_path, max_steps=2, moe={"enabled": True}, optim={"lr": 1e-2})
    base = tiny_base(kind)
    res = train(params, base=base)
    trained = Predictor(make_backend(params, base))
    loaded = Predictor.from_adapter(res.adapter_dir, base=tiny_base(kind), prompt_encoder="random")
    assert adapter_state(loaded.backend.model).keys() == adapter_state(base.transformer).keys()
    for k, v in adapter_state(base.transformer).items():
        assert torch.equal(adapter_state(loaded.backend.model)[k], v)
    samples = next(grid_batches(params.data, seed=0))
    a = trained.generate(samples, num_steps=3, seed=1)
    b = loaded.generate(samples, num_steps=3, seed=1)
    for x, y in zip(a, b):
        assert x.shape == (32, 32, 3) and np.array_equal(x, y)
    plain = Predictor(make_backend(params, tiny_base(kind)))  # the base model without the adapter
    assert not all(np.array_equal(x, y) for x, y in zip(a, plain.generate(samples, num_steps=3, seed=1)))


def test_base_weights_from_models_dir_and_infer(shards, tmp_path):
    models = tmp_path / "models"
    params = tiny_params("flux", shards, tmp_path / "out", max_steps=1,
                         model={"models_dir": str(models)})
    with pytest.raises(MissingWeightsError, match="black-forest-labs/FLUX.1-dev"):
        load_base(params.model)
    save_tiny_repo(models / "black-forest-labs--FLUX.1-dev", "flux")
    base = load_base(params.model)
    assert base.transformer.config.num_layers == 1
    res = train(params)  # loads the same repo itself
    out = tmp_path / "b_prime.png"
    a = photo("astronaut", 40)
    got = infer(res.adapter_dir, a, 255 - a, photo("coffee", 40), out, models_dir=str(models),
                prompt_encoder="random", num_steps=2)
    assert got.shape == (32, 32, 3)  # B rounded down to whole 16 px tokens
    assert np.array_equal(np.asarray(Image.open(out)), got)
    # a shard-format grid (json + grid.png) works the same way
    raw = next(iter_samples(shards))
    cell = infer_grid(res.adapter_dir, dict(raw.record), raw.images["grid.png"], tmp_path / "cell.png",
                      models_dir=str(models), prompt_encoder="random", num_steps=2)
    assert cell.shape == (32, 32, 3) and (tmp_path / "cell.png").is_file()
    # the pretrained prompt encoder needs the text encoders on disk; absent -> the named error
    pretrained = tiny_params("flux", shards, tmp_path / "x", model={"models_dir": str(models),
                                                                     "prompt_encoder": "pretrained"})
    with pytest.raises(MissingWeightsError, match="text_encoder"):
        load_base(pretrained.model)


def test_triple_sample_layout():
    a = photo("chelsea", 50)
    s = triple_sample(a, a, a, cell_size=32)
    assert s.layout() == (2, 2, 32, 32) and s.target_index == 3 and s.target_box() == (32, 32, 64, 64)


def test_params_yaml_and_strict_keys(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"model": {"backend": "qwen_image", "mode": "sequence"},
                                              "moe": {"enabled": True}, "lora": {"rank": 16}}}))
    p = load_train_params(path)
    assert p.model.repo_id() == "Qwen/Qwen-Image-Edit-2511" and p.lora_targets()[0] == "attn.to_q"
    assert p.moe_targets() == ["img_mlp.net.2"] and p.moe.param_ratio == 0.10
    with pytest.raises(ValidationError, match="learning_rate"):
        load_train_params({"optim": {"learning_rate": 1}})
    with pytest.raises(ValidationError, match="does not apply"):
        load_train_params({"model": {"backend": "flux", "mode": "sequence"}})


def test_bf16_base_weights_fp32_adapters(shards, tmp_path):
    params = tiny_params("qwen_image", shards, tmp_path, max_steps=1, mixed_precision="bf16",
                         gradient_checkpointing=True, moe={"enabled": True})
    base = tiny_base("qwen_image")
    res = train(params, base=base)
    frozen = {p.dtype for p in base.transformer.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in base.transformer.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}
    assert np.isfinite(res.losses).all()


def test_infer_runs_in_bf16_on_the_configured_device(shards, tmp_path):
    params = tiny_params("flux", shards, tmp_path, max_steps=1)
    res = train(params, base=tiny_base("flux"))
    fp32 = Predictor.from_adapter(res.adapter_dir, base=tiny_base("flux"), device="cpu")
    bf16 = Predictor.from_adapter(res.adapter_dir, base=tiny_base("flux"), device="cpu", dtype="bf16")
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16 and bf16.device.type == "cpu"
    assert all(p.dtype == torch.float32 for p in bf16.backend.model.parameters() if p.requires_grad)  # adapters
    samples = next(grid_batches(params.data, seed=0))
    a, b = fp32.generate(samples, num_steps=2), bf16.generate(samples, num_steps=2)
    diff = [np.abs(x.astype(int) - y.astype(int)).mean() for x, y in zip(a, b)]
    assert all(d < 8 for d in diff) and any(d > 0 for d in diff)  # bf16 really ran, and agrees closely


def test_random_prompt_encoder_needs_an_explicit_opt_in(monkeypatch, caplog):
    from training.config import ModelParams
    from training.models import tiny_flux_transformer
    from training.prompts import RANDOM_PROMPTS_ENV, RandomPromptEncoder, make_prompt_encoder

    cfg = tiny_flux_transformer().config
    model = ModelParams(prompt_encoder="random")
    monkeypatch.delenv(RANDOM_PROMPTS_ENV, raising=False)
    with pytest.raises(ValueError, match="tests and benchmarks only"):
        make_prompt_encoder(model, cfg)
    with caplog.at_level("WARNING", logger="vicl.training"):
        enc = make_prompt_encoder(model, cfg, allow_random=True)
    assert isinstance(enc, RandomPromptEncoder) and "RANDOM embeddings" in caplog.text
    monkeypatch.setenv(RANDOM_PROMPTS_ENV, "1")
    assert isinstance(make_prompt_encoder(model, cfg), RandomPromptEncoder)


def test_train_step_benchmark_takes_the_mfu_peak_by_device_name():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("train_step", Path(__file__).parents[1] / "benchmarks" / "train_step.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.peak_tflops_for("NVIDIA H100 80GB HBM3") == 989.0  # SXM dense bf16, not 790
    assert bench.peak_tflops_for("NVIDIA H200") == 989.0
    assert bench.peak_tflops_for("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops_for("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops_for("Some Future GPU") is None
    assert bench.resolve_peak("cuda", 500.0) == (500.0, "--peak-tflops")
    assert bench.resolve_peak("cpu", None) == (None, "no GPU")
