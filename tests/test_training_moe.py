"""MoE-LoRA: routing, the load-balancing loss, placement after peft."""

import pytest
import torch

from training_helpers import tiny_params

from training.adapters import AdapterSpec, apply_adapters
from training.models import tiny_flux_transformer, tiny_qwen_transformer
from training.moe_lora import MoELoRALinear, collect_aux_loss, load_balancing_loss, moe_layers


def _layer(E=4, k=2, r=2):
    torch.manual_seed(0)
    return MoELoRALinear(torch.nn.Linear(8, 6), num_experts=E, top_k=k, rank=r, alpha=r)


def test_aux_loss_is_one_for_a_uniform_router():
    layer = _layer()
    torch.nn.init.zeros_(layer.router.weight)  # every probability 1/E
    layer(torch.randn(3, 5, 8))
    assert layer.last_aux.item() == pytest.approx(1.0, abs=1e-6)
    # analytic: E * sum_e f_e * (1/E) = sum_e f_e = 1 whatever the top-k picks
    probs = torch.full((10, 4), 0.25)
    assert load_balancing_loss(probs, torch.randint(0, 4, (10, 2)), 4).item() == pytest.approx(1.0)


def test_aux_loss_grows_when_routing_collapses():
    E, k, T = 4, 2, 64
    balanced_probs = torch.full((T, E), 1 / E)
    balanced_choice = torch.stack([torch.arange(T) % E, (torch.arange(T) + 1) % E], 1)
    balanced = load_balancing_loss(balanced_probs, balanced_choice, E)
    collapsed_probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]]).repeat(T, 1)
    collapsed = load_balancing_loss(collapsed_probs, torch.tensor([[0, 1]]).repeat(T, 1), E)
    assert balanced.item() == pytest.approx(1.0)
    assert collapsed.item() == pytest.approx(E / k)  # all slots on k experts
    # a layer whose router prefers two experts strongly has a larger aux than a near-uniform one
    layer = _layer()
    x = torch.randn(64, 8).abs()
    layer(x)
    near_uniform = layer.last_aux.item()
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[:2] = 5.0
    layer(x)
    assert layer.last_aux.item() > near_uniform + 0.5


def test_topk_gates_and_identity_at_init():
    layer = _layer(E=4, k=2)
    x = torch.randn(7, 8)
    gates, probs, chosen = layer.route(x)
    assert ((gates > 0).sum(-1) == 2).all() and torch.allclose(gates.sum(-1), torch.ones(7))
    assert torch.allclose(layer(x), layer.base(x))  # B = 0: starts as the base layer
    # an expert the router did not pick gets no gradient from that token
    with torch.no_grad():
        layer.lora_B.normal_()
    x1 = torch.randn(1, 8)
    layer(x1).sum().backward()
    _, _, ch = layer.route(x1)
    unused = sorted(set(range(4)) - set(ch[0].tolist()))
    for e in unused:
        assert layer.lora_A.grad[e * 2:(e + 1) * 2].abs().max() == 0
    for e in ch[0].tolist():
        assert layer.lora_A.grad[e * 2:(e + 1) * 2].abs().max() > 0


@pytest.mark.parametrize("kind", ["flux", "qwen_image"])
def test_moe_on_ffn_output_plain_lora_elsewhere(kind, tmp_path):
    params = tiny_params(kind, ["x.tar"], tmp_path, moe={"enabled": True})
    model = tiny_flux_transformer() if kind == "flux" else tiny_qwen_transformer()
    names = apply_adapters(model, AdapterSpec.from_params(params))
    suffix = "ff.net.2" if kind == "flux" else "img_mlp.net.2"
    moes = [n for n, m in model.named_modules() if isinstance(m, MoELoRALinear)]
    assert moes and all(n.endswith(suffix) for n in moes)
    assert any(".lora_A." in n and "attn.to_q" in n for n in names)  # peft LoRA on attention
    assert not any(suffix + ".lora_A.vicl" in n for n in names)  # no plain LoRA under the MoE
    assert all(("lora" in n) or ("router" in n) for n in names)  # base weights frozen
    assert not any(m.base.weight.requires_grad for m in moe_layers(model))
    if kind == "flux":  # the top-level proj_out is never an adapter target
        assert not any(n.startswith("proj_out.") for n in names)
    assert collect_aux_loss(model) is None  # no forward yet
