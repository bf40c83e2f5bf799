"""Mixture of LoRA experts (VIRAL) on a frozen linear layer: top-k router + load balancing.

y = W x + sum_{e in topk(x)} g_e(x) * (alpha / r) * B_e A_e x

The k gates are the router's softmax probabilities of the chosen experts renormalised to
sum to 1 (Mixtral). All experts are evaluated as one rank E*r LoRA whose rank blocks are
scaled by the gates (zero for experts not chosen), so an unchosen expert contributes
nothing and receives no gradient from that token, with two dense matmuls and no gather.

Load balancing (Switch Transformer / Mixtral form): aux = E * sum_e f_e * P_e, with f_e the
fraction of the T*k routing slots that chose expert e and P_e the mean router probability
of e. It equals 1 whenever the router is uniform (P_e = 1/E) and reaches E/k when routing
collapses onto k experts.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

import training  # noqa: F401


def load_balancing_loss(probs: torch.Tensor, chosen: torch.Tensor, num_experts: int) -> torch.Tensor:
    """probs (T, E) router softmax, chosen (T, k) expert indices -> scalar aux loss."""
    slots = torch.nn.functional.one_hot(chosen, num_experts).float()  # (T, k, E)
    f = slots.sum(dim=(0, 1)) / max(1, chosen.numel())
    p = probs.float().mean(dim=0)
    return num_experts * (f * p).sum()


class MoELoRALinear(nn.Module):
    """Wraps a frozen nn.Linear with E LoRA experts and a top-k router."""

    def __init__(self, base: nn.Linear, num_experts: int, top_k: int, rank: int, alpha: float):
        super().__init__()
        if top_k > num_experts:
            raise ValueError(f"top_k={top_k} > num_experts={num_experts}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.num_experts, self.top_k, self.rank = num_experts, top_k, rank
        self.scaling = alpha / rank
        fin, fout = base.in_features, base.out_features
        self.router = nn.Linear(fin, num_experts, bias=False)
        # A: Kaiming-uniform as peft's LoRA A; B: zero, so the wrapped layer starts as the base layer.
        self.lora_A = nn.Parameter(torch.empty(num_experts * rank, fin))
        self.lora_B = nn.Parameter(torch.zeros(fout, num_experts * rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.normal_(self.router.weight, std=0.02)  # near-uniform routing at the start
        self.last_aux: torch.Tensor | None = None
        self.last_load: torch.Tensor | None = None  # (E,) fraction of slots per expert, for logs

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (..., in) -> gates (T, E) with zeros off the top-k, probs (T, E), chosen (T, k)."""
        flat = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(self.router(flat.to(self.router.weight.dtype)).float(), dim=-1)
        top_p, chosen = probs.topk(self.top_k, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter(-1, chosen, top_p)
        return gates, probs, chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        gates, probs, chosen = self.route(x)
        self.last_aux = load_balancing_loss(probs, chosen, self.num_experts)
        self.last_load = torch.bincount(chosen.reshape(-1), minlength=self.num_experts).float().detach() / chosen.numel()
        flat = x.reshape(-1, x.shape[-1]).to(self.lora_A.dtype)
        h = flat @ self.lora_A.t()  # (T, E*r)
        h = h * gates.to(h.dtype).repeat_interleave(self.rank, dim=-1)
        delta = (h @ self.lora_B.t()) * self.scaling
        return y + delta.view(*y.shape[:-1], -1).to(y.dtype)


def _block_pattern(suffixes: list[str]) -> re.Pattern:
    """Module names `<blocks>.<i>.<suffix>` of the transformer blocks (never the top-level proj_out)."""
    alt = "|".join(re.escape(s) for s in suffixes)
    return re.compile(rf"^(transformer_blocks|single_transformer_blocks)\.\d+\.({alt})$")


def block_module_regex(suffixes: list[str]) -> str:
    return _block_pattern(suffixes).pattern


def install_moe_lora(model: nn.Module, suffixes: list[str], *, num_experts: int, top_k: int,
                     rank: int, alpha: float) -> list[str]:
    """Replace every matching nn.Linear with MoELoRALinear; returns the names replaced.

    Call after peft's `add_adapter` (which freezes everything that is not a LoRA parameter):
    the new layers' router and experts are created trainable, their base stays frozen.
    """
    pattern = _block_pattern(suffixes)
    names = [n for n, m in model.named_modules() if pattern.match(n) and isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"no linear layer matches the MoE targets {suffixes}")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        base = getattr(parent, child)
        moe = MoELoRALinear(base, num_experts, top_k, rank, alpha).to(base.weight.device)
        setattr(parent, child, moe)
    return names


def moe_layers(model: nn.Module) -> list[MoELoRALinear]:
    return [m for m in model.modules() if isinstance(m, MoELoRALinear)]


def collect_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Mean load-balancing loss over the MoE layers of the last forward (None without MoE)."""
    layers = [m for m in moe_layers(model) if m.last_aux is not None]
    if not layers:
        return None
    return torch.stack([m.last_aux for m in layers]).mean()
