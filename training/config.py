"""`TrainParams`: the `train:` section of params.yaml. Unknown keys are an error naming the key.

Values the papers do not publish (logit-normal location/scale, MoE expert rank, aux-loss
weight, learning rate) are parameters with documented defaults, not constants in code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["flux", "qwen_image"]
Mode = Literal["clean_context", "fill", "sequence"]

# Base repositories per (backend, mode); a params file can point at another repo id.
DEFAULT_BASE_REPO: dict[tuple[str, str], str] = {
    ("flux", "clean_context"): "black-forest-labs/FLUX.1-dev",
    ("flux", "fill"): "black-forest-labs/FLUX.1-Fill-dev",
    ("qwen_image", "sequence"): "Qwen/Qwen-Image-Edit-2511",
}

# Module-name suffixes inside a transformer block. FLUX: the list diffusers' DreamBooth LoRA
# script uses for FLUX (double-block attention of both streams, both FFNs, single-block MLP
# and output); Qwen: image-stream attention q/k/v/out as in VIRAL.
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "flux": [
        "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
        "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
        "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
        "proj_mlp", "proj_out",
    ],
    "qwen_image": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"],
}
DEFAULT_MOE_TARGETS: dict[str, list[str]] = {
    "flux": ["ff.net.2"],
    "qwen_image": ["img_mlp.net.2"],
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    shards: list[str] = Field(default_factory=list, description="shard paths, globs or brace patterns")
    cell_size: int | None = Field(None, description="resize every cell to this square side (px, multiple "
                                  "of 16); None keeps each cell's size, rounded down to a multiple of 16")
    batch_size: int = Field(1, ge=1)
    shuffle_buffer: int = Field(64, ge=0)
    decoupled_tasks: bool = Field(False, description="VIRAL: each rank draws its own task family per step")
    family_weights: dict[str, float] = Field(default_factory=dict,
                                             description="sampling weights of families; empty: uniform")
    max_buffered: int = Field(4096, ge=1, description="samples held while filling layout/family buckets")
    cache_dir: str | None = Field(None, description="cache of VAE latents and prompt embeddings, keyed by "
                                  "sample key and a digest of the content it encodes")


class ModelParams(_Strict):
    backend: Backend = "flux"
    mode: Mode = "clean_context"
    models_dir: str | None = None
    base_repo: str | None = Field(None, description="None: the default repo of (backend, mode)")
    guidance: float = Field(1.0, description="FLUX guidance embedding; 1.0 when fine-tuning FLUX.1-dev")
    prompt_encoder: Literal["pretrained", "random"] = Field(
        "pretrained", description="'random' is for tests and benchmarks only (seeded embeddings per "
        "instruction text); a run refuses it unless the caller opts in (VICL_ALLOW_RANDOM_PROMPTS=1)")
    max_sequence_length: int = Field(512, ge=1)
    zero_cond_t: bool = Field(True, description="Qwen: modulate clean conditions at t = 0")
    fill_loss_on: Literal["all", "target"] = Field("all", description="FLUX Fill: loss region")

    @model_validator(mode="after")
    def _mode_fits_backend(self):
        ok = {"flux": {"clean_context", "fill"}, "qwen_image": {"sequence"}}
        if self.mode not in ok[self.backend]:
            raise ValueError(f"mode {self.mode!r} does not apply to backend {self.backend!r} "
                             f"(allowed: {sorted(ok[self.backend])})")
        return self

    def repo_id(self) -> str:
        return self.base_repo or DEFAULT_BASE_REPO[(self.backend, self.mode)]


class LoraParams(_Strict):
    rank: int = Field(256, ge=1)
    alpha: float = 256.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, description="block-relative names; None: backend default")


class MoeParams(_Strict):
    enabled: bool = False
    num_experts: int = Field(4, ge=1)
    top_k: int = Field(2, ge=1)
    expert_rank: int | None = Field(None, description="rank of each expert; None: sized by param_ratio")
    param_ratio: float = Field(0.10, gt=0.0, description="with expert_rank None: the MoE layers hold this "
                               "fraction of the plain-LoRA parameter count (VIRAL: about 10% more)")
    alpha: float | None = Field(None, description="None: the plain LoRA's alpha/rank scaling")
    aux_loss_weight: float = Field(0.01, ge=0.0)
    target_modules: list[str] | None = Field(None, description="None: the backend's FFN output projection")

    @model_validator(mode="after")
    def _k_le_e(self):
        if self.top_k > self.num_experts:
            raise ValueError(f"moe.top_k={self.top_k} exceeds moe.num_experts={self.num_experts}")
        return self


class FlowParams(_Strict):
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0.0)


class OptimParams(_Strict):
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    warmup_steps: int = Field(0, ge=0)


class TrainParams(_Strict):
    data: DataParams = Field(default_factory=DataParams)
    model: ModelParams = Field(default_factory=ModelParams)
    lora: LoraParams = Field(default_factory=LoraParams)
    moe: MoeParams = Field(default_factory=MoeParams)
    flow: FlowParams = Field(default_factory=FlowParams)
    optim: OptimParams = Field(default_factory=OptimParams)
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    grad_accum: int = Field(1, ge=1)
    mixed_precision: Literal["no", "bf16"] = Field("bf16", description="bf16 base weights, fp32 adapters")
    gradient_checkpointing: bool = True
    seed: int = 0
    output_dir: str = "train_out"
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    resume: bool = Field(True, description="continue from the latest checkpoint in output_dir if any")

    def lora_targets(self) -> list[str]:
        targets = self.lora.target_modules or DEFAULT_LORA_TARGETS[self.model.backend]
        moe = set(self.moe_targets()) if self.moe.enabled else set()
        return [t for t in targets if t not in moe]  # MoE replaces plain LoRA on its modules

    def moe_targets(self) -> list[str]:
        return self.moe.target_modules or DEFAULT_MOE_TARGETS[self.model.backend]
