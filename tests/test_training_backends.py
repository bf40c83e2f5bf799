"""Flow-matching objective per backend: what is noised, where loss and gradients live."""


import pytest
import torch

from shard_fixtures import write_shards
from training_helpers import tiny_base, tiny_params

from training import flow_matching as fm
from training.backends import make_backend
from training.backends.common import collate, pack, token_box_mask, unpack
from training.backends.flux import image_ids, mask_tokens
from training.data import grid_batches
from training.modulation import install_per_token_modulation


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_samples=4, per_shard=4, cell=32)


def _batch(kind, shards, tmp_path, **over):
    params = tiny_params(kind, shards, tmp_path, **over)
    backend = make_backend(params, tiny_base(kind))
    samples = next(grid_batches(params.data, seed=0))
    return backend, collate(backend.encode(samples)), samples


def test_pack_matches_diffusers_flux_pipeline():
    from diffusers import FluxPipeline

    lat = torch.randn(2, 16, 8, 12)
    ours = pack(lat)
    theirs = FluxPipeline._pack_latents(lat, 2, 16, 8, 12)
    assert torch.equal(ours, theirs)
    assert torch.equal(unpack(ours, 8, 12), lat)
    ids = FluxPipeline._prepare_latent_image_ids(2, 4, 6, "cpu", torch.float32)
    assert torch.equal(image_ids(4, 6), ids)


def test_logit_normal_sigmas_and_noising():
    g = fm.step_generator(0, 0, 0)
    s = fm.logit_normal_sigmas(20000, mean=0.0, std=1.0, generator=g)
    assert 0 < s.min() and s.max() < 1 and abs(s.median().item() - 0.5) < 0.02
    x0, eps = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    sig = torch.tensor([0.0, 0.5, 1.0])
    xt = fm.noised(x0, eps, sig)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[2], eps[2])
    assert torch.allclose(xt[1], 0.5 * x0[1] + 0.5 * eps[1])


def test_flux_clean_context_noises_and_scores_only_the_target(shards, tmp_path):
    backend, batch, samples = _batch("flux", shards, tmp_path)
    lay = backend.layout(batch)
    target = lay["target"]
    assert target.shape == (2, 16) and target.sum(1).tolist() == [4, 4]  # 2x2 of 4x4 tokens: one cell
    x0 = lay["x0"]
    noise = torch.randn(x0.shape)
    xt = fm.noised(x0, noise, torch.tensor([0.9, 0.4]), target)
    assert torch.equal(xt[~target], x0[~target])  # context latents unchanged by noising
    assert not torch.allclose(xt[target], x0[target])

    res = backend.loss(batch, fm.step_generator(0, 0, 0))
    res.pred.retain_grad()
    res.loss.backward()
    grad = res.pred.grad
    assert grad[~target].abs().max() == 0  # no gradient from context tokens
    assert grad[target].abs().max() > 0
    # the loss is the mean over target tokens only
    manual = ((res.pred - res.target) ** 2)[target].mean()
    assert torch.allclose(res.loss, manual, atol=1e-6)


def test_flux_per_token_modulation(shards, tmp_path):
    backend, batch, _ = _batch("flux", shards, tmp_path)
    model = backend.model
    handle = install_per_token_modulation(model)
    assert handle is backend.modulation  # idempotent
    lay = backend.layout(batch)
    x = lay["x0"]
    sigma = torch.tensor([0.8, 0.3])
    backend.modulation = None  # predict() leaves the handle alone; the test sets it
    with torch.no_grad():
        handle.set_clean_tokens(None)
        stock = backend.predict(x, sigma, batch, lay)
        handle.set_clean_tokens(torch.zeros_like(lay["target"]))
        none_clean = backend.predict(x, sigma, batch, lay)
        assert torch.equal(none_clean, stock)  # no clean token: exactly the stock model
        clean = ~lay["target"]
        handle.set_clean_tokens(clean)
        mixed = backend.predict(x, sigma, batch, lay)
        assert not torch.allclose(mixed, stock)

        # at the norm level: clean tokens get the t = 0 modulation, target tokens the t one
        norm = model.transformer_blocks[0].norm1
        original = handle._originals[0][1]
        h = torch.randn(2, 16, model.inner_dim)
        temb_t = torch.randn(2, model.inner_dim)
        handle.temb_clean = torch.randn(2, model.inner_dim)
        out = norm(h, emb=temb_t)
        ref_t, ref_0 = original(h, emb=temb_t), original(h, emb=handle.temb_clean)
        for got, a, b in zip(out, ref_0, ref_t):
            if a.ndim == 2:
                a, b = a[:, None].expand_as(got), b[:, None].expand_as(got)
            assert torch.equal(got[clean], a[clean]) and torch.equal(got[~clean], b[~clean])
        assert out[1].unsqueeze(1).shape == (2, 16, model.inner_dim)  # block broadcast idiom
        handle.set_clean_tokens(None)


