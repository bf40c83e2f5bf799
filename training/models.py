"""Base weights: the transformer and VAE from a local models directory (or the HF cache).

A base repository is laid out as on the hub (`transformer/`, `vae/`, `text_encoder*/`,
`tokenizer*/`). Nothing is downloaded: a missing repo or subfolder raises
`MissingWeightsError` naming the repo id. `tiny_*` builders make random-weight models of the
same classes from configs for tests and benchmarks (never used by `train`/`infer` unless a
caller passes them in explicitly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import training  # noqa: F401
from training.base_weights import repo_dir
from core.weights import MissingWeightsError, WeightSpec
from core.weights import resolve


# For `vicl models list/check/fetch`: the base repositories the trainer can load.
WEIGHTS: tuple[WeightSpec, ...] = (
    WeightSpec("black-forest-labs/FLUX.1-dev", description="trainer base, flux clean_context (PICO)"),
    WeightSpec("black-forest-labs/FLUX.1-Fill-dev", description="trainer base, flux fill (VisualCloze)"),
    WeightSpec("Qwen/Qwen-Image-Edit-2511", description="trainer base, qwen_image sequence (VIRAL)"),
)


@dataclass
class BaseModels:
    """What a backend needs: the denoiser, the autoencoder and a prompt encoder."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    prompt_encoder: object  # training.prompts.PromptEncoder
    repo_id: str = ""




def load_transformer(backend: str, repo_id: str, models_dir, dtype=torch.float32):
    from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel

    root = repo_dir(repo_id, models_dir, ("transformer",))
    cls = FluxTransformer2DModel if backend == "flux" else QwenImageTransformer2DModel
    return cls.from_pretrained(root / "transformer", torch_dtype=dtype, local_files_only=True)


def load_vae(backend: str, repo_id: str, models_dir, dtype=torch.float32):
    from diffusers import AutoencoderKL, AutoencoderKLQwenImage

    root = repo_dir(repo_id, models_dir, ("vae",))
    cls = AutoencoderKL if backend == "flux" else AutoencoderKLQwenImage
    return cls.from_pretrained(root / "vae", torch_dtype=dtype, local_files_only=True)


def load_base(model_params, dtype=torch.float32, device: str | torch.device = "cpu",
              allow_random_prompts: bool = False) -> BaseModels:
    """Transformer, VAE and prompt encoder named by `ModelParams`. The prompt encoder is built on
    `device` (T5-XXL / Qwen2.5-VL on a CPU would dominate inference); the caller moves the
    transformer and VAE. `allow_random_prompts`: see training.prompts (tests, benchmarks)."""
    from training.prompts import make_prompt_encoder

    repo = model_params.repo_id()
    transformer = load_transformer(model_params.backend, repo, model_params.models_dir, dtype)
    vae = load_vae(model_params.backend, repo, model_params.models_dir, dtype)
    encoder = make_prompt_encoder(model_params, transformer.config, dtype=dtype, device=str(device),
                                  allow_random=allow_random_prompts)
    return BaseModels(transformer, vae, encoder, repo)


# -- random-weight builds of the same classes (tests, benchmarks) -----------------------------

def tiny_flux_transformer(fill: bool = False, seed: int = 0, **overrides):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    cfg = dict(patch_size=1, in_channels=384 if fill else 64, out_channels=64, num_layers=1,
               num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
               joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True,
               axes_dims_rope=(4, 6, 6))
    cfg.update(overrides)
    return FluxTransformer2DModel(**cfg)


def flux_12b_transformer(fill: bool = False):
    """The real FLUX.1-dev (or Fill-dev) architecture, random weights (benchmarks)."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=384 if fill else 64, out_channels=64,
                                  num_layers=19, num_single_layers=38, attention_head_dim=128,
                                  num_attention_heads=24, joint_attention_dim=4096,
                                  pooled_projection_dim=768, guidance_embeds=True,
                                  axes_dims_rope=(16, 56, 56))


def tiny_qwen_transformer(seed: int = 0, **overrides):
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    cfg = dict(patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16,
               num_attention_heads=4, joint_attention_dim=32, axes_dims_rope=(8, 4, 4), zero_cond_t=True)
    cfg.update(overrides)
    return QwenImageTransformer2DModel(**cfg)


def tiny_flux_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 8, 8],
                         layers_per_block=1, latent_channels=16, norm_num_groups=4,
                         use_quant_conv=False, use_post_quant_conv=False,
                         scaling_factor=0.3611, shift_factor=0.1159)


def tiny_qwen_vae(seed: int = 0):
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    return AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                  temperal_downsample=[False, True, True],
                                  latents_mean=[0.0] * 16, latents_std=[1.0] * 16)


def save_tiny_repo(root: str | Path, backend: str, fill: bool = False, seed: int = 0) -> Path:
    """Write a tiny random base repo (transformer/ + vae/) in the hub layout (tests)."""
    root = Path(root)
    if backend == "flux":
        tiny_flux_transformer(fill=fill, seed=seed).save_pretrained(root / "transformer")
        tiny_flux_vae(seed).save_pretrained(root / "vae")
    else:
        tiny_qwen_transformer(seed=seed).save_pretrained(root / "transformer")
        tiny_qwen_vae(seed).save_pretrained(root / "vae")
    return root
