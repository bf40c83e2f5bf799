"""Every repository the generative annotators load, written with random weights from the tiny
configs of annotators/generative/tiny.py (tests: the real `load()` path runs on them). Kept apart
from tiny.py, which the annotators import, because this imports the annotators."""

from __future__ import annotations

from annotators.generative.tiny import causal_lm, flux_components, flux_transformer, ip_adapter_state_dict, \
    redux_prior, sdxl_components


def save_random_repos(models_dir, size: str = "tiny", only: set[str] | None = None) -> dict[str, str]:
    """Write every repository the generative annotators load (or the repo ids in `only`), with random
    weights, in the hub layout under `models_dir/<org>--<name>/` (tests: the real `load()` path then runs)."""
    from pathlib import Path

    from diffusers import (FluxControlPipeline, FluxFillPipeline, FluxKontextPipeline, FluxPipeline,
                           FluxPriorReduxPipeline, StableDiffusionXLImg2ImgPipeline)
    from safetensors.torch import save_file

    from annotators.generative import analogous_pairs, depth_edit, fill_edit, style
    from annotators.generative.common import PROMPT_MODEL_DEFAULT

    root = Path(models_dir)

    def folder(repo: str) -> Path:
        return root / repo.replace("/", "--")

    def wanted(repo: str) -> bool:
        return only is None or repo in only

    for repo, cls, kind in ((fill_edit.FILL_REPO, FluxFillPipeline, "fill"),
                            (depth_edit.DEPTH_REPO, FluxControlPipeline, "control"),
                            (style.FLUX_DEV_REPO, FluxPipeline, "base")):
        if wanted(repo):
            cls(**flux_components(size, kind)).save_pretrained(folder(repo))
    if wanted(analogous_pairs.KONTEXT_REPO):
        base = flux_components(size, "base")
        FluxKontextPipeline(**{**base, "transformer": flux_transformer(size, "base", seed=1)}).save_pretrained(
            folder(analogous_pairs.KONTEXT_REPO))
    if wanted(style.REDUX_REPO):
        redux = redux_prior(size, {k: None for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")})
        FluxPriorReduxPipeline(**redux).save_pretrained(folder(style.REDUX_REPO))
    if wanted(style.SDXL_REPO) or wanted(style.IP_ADAPTER_REPO):
        sdxl = sdxl_components(size)
        encoder, _ = sdxl.pop("image_encoder"), sdxl.pop("feature_extractor")
        StableDiffusionXLImg2ImgPipeline(**sdxl).save_pretrained(folder(style.SDXL_REPO))
        adapter = folder(style.IP_ADAPTER_REPO) / "sdxl_models"
        encoder.save_pretrained(adapter / "image_encoder")
        state = ip_adapter_state_dict(sdxl["unet"], encoder.config.projection_dim)
        save_file({f"{part}.{k}": v.contiguous() for part, tensors in state.items() for k, v in tensors.items()},
                  str(adapter / "ip-adapter_sdxl.safetensors"))
    if wanted(PROMPT_MODEL_DEFAULT):
        model, tok = causal_lm(size)
        model.save_pretrained(folder(PROMPT_MODEL_DEFAULT))
        tok.save_pretrained(folder(PROMPT_MODEL_DEFAULT))
    return {p.name.replace("--", "/", 1): str(p) for p in sorted(root.iterdir()) if p.is_dir()}
