"""PICO's attention-pivot seed selection on tiny FLUX / Qwen-Image built from configs."""

import numpy as np
import pytest
import torch
from shard_fixtures import write_shards
from training_helpers import tiny_base, tiny_params

from training import flow_matching as fm
from training.backends import make_backend
from training.data import grid_batches
from training.infer import Predictor
from training.seed_selection import (AttentionCapture, default_blocks, generate_selected, pivot_scores, probe,
                                     target_attention_mass, zscore)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_samples=2, per_shard=2, cell=32)


def _predictor(kind, shards, tmp_path):
    params = tiny_params(kind, shards, tmp_path)
    predictor = Predictor(make_backend(params, tiny_base(kind)))
    return predictor, next(grid_batches(params.data, seed=0))


def _count_calls(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


def test_capture_shapes_and_masses_flux(shards, tmp_path):
    predictor, samples = _predictor("flux", shards, tmp_path)
    model = predictor.backend.model
    prep = predictor.prepare(samples)
    sigmas = fm.euler_sigmas(4, 3.0)
    x = predictor.initial(prep, 0)
    plain = predictor.step(prep, x, sigmas[0], sigmas[1])
    with AttentionCapture(model, (0, 1), prep.target_tokens) as cap:
        cap.active, cap.step = True, 0
        captured = predictor.step(prep, x, sigmas[0], sigmas[1])
    assert torch.equal(plain, captured)  # capturing never changes what the block computes
    assert model.transformer_blocks[0].attn.processor.__class__.__name__ == "FluxAttnProcessor"  # restored
    # 2 samples, 2 heads, 4 target tokens (one 32 px cell of a 64 px grid), 8 text + 16 image keys
    assert cap.result.shapes == {0: (2, 2, 4, 24), 1: (2, 2, 4, 24)}
    assert [(b, s) for b, s, _ in cap.result.calls] == [(0, 0), (1, 0)]
    for _, _, m in cap.result.calls:
        assert m.shape == (2, 2) and (m > 0).all() and (m.sum(1) < 1).all()  # the text keys hold the rest


def test_target_attention_mass_by_hand():
    # one head, one target query: scores 0 and ln 3 on keys 0 and 1 -> probabilities 1/4 and 3/4
    q = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).reshape(1, 2, 1, 2)
    k = torch.tensor([[0.0, 0.0], [float(np.log(3.0) * np.sqrt(2)), 0.0]]).reshape(1, 2, 1, 2)
    rows = torch.tensor([[True, False]])
    m = target_attention_mass(q, k, rows, [torch.tensor([[True, False]]), torch.tensor([[False, True]])])
    assert m.shape == (1, 2) and np.allclose(m[0].numpy(), [0.25, 0.75])


def test_captured_queries_and_keys_reproduce_each_blocks_attention(shards, tmp_path):
    """softmax(q k^T / sqrt(d)) v from the captured q, k equals what the block's processor computed."""
    predictor, samples = _predictor("flux", shards, tmp_path)
    model = predictor.backend.model
    prep = predictor.prepare(samples)
    sigmas = fm.euler_sigmas(4, 3.0)
    qk, seen = {}, {}

    class Keep(AttentionCapture):
        def record(self, block, q, k, key_mask):
            qk[block] = (q, k)
            super().record(block, q, k, key_mask)

    double, single = model.transformer_blocks[0].attn, model.single_transformer_blocks[0].attn
    hooks = [double.to_v.register_forward_hook(lambda m, a, o: seen.__setitem__("v0", o)),
             double.add_v_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("v0_txt", o)),
             double.register_forward_hook(lambda m, a, o: seen.__setitem__("out0", o[0])),
             single.to_v.register_forward_hook(lambda m, a, o: seen.__setitem__("v1", o)),
             single.register_forward_hook(lambda m, a, o: seen.__setitem__("out1", o))]
    try:
        with Keep(model, (0, 1), prep.target_tokens) as cap:
            cap.active = True
            predictor.step(prep, predictor.initial(prep, 3), sigmas[0], sigmas[1])
    finally:
        for h in hooks:
            h.remove()

    def attend(q, k, v):
        v = v.unflatten(-1, (-1, q.shape[-1]))
        p = (torch.einsum("blhd,bmhd->bhlm", q, k) / q.shape[-1] ** 0.5).softmax(-1)
        return torch.einsum("bhlm,bmhd->blhd", p, v).flatten(2)

    q, k = qk[0]
    joint = attend(q, k, torch.cat([seen["v0_txt"], seen["v0"]], 1))
    image = double.to_out[0](joint[:, -seen["v0"].shape[1]:])
    assert torch.allclose(image, seen["out0"], atol=1e-5)
    q, k = qk[1]
    assert torch.allclose(attend(q, k, seen["v1"]), seen["out1"], atol=1e-5)


