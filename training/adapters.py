"""Put LoRA (peft) and MoE-LoRA on a transformer; save and load the trained adapter.

An adapter folder holds `adapter.safetensors` (every trainable tensor by module path: peft's
LoRA A/B and the MoE routers/experts) and `adapter_config.json` (what to rebuild before the
tensors are loaded: backend, mode, base repo, LoRA and MoE settings).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import training  # noqa: F401
from training.moe_lora import block_module_regex, install_moe_lora

ADAPTER_FILE = "adapter.safetensors"
CONFIG_FILE = "adapter_config.json"
ADAPTER_NAME = "vicl"


@dataclass
class AdapterSpec:
    backend: str
    mode: str
    base_repo: str
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    lora_targets: list[str]
    moe: dict | None = None  # {num_experts, top_k, rank, alpha, lora_scaling, param_ratio, targets}
    zero_cond_t: bool = True
    guidance: float = 1.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params) -> "AdapterSpec":
        moe = None
        if params.moe.enabled:
            m = params.moe
            moe = {"num_experts": m.num_experts, "top_k": m.top_k, "rank": m.expert_rank, "alpha": m.alpha,
                   "lora_scaling": params.lora.alpha / params.lora.rank, "param_ratio": m.param_ratio,
                   "targets": params.moe_targets()}
        return cls(params.model.backend, params.model.mode, params.model.repo_id(), params.lora.rank,
                   params.lora.alpha, params.lora.dropout, params.lora_targets(), moe,
                   params.model.zero_cond_t, params.model.guidance)


def apply_adapters(model: torch.nn.Module, spec: AdapterSpec) -> list[str]:
    """LoRA through peft on `spec.lora_targets`, then MoE-LoRA on `spec.moe['targets']`.

    Returns the names of the trainable parameters. peft's add_adapter freezes every
    non-adapter parameter, so the MoE layers go in afterwards and come in trainable.
    """
    from peft import LoraConfig

    for p in model.parameters():
        p.requires_grad_(False)
    if spec.lora_targets:
        config = LoraConfig(r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                            target_modules=block_module_regex(spec.lora_targets))
        model.add_adapter(config, adapter_name=ADAPTER_NAME)
    if spec.moe:
        m = spec.moe
        if m["rank"] is None:  # resolved once, then saved with the adapter
            m["rank"] = sized_expert_rank(model, m["targets"], m["num_experts"], m["param_ratio"])
        install_moe_lora(model, m["targets"], num_experts=m["num_experts"], top_k=m["top_k"],
                         rank=m["rank"], alpha=m["alpha"] if m["alpha"] is not None else m["lora_scaling"] * m["rank"])
    names = trainable_names(model)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()  # trainable parameters stay fp32 under bf16 base weights
    return names


def sized_expert_rank(model: torch.nn.Module, targets: list[str], num_experts: int, ratio: float) -> int:
    """Expert rank at which the MoE layers (experts + routers) hold `ratio` x the LoRA parameters."""
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if lora == 0:
        raise ValueError("moe.expert_rank must be set when there is no plain LoRA to size it against")
    pattern = re.compile(block_module_regex(targets))
    layers = [m for n, m in model.named_modules() if pattern.match(n) and isinstance(m, torch.nn.Linear)]
    io = sum(m.in_features + m.out_features for m in layers)
    router = num_experts * sum(m.in_features for m in layers)
    return max(1, round((ratio * lora - router) / (num_experts * max(io, 1))))


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_adapter(model: torch.nn.Module, spec: AdapterSpec, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model), str(folder / ADAPTER_FILE), metadata={"format": "vicl-adapter/1"})
    (folder / CONFIG_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
    return folder


def read_spec(folder: str | Path) -> AdapterSpec:
    return AdapterSpec(**json.loads((Path(folder) / CONFIG_FILE).read_text()))


def load_adapter(model: torch.nn.Module, folder: str | Path) -> AdapterSpec:
    """Rebuild the adapter structure on a fresh base model and load the saved tensors into it."""
    spec = read_spec(folder)
    expected = set(apply_adapters(model, spec))
    tensors = load_file(str(Path(folder) / ADAPTER_FILE))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(f"adapter {folder} does not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    return spec