def test_flux_fill_input_is_384_channels(shards, tmp_path):
    backend, batch, _ = _batch("fill", shards, tmp_path)
    lay = backend.layout(batch)
    cond = backend.condition(batch, lay)
    assert cond.shape == (2, 16, 64 + 256)
    mask = mask_tokens(torch.ones(1, 1, 64, 64))
    assert mask.shape == (1, 16, 256) and mask.min() == 1
    m = cond[..., 64:]  # the unshuffled mask is 1 exactly on target tokens
    assert torch.equal(m.amax(-1) > 0, lay["target"])
    assert torch.equal(m.amin(-1) > 0, lay["target"])
    res = backend.loss(batch, fm.step_generator(0, 0, 0))
    assert res.pred.shape == (2, 16, 64) and torch.isfinite(res.loss)
    with pytest.raises(ValueError, match="384 input channels"):
        make_backend(tiny_params("fill", shards, tmp_path), tiny_base("flux"))


def test_qwen_sequence_target_first_conditions_clean(shards, tmp_path):
    backend, batch, samples = _batch("qwen_image", shards, tmp_path)
    assert batch["latents"].shape[:2] == (2, 4)  # target + 3 other cells, each its own image
    direct = backend.vae_encode(torch.stack([torch.from_numpy(samples[0].cells[samples[0].target_index])
                                             .permute(2, 0, 1).float() / 127.5 - 1]))
    assert torch.allclose(batch["latents"][0, 0], direct[0], atol=1e-5)  # target first
    lay = backend.layout(batch)
    assert lay["img_shapes"] == [[(1, 2, 2)] * 4] * 2
    assert backend.model.zero_cond_t and all(b.zero_cond_t for b in backend.model.transformer_blocks)

    captured = {}
    hook = backend.model.register_forward_pre_hook(
        lambda m, a, kw: captured.update(hidden=kw["hidden_states"].detach().clone()), with_kwargs=True)
    res = backend.loss(batch, fm.step_generator(0, 0, 0))
    hook.remove()
    n_t = lay["n_target"]
    assert torch.equal(captured["hidden"][:, n_t:], lay["x_cond"])  # conditions enter clean
    assert not torch.allclose(captured["hidden"][:, :n_t], lay["x0_target"])
    assert res.pred.shape == (2, n_t, 64)

    # zero_cond_t: conditions modulated at 0, so their output does not depend on t
    with torch.no_grad():
        x = lay["x0_target"]
        full = lambda s: backend.model(hidden_states=torch.cat([x, lay["x_cond"]], 1),  # noqa: E731
                                       encoder_hidden_states=batch["prompt"],
                                       encoder_hidden_states_mask=batch["prompt_mask"], timestep=s,
                                       img_shapes=lay["img_shapes"], return_dict=False)[0]
        a, b = full(torch.tensor([0.2, 0.2])), full(torch.tensor([0.9, 0.9]))
    assert not torch.allclose(a[:, :n_t], b[:, :n_t])


def test_token_box_mask():
    m = token_box_mask(torch.tensor([[16, 0, 48, 32]]), (2, 4))
    assert m.view(2, 4).tolist() == [[False, True, True, False], [False, True, True, False]]
