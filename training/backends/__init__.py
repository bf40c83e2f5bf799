"""Model backends: how a batch of grid samples becomes a flow-matching loss for one model family."""

from __future__ import annotations


def make_backend(params, base):
    """The backend for `params.model.backend` over loaded `BaseModels`."""
    if params.model.backend == "flux":
        from training.backends.flux import FluxBackend

        return FluxBackend(params, base)
    from training.backends.qwen_image import QwenImageBackend

    return QwenImageBackend(params, base)
