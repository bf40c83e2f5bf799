"""Tiny models and params for the trainer tests (random weights built from configs)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["VICL_ALLOW_RANDOM_PROMPTS"] = "1"  # the tiny setups here ask for random prompt embeddings

import torch  # noqa: E402

import training  # noqa: E402,F401
from training.config import TrainParams  # noqa: E402
from training.models import (BaseModels, tiny_flux_transformer, tiny_flux_vae, tiny_qwen_transformer,  # noqa: E402
                             tiny_qwen_vae)
from training.prompts import RandomPromptEncoder  # noqa: E402

# The test machine is shared: one intra-op thread avoids OpenMP spin contention (8x faster here).
torch.set_num_threads(1)

MODES = {"flux": "clean_context", "fill": "fill", "qwen_image": "sequence"}


def tiny_base(kind: str, seed: int = 0) -> BaseModels:
    if kind == "qwen_image":
        return BaseModels(tiny_qwen_transformer(seed=seed), tiny_qwen_vae(seed),
                          RandomPromptEncoder(32, None, with_mask=True), "tiny/qwen")
    return BaseModels(tiny_flux_transformer(fill=kind == "fill", seed=seed), tiny_flux_vae(seed),
                      RandomPromptEncoder(32, 32), "tiny/flux")


def tiny_params(kind: str, shards: list[str], out_dir, **over) -> TrainParams:
    backend = "qwen_image" if kind == "qwen_image" else "flux"
    cfg = {
        "data": {"shards": shards, "batch_size": 2, "shuffle_buffer": 0},
        "model": {"backend": backend, "mode": MODES[kind], "prompt_encoder": "random"},
        "lora": {"rank": 4, "alpha": 4},
        "optim": {"lr": 1e-3},
        "max_steps": 4, "mixed_precision": "no", "gradient_checkpointing": False,
        "output_dir": str(out_dir), "checkpoint_every": 100,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return TrainParams(**cfg)
