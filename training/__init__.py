"""Bundled trainer: LoRA / MoE-LoRA fine-tuning of FLUX and Qwen-Image on vicl shards."""

from core import torchvision_compat as _tv

_tv.install()