def test_pivot_score_and_selection(shards, tmp_path):
    predictor, samples = _predictor("flux", shards, tmp_path)
    prep = predictor.prepare(samples)
    sigmas = fm.euler_sigmas(5, 3.0)
    d_br, d_vp, rec = probe(predictor, prep, [7, 8, 9, 10], sigmas, blocks=(0, 1))
    assert d_br.shape == d_vp.shape == (2, 4) and len(rec.calls) == 4 * 3 * 2  # candidates x steps x blocks
    assert len({round(v, 9) for v in d_br[0]}) == 4  # each seed attends differently
    res = generate_selected(predictor, samples, seed=7, seeds=4, select="pivot", num_steps=5, blocks=(0, 1))
    for i, choice in enumerate(res.choices):
        expected = zscore(d_br[i]) - zscore(d_vp[i])
        assert np.allclose(choice.scores, expected) and np.allclose(choice.scores, pivot_scores(d_br[i], d_vp[i]))
        assert choice.seed == choice.candidates[int(np.argmax(expected))]
    # the chosen seeds' full runs are exactly plain runs with those seeds (the same batch) ...
    plain = predictor.generate(samples, num_steps=5, seed=[c.seed for c in res.choices])
    assert all(np.array_equal(a, b) for a, b in zip(res.images, plain))
    # ... and, one sample at a time, exactly `generate(seed=chosen)` as `vicl infer --seed` runs it
    one = generate_selected(predictor, samples[:1], seed=7, seeds=4, select="pivot", num_steps=5, blocks=(0, 1))
    assert one.choices[0].seed == res.choices[0].seed
    assert np.array_equal(one.images[0], predictor.generate(samples[:1], num_steps=5, seed=one.choices[0].seed)[0])


def test_probe_adds_exactly_steps_times_candidates_calls(shards, tmp_path):
    predictor, samples = _predictor("flux", shards, tmp_path)
    calls, handle = _count_calls(predictor.backend.model)
    try:
        generate_selected(predictor, samples, seeds=3, select="first", num_steps=4)
        plain = len(calls)
        calls.clear()
        res = generate_selected(predictor, samples, seeds=3, select="pivot", num_steps=4, probe_steps=(0, 1, 2))
        assert plain == 4 and len(calls) == 4 + 3 * 3 and res.probe_calls == 9
        calls.clear()
        rnd = generate_selected(predictor, samples, seeds=3, select="random", num_steps=4)
        assert len(calls) == 4 and all(c.seed in (0, 1, 2) for c in rnd.choices)
    finally:
        handle.remove()


def test_default_blocks_follow_pico_depths():
    from training.models import tiny_flux_transformer

    assert default_blocks(tiny_flux_transformer(num_layers=19, num_single_layers=2)) == (9, 11, 12)
    assert default_blocks(tiny_flux_transformer()) == (1,)  # 2 blocks: relative depth ~0.5-0.6
    with pytest.raises(ValueError, match="out of range"):
        AttentionCapture(tiny_flux_transformer(), (5,), torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["fill", "qwen_image"])
def test_pivot_runs_for_fill_and_qwen(shards, tmp_path, kind):
    predictor, samples = _predictor(kind, shards, tmp_path)
    res = generate_selected(predictor, samples, seeds=2, select="pivot", num_steps=3, probe_steps=(0,))
    assert res.probe_calls == 2 and all(len(c.scores) == 2 for c in res.choices)
    plain = predictor.generate(samples, num_steps=3, seed=[c.seed for c in res.choices])
    assert all(np.array_equal(a, b) for a, b in zip(res.images, plain))


def test_vicl_infer_with_seeds_reports_the_probe_cost(shards, tmp_path):
    from shard_fixtures import photo

    from training.cli import infer, train
    from training.models import save_tiny_repo

    models = tmp_path / "models"
    save_tiny_repo(models / "black-forest-labs--FLUX.1-dev", "flux")
    res = train(tiny_params("flux", shards, tmp_path / "out", max_steps=1, model={"models_dir": str(models)}))
    a, b = photo("astronaut", 32), photo("coffee", 32)
    lines = []
    got = infer(res.adapter_dir, a, 255 - a, b, tmp_path / "b.png", models_dir=str(models), prompt_encoder="random",
                num_steps=3, seed=5, seeds=3, select="pivot", device="cpu", log=lines.append)
    assert got.shape == (32, 32, 3) and len(lines) == 1
    assert "of [5, 6, 7] by pivot" in lines[0] and "9 transformer calls on top of 3" in lines[0]
    chosen = int(lines[0].split()[1])
    plain = infer(res.adapter_dir, a, 255 - a, b, tmp_path / "p.png", models_dir=str(models), prompt_encoder="random",
                  num_steps=3, seed=chosen, device="cpu")
    assert np.array_equal(got, plain)  # `--seeds 3 --select pivot` = `--seed <chosen>`


def test_captured_queries_and_keys_reproduce_qwen_attention(shards, tmp_path):
    predictor, samples = _predictor("qwen_image", shards, tmp_path)
    model = predictor.backend.model
    prep = predictor.prepare(samples)
    sigmas = fm.euler_sigmas(3, 3.0)
    got, seen = {}, {}

    class Keep(AttentionCapture):
        def record(self, block, q, k, key_mask):
            got[block] = (q, k, key_mask)
            super().record(block, q, k, key_mask)

    attn = model.transformer_blocks[0].attn
    hooks = [attn.to_v.register_forward_hook(lambda m, a, o: seen.__setitem__("v", o)),
             attn.add_v_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("v_txt", o)),
             attn.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o[0]))]
    try:
        with Keep(model, (0,), prep.target_tokens) as cap:
            cap.active = True
            predictor.step(prep, predictor.initial(prep, 3), sigmas[0], sigmas[1])
    finally:
        for h in hooks:
            h.remove()
    q, k, mask = got[0]
    v = torch.cat([seen["v_txt"], seen["v"]], 1).unflatten(-1, (-1, q.shape[-1]))
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) / q.shape[-1] ** 0.5
    p = scores.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
    joint = torch.einsum("bhlm,bmhd->blhd", p, v).flatten(2)
    image = attn.to_out[0](joint[:, -seen["v"].shape[1]:])
    assert torch.allclose(image, seen["out"], atol=1e-5)
    assert cap.result.shapes[0][2] == prep.lay["n_target"]  # target queries: the first image's tokens
