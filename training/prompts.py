"""Prompt encoders: instruction text -> the embeddings a backend's transformer reads.

- FLUX: T5 sequence embeddings (B, L, 4096) + CLIP pooled (B, 768), via FluxPipeline's own
  `encode_prompt` over the text encoders of the local base repo.
- Qwen-Image-Edit: Qwen2.5-VL hidden states (B, L, 3584) + mask, via the edit pipeline's
  `encode_prompt`, which also sees the condition images.
- "random" (tests and benchmarks only): seeded embeddings derived from the text, so one
  instruction always gives the same tensors; sizes come from the transformer config. A run
  only gets it when the caller opts in (`allow_random=True`, or the environment variable
  VICL_ALLOW_RANDOM_PROMPTS=1 that the test helpers set), so a production params file that
  says `prompt_encoder: random` stops instead of training on fake text; every use is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

import training  # noqa: F401


@dataclass
class PromptEmbeds:
    embeds: torch.Tensor  # (B, L, D)
    pooled: torch.Tensor | None = None  # (B, Dp) FLUX
    mask: torch.Tensor | None = None  # (B, L) Qwen; 1 = real token


log = logging.getLogger("vicl.training")

RANDOM_PROMPTS_ENV = "VICL_ALLOW_RANDOM_PROMPTS"


def random_prompts_allowed() -> bool:
    return os.environ.get(RANDOM_PROMPTS_ENV, "") == "1"


class RandomPromptEncoder:
    """Test-only: embeddings seeded by the SHA-256 of the text."""

    def __init__(self, dim: int, pooled_dim: int | None, length: int = 8, with_mask: bool = False):
        self.dim, self.pooled_dim, self.length, self.with_mask = dim, pooled_dim, length, with_mask
        log.warning("prompt encoder: RANDOM embeddings (tests and benchmarks only; the text is not read)")

    def fingerprint(self) -> str:
        return f"random-{self.dim}-{self.pooled_dim}-{self.length}"

    def encode(self, texts: list[str], images: list[list[np.ndarray]] | None = None) -> PromptEmbeds:
        embeds, pooled = [], []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            g = torch.Generator().manual_seed(seed)
            embeds.append(torch.randn(self.length, self.dim, generator=g))
            if self.pooled_dim:
                pooled.append(torch.randn(self.pooled_dim, generator=g))
        mask = torch.ones(len(texts), self.length, dtype=torch.long) if self.with_mask else None
        return PromptEmbeds(torch.stack(embeds), torch.stack(pooled) if pooled else None, mask)


class FluxPromptEncoder:
    """CLIP-L + T5-XXL of a FLUX repo through diffusers' FluxPipeline.encode_prompt."""

    def __init__(self, repo_root, dtype=torch.bfloat16, device="cpu", max_sequence_length=512):
        from diffusers import FluxPipeline

        self.pipe = FluxPipeline.from_pretrained(repo_root, transformer=None, vae=None,
                                                 torch_dtype=dtype, local_files_only=True).to(device)
        self.device, self.max_len = device, max_sequence_length
        self.root = str(repo_root)

    def fingerprint(self) -> str:
        return f"flux-{self.root}-{self.max_len}"

    @torch.no_grad()
    def encode(self, texts: list[str], images=None) -> PromptEmbeds:
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=texts, prompt_2=texts, device=self.device,
                                                    max_sequence_length=self.max_len)
        return PromptEmbeds(embeds, pooled, None)


class QwenEditPromptEncoder:
    """Qwen2.5-VL of a Qwen-Image-Edit repo through the edit pipeline's encode_prompt."""

    def __init__(self, repo_root, dtype=torch.bfloat16, device="cpu", max_sequence_length=1024):
        from diffusers import QwenImageEditPlusPipeline

        self.pipe = QwenImageEditPlusPipeline.from_pretrained(repo_root, transformer=None, vae=None,
                                                              torch_dtype=dtype, local_files_only=True).to(device)
        self.device, self.max_len = device, max_sequence_length
        self.root = str(repo_root)

    def fingerprint(self) -> str:
        return f"qwen-edit-{self.root}-{self.max_len}"

    @torch.no_grad()
    def encode(self, texts: list[str], images: list[list[np.ndarray]] | None = None) -> PromptEmbeds:
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (CONDITION_IMAGE_SIZE,
                                                                                 calculate_dimensions)
        from PIL import Image

        def vl_view(a: np.ndarray) -> Image.Image:  # the size the edit pipeline shows the VL encoder
            w, h = calculate_dimensions(CONDITION_IMAGE_SIZE, a.shape[1] / a.shape[0])
            return self.pipe.image_processor.resize(Image.fromarray(a), h, w)

        out_e, out_m = [], []
        for i, text in enumerate(texts):  # the VL encoder sees each sample's own condition images
            ims = [vl_view(a) for a in (images[i] if images else [])] or None
            e, m = self.pipe.encode_prompt(prompt=[text], image=ims, device=self.device,
                                           max_sequence_length=self.max_len)
            out_e.append(e[0])
            out_m.append(m[0] if m is not None else torch.ones(e.shape[1], dtype=torch.long))
        return pad_prompts(out_e, out_m)


def pad_prompts(embeds: list[torch.Tensor], masks: list[torch.Tensor]) -> PromptEmbeds:
    """Right-pad variable-length (L_i, D) embeddings into (B, L, D) with a 0/1 mask."""
    length = max(e.shape[0] for e in embeds)
    out = embeds[0].new_zeros(len(embeds), length, embeds[0].shape[-1])
    mask = torch.zeros(len(embeds), length, dtype=torch.long)
    for i, (e, m) in enumerate(zip(embeds, masks)):
        out[i, :e.shape[0]] = e
        mask[i, :e.shape[0]] = m.to(torch.long).cpu()
    return PromptEmbeds(out, None, mask)


def make_prompt_encoder(model_params, transformer_config, dtype=torch.float32, device="cpu",
                        allow_random: bool = False):
    """The encoder named by `ModelParams.prompt_encoder` for a backend, on `device`.

    "random" needs an explicit opt-in (`allow_random` or VICL_ALLOW_RANDOM_PROMPTS=1)."""
    if model_params.prompt_encoder == "random":
        if not (allow_random or random_prompts_allowed()):
            raise ValueError("train.model.prompt_encoder: 'random' gives fake text embeddings and is for tests "
                             f"and benchmarks only; they opt in with {RANDOM_PROMPTS_ENV}=1. Use 'pretrained'.")
        if model_params.backend == "flux":
            return RandomPromptEncoder(transformer_config.joint_attention_dim,
                                       transformer_config.pooled_projection_dim)
        return RandomPromptEncoder(transformer_config.joint_attention_dim, None, with_mask=True)
    from training.base_weights import repo_dir

    repo = model_params.repo_id()
    if model_params.backend == "flux":
        root = repo_dir(repo, model_params.models_dir, ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"))
        return FluxPromptEncoder(root, dtype, device, model_params.max_sequence_length)
    root = repo_dir(repo, model_params.models_dir, ("text_encoder", "tokenizer", "processor"))
    return QwenEditPromptEncoder(root, dtype, device, min(model_params.max_sequence_length, 1024))
