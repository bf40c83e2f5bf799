"""FLUX backend: the whole grid is one image; the target cell is a rectangle of tokens.

Modes
- clean_context (PICO, FLUX.1-dev): only target tokens are noised; context tokens stay the
  clean latents and are modulated at t = 0 (training.modulation); loss on target tokens.
- fill (VisualCloze, FLUX.1-Fill-dev): the grid is noised; the 384-channel input adds the
  latents of the grid with the target cell blanked and the 8x8-unshuffled cell mask.
"""

from __future__ import annotations

import torch

import training  # noqa: F401
from training import flow_matching as fm
from training.backends.common import LossOut, pack, pixel_box_mask, to_pixels, token_box_mask
from training.modulation import install_per_token_modulation


def image_ids(token_h: int, token_w: int, index: int = 0) -> torch.Tensor:
    """(th*tw, 3) FLUX position ids (index, row, col), shared by the whole batch."""
    ids = torch.zeros(token_h, token_w, 3)
    ids[..., 0] = index
    ids[..., 1] = torch.arange(token_h)[:, None]
    ids[..., 2] = torch.arange(token_w)[None, :]
    return ids.reshape(-1, 3)


def mask_tokens(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, N, 256): 8x8 space-to-depth, then 2x2 packing (FLUX Fill)."""
    b, _, h, w = mask.shape
    m = mask.view(b, h // 8, 8, w // 8, 8).permute(0, 2, 4, 1, 3).reshape(b, 64, h // 8, w // 8)
    return pack(m)


class FluxBackend:
    name = "flux"

    def __init__(self, params, base):
        self.model, self.vae, self.prompts = base.transformer, base.vae, base.prompt_encoder
        self.runner = self.model  # what is called: the loop swaps in the accelerate-prepared model
        self.mode = params.model.mode
        self.guidance = params.model.guidance
        self.fill_loss_on = params.model.fill_loss_on
        self.flow = params.flow
        expected = 384 if self.mode == "fill" else 64
        if self.model.config.in_channels != expected:
            raise ValueError(f"mode {self.mode!r} needs a transformer with {expected} input channels, "
                             f"got {self.model.config.in_channels} (repo {base.repo_id or '?'})")
        self.modulation = install_per_token_modulation(self.model) if self.mode == "clean_context" else None

    # -- pixels <-> normalised latents ----------------------------------------------------
    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        p = pixels.to(self.vae.device, self.vae.dtype)
        lat = self.vae.encode(p).latent_dist.mode()
        return ((lat - (cfg.shift_factor or 0.0)) * cfg.scaling_factor).float().cpu()

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        cfg = self.vae.config
        lat = latents / cfg.scaling_factor + (cfg.shift_factor or 0.0)
        return self.vae.decode(lat.to(self.vae.device, self.vae.dtype)).sample.float().cpu()

    @torch.no_grad()
    def encode(self, samples) -> list[dict[str, torch.Tensor]]:
        """Per-sample tensors (cacheable): grid latents, target box, prompt (and Fill's condition)."""
        pixels = to_pixels([s.grid() for s in samples])
        boxes = torch.tensor([s.target_box() for s in samples], dtype=torch.long)
        latents = self.vae_encode(pixels)
        prompts = self.prompts.encode([s.instruction for s in samples])
        out = [{"latents": latents[i], "target_box": boxes[i], "prompt": prompts.embeds[i].float().cpu(),
                "pooled": prompts.pooled[i].float().cpu()} for i in range(len(samples))]
        if self.mode == "fill":
            mask = pixel_box_mask(boxes, pixels.shape[-2:])
            masked = self.vae_encode(pixels * (1 - mask))  # blanked cell is 0 in [-1, 1], as FluxFillPipeline
            for i, o in enumerate(out):
                o["masked_latents"] = masked[i]
        return out

    # -- the model call -------------------------------------------------------------------
    def layout(self, batch) -> dict:
        lat = batch["latents"]
        _, _, h, w = lat.shape
        tokens_hw = (h // 2, w // 2)
        target = token_box_mask(batch["target_box"], tokens_hw)
        return {"h": h, "w": w, "tokens_hw": tokens_hw, "target": target,
                "img_ids": image_ids(*tokens_hw), "x0": pack(lat)}

    def condition(self, batch, lay) -> torch.Tensor | None:
        if self.mode != "fill":
            return None
        mask = pixel_box_mask(batch["target_box"], (lay["h"] * 8, lay["w"] * 8))
        return torch.cat([pack(batch["masked_latents"]), mask_tokens(mask)], dim=-1)

    def predict(self, x_t: torch.Tensor, sigma: torch.Tensor, batch, lay, cond=None) -> torch.Tensor:
        """Velocity for all grid tokens (B, N, 64)."""
        dev = next(self.model.parameters()).device
        hidden = x_t if cond is None else torch.cat([x_t, cond], dim=-1)
        b = hidden.shape[0]
        if self.modulation is not None:
            self.modulation.set_clean_tokens((~lay["target"]).to(dev))
        guidance = torch.full((b,), self.guidance, device=dev) if self.model.config.guidance_embeds else None
        txt = batch["prompt"]
        out = self.runner(hidden_states=hidden.to(dev), encoder_hidden_states=txt.to(dev),
                         pooled_projections=batch["pooled"].to(dev), timestep=sigma.to(dev),
                         img_ids=lay["img_ids"].to(dev), txt_ids=torch.zeros(txt.shape[1], 3, device=dev),
                         guidance=guidance, return_dict=False)[0]
        return out

    def loss(self, batch, generator: torch.Generator) -> LossOut:
        lay = self.layout(batch)
        x0 = lay["x0"]
        sigma = fm.logit_normal_sigmas(x0.shape[0], mean=self.flow.logit_mean, std=self.flow.logit_std,
                                       generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        if self.mode == "clean_context":
            where, loss_mask = lay["target"], lay["target"]
        else:
            where, loss_mask = None, (lay["target"] if self.fill_loss_on == "target" else None)
        x_t = fm.noised(x0, noise, sigma, where)
        pred = self.predict(x_t, sigma, batch, lay, self.condition(batch, lay))
        target = fm.velocity_target(x0, noise).to(pred.device)
        loss, per = fm.masked_mse(pred, target, None if loss_mask is None else loss_mask.to(pred.device))
        return LossOut(loss, per, pred, target, loss_mask, sigma)
