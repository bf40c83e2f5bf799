"""Qwen-Image-Edit backend: images as a sequence, target first, then the other cells.

Every cell is VAE-encoded on its own and packed 2x2; the sequence is [target, exemplars...,
query]; `img_shapes` lists each image and the model's RoPE puts the image's place in that
list (its role: 0 target, then context in row-major order, the query last) on the frame
axis. With `zero_cond_t` the noisy target is modulated at t and the clean conditions at 0.
Only target tokens are noised and enter the loss.
"""

from __future__ import annotations

import torch

import training  # noqa: F401
from training import flow_matching as fm
from training.backends.common import LossOut, pack, to_pixels


def set_zero_cond_t(model, enabled: bool) -> None:
    """The stock model reads the flag from the model and every block; keep them in step."""
    model.zero_cond_t = enabled
    for block in model.transformer_blocks:
        block.zero_cond_t = enabled
    model.register_to_config(zero_cond_t=enabled)


class QwenImageBackend:
    name = "qwen_image"

    def __init__(self, params, base):
        self.model, self.vae, self.prompts = base.transformer, base.vae, base.prompt_encoder
        self.runner = self.model  # what is called: the loop swaps in the accelerate-prepared model
        self.mode = params.model.mode
        self.flow = params.flow
        set_zero_cond_t(self.model, params.model.zero_cond_t)

    def _stats(self):
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1)
        return mean, std

    def vae_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> normalised (B, 16, H/8, W/8); the Qwen VAE takes one-frame video."""
        p = pixels.to(self.vae.device, self.vae.dtype).unsqueeze(2)
        lat = self.vae.encode(p).latent_dist.mode()[:, :, 0].float().cpu()
        mean, std = self._stats()
        return (lat - mean) / std

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats()
        lat = (latents * std + mean).unsqueeze(2)
        return self.vae.decode(lat.to(self.vae.device, self.vae.dtype)).sample[:, :, 0].float().cpu()

    @torch.no_grad()
    def encode(self, samples) -> list[dict[str, torch.Tensor]]:
        seqs = [s.sequence() for s in samples]
        n = len(seqs[0])
        flat = to_pixels([im for seq in seqs for im in seq])
        lat = self.vae_encode(flat)
        lat = lat.view(len(samples), n, *lat.shape[1:])
        prompts = self.prompts.encode([s.instruction for s in samples], images=[q[1:] for q in seqs])
        out = []
        for i in range(len(samples)):
            d = {"latents": lat[i], "prompt": prompts.embeds[i].float().cpu()}
            d["prompt_mask"] = (prompts.mask[i] if prompts.mask is not None
                                else torch.ones(prompts.embeds.shape[1], dtype=torch.long))
            out.append(d)
        return out

    def layout(self, batch) -> dict:
        lat = batch["latents"]  # (B, n, 16, h, w)
        b, n, c, h, w = lat.shape
        per_image = pack(lat.reshape(b * n, c, h, w)).view(b, n, (h // 2) * (w // 2), c * 4)
        return {"n": n, "h": h, "w": w, "n_target": per_image.shape[2],
                "x0_target": per_image[:, 0], "x_cond": per_image[:, 1:].reshape(b, -1, c * 4),
                "img_shapes": [[(1, h // 2, w // 2)] * n] * b}

    def predict(self, x_t_target: torch.Tensor, sigma: torch.Tensor, batch, lay) -> torch.Tensor:
        """Velocity of the target tokens (B, N_target, 64)."""
        dev = next(self.model.parameters()).device
        hidden = torch.cat([x_t_target.to(dev), lay["x_cond"].to(dev, x_t_target.dtype)], dim=1)
        out = self.runner(hidden_states=hidden, encoder_hidden_states=batch["prompt"].to(dev),
                         encoder_hidden_states_mask=batch["prompt_mask"].to(dev), timestep=sigma.to(dev),
                         img_shapes=lay["img_shapes"], return_dict=False)[0]
        return out[:, :lay["n_target"]]

    def loss(self, batch, generator: torch.Generator) -> LossOut:
        lay = self.layout(batch)
        x0 = lay["x0_target"]
        sigma = fm.logit_normal_sigmas(x0.shape[0], mean=self.flow.logit_mean, std=self.flow.logit_std,
                                       generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        pred = self.predict(fm.noised(x0, noise, sigma), sigma, batch, lay)
        target = fm.velocity_target(x0, noise).to(pred.device)
        loss, per = fm.masked_mse(pred, target)
        return LossOut(loss, per, pred, target, None, sigma)
