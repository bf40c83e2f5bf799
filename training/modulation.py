"""Per-token timestep modulation for FLUX (PICO's clean context).

The stock FluxTransformer2DModel computes one timestep embedding per sample, and every
AdaLN norm turns it into one (shift, scale, gate) per sample. For clean-context training the
context tokens must be modulated at t = 0 while the target tokens are modulated at t.

We do not copy the blocks. Each AdaLN norm's forward is wrapped: the norm module runs twice
(once with the sample's embedding, once with the t = 0 embedding) and the outputs are
selected per token. The blocks broadcast a modulation vector with `v.unsqueeze(1)` /
`v[:, None]` (written for (B, D) vectors); the per-token vectors are (B, N, D), so they are
returned as `PerTokenVector`, whose `unsqueeze(1)` / `[:, None]` is the identity.

The state (which tokens are clean, the t = 0 embedding) lives on the handle until the next
forward, so recomputation under gradient checkpointing sees the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

import training  # noqa: F401


class PerTokenVector(torch.Tensor):
    """A (B, N, D) modulation vector that the per-sample broadcast idioms leave as is."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            if func is torch.Tensor.unsqueeze and (args[1:] == (1,) or kwargs.get("dim") == 1):
                return args[0].as_subclass(torch.Tensor)
            if func is torch.Tensor.__getitem__ and _inserts_token_axis(args[1]):
                return args[0].as_subclass(torch.Tensor)
            return func(*args, **kwargs)  # any other use: a plain tensor


def _inserts_token_axis(index) -> bool:
    return (isinstance(index, tuple) and len(index) == 2 and index[1] is None
            and isinstance(index[0], slice) and index[0] == slice(None))


def _select(clean: torch.Tensor, at_zero: torch.Tensor, at_t: torch.Tensor) -> torch.Tensor:
    """Per token: the t = 0 value where clean, else the value at t. Vectors (B, D) expand to (B, N, D)."""
    if at_t.ndim == 2:
        at_zero, at_t = at_zero[:, None, :], at_t[:, None, :]
    return torch.where(clean.unsqueeze(-1), at_zero, at_t)


@dataclass
class PerTokenModulation:
    """Handle on a patched FLUX transformer; `clean` is None when modulation is per sample."""

    model: torch.nn.Module
    clean: torch.Tensor | None = None  # (B, N_img) bool: tokens modulated at t = 0
    temb_clean: torch.Tensor | None = None
    _originals: list = field(default_factory=list)
    _hook: object = None

    def set_clean_tokens(self, clean: torch.Tensor | None) -> None:
        """Call before each forward; None restores the stock behaviour."""
        self.clean = clean

    def remove(self) -> None:
        for module, forward in self._originals:
            module.forward = forward
        self._originals.clear()
        if self._hook is not None:
            self._hook.remove()
        if getattr(self.model, "_vicl_per_token", None) is self:
            del self.model._vicl_per_token

    # -- wrappers -----------------------------------------------------------------------
    def _image_mask(self, x: torch.Tensor) -> torch.Tensor:
        return self.clean.to(x.device).expand(x.shape[0], -1)

    def _wrap_zero(self, norm, text_prefix: bool):
        """AdaLayerNormZero / AdaLayerNormZeroSingle: (x, *vectors) with emb= keyword."""
        original = norm.forward

        def forward(x, *args, emb=None, **kwargs):
            if self.clean is None:
                return original(x, *args, emb=emb, **kwargs)
            at_t = original(x, *args, emb=emb, **kwargs)
            at_0 = original(x, *args, emb=self.temb_clean.to(emb.dtype), **kwargs)
            mask = self._image_mask(x)
            if text_prefix:  # single blocks see [text, image]; text keeps the sample's t
                pad = mask.new_zeros(x.shape[0], x.shape[1] - mask.shape[1])
                mask = torch.cat([pad, mask], dim=1)
            out = [_select(mask, at_0[0], at_t[0])]
            out += [_select(mask, a, b).as_subclass(PerTokenVector) for a, b in zip(at_0[1:], at_t[1:])]
            return tuple(out)

        self._originals.append((norm, original))
        norm.forward = forward

    def _wrap_continuous(self, norm):
        """AdaLayerNormContinuous (norm_out): (x, conditioning) -> x."""
        original = norm.forward

        def forward(x, conditioning, *args, **kwargs):
            if self.clean is None:
                return original(x, conditioning, *args, **kwargs)
            at_t = original(x, conditioning, *args, **kwargs)
            at_0 = original(x, self.temb_clean.to(conditioning.dtype), *args, **kwargs)
            return _select(self._image_mask(x), at_0, at_t)

        self._originals.append((norm, original))
        norm.forward = forward

    def _compute_temb_clean(self, module, args, kwargs):
        """Forward pre-hook: the t = 0 embedding from the model's own time/guidance/text embedder."""
        if self.clean is None:
            return None
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        timestep = kwargs["timestep"]
        guidance = kwargs.get("guidance")
        pooled = kwargs.get("pooled_projections")
        dtype = hidden.dtype
        if torch.is_autocast_enabled(hidden.device.type):
            dtype = torch.get_autocast_dtype(hidden.device.type)
        zero = torch.zeros_like(timestep, dtype=dtype)
        embed = module.time_text_embed
        if guidance is None:
            self.temb_clean = embed(zero, pooled)
        else:
            self.temb_clean = embed(zero, guidance.to(dtype) * 1000, pooled)
        return None


def install_per_token_modulation(model) -> PerTokenModulation:
    """Patch a diffusers FluxTransformer2DModel in place (idempotent); returns the handle."""
    existing = getattr(model, "_vicl_per_token", None)
    if existing is not None:
        return existing
    handle = PerTokenModulation(model)
    for block in model.transformer_blocks:
        handle._wrap_zero(block.norm1, text_prefix=False)  # image stream only; text keeps t
    for block in model.single_transformer_blocks:
        handle._wrap_zero(block.norm, text_prefix=True)
    handle._wrap_continuous(model.norm_out)
    handle._hook = model.register_forward_pre_hook(handle._compute_temb_clean, with_kwargs=True)
    model._vicl_per_token = handle
    return handle
