"""Rectified-flow training objective: x_t = (1 - sigma) x0 + sigma eps, target eps - x0.

Everything takes an explicit torch.Generator, so a step's noise is a pure function of the
seed and the step index (which is what makes checkpoint resume reproduce the loss curve).
"""

from __future__ import annotations

import torch


def step_generator(seed: int, rank: int, step: int, micro: int = 0) -> torch.Generator:
    """Independent, reproducible stream per (seed, rank, optimizer step, micro-batch)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + rank * 10_007 + step * 101 + micro) % (2**63 - 1))
    return g


def logit_normal_sigmas(batch: int, *, mean: float, std: float, generator: torch.Generator) -> torch.Tensor:
    """sigma = sigmoid(N(mean, std)), one per sample (SD3 / FLUX training density)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
           where: torch.Tensor | None = None) -> torch.Tensor:
    """x_t for tokens (B, N, C); `where` (B, N) bool keeps the other tokens exactly x0."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    xt = (1 - s) * x0 + s * noise
    if where is None:
        return xt
    return torch.where(where.unsqueeze(-1), xt, x0)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error over the masked tokens (B, N, C) -> (scalar, per-sample (B,)).

    Tokens outside `mask` do not enter the loss at all, so their gradient is exactly zero.
    """
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        per = err.mean(dim=(1, 2))
        return per.mean(), per
    m = mask.to(err.dtype).unsqueeze(-1)
    count = m.sum(dim=(1, 2)) * err.shape[-1]
    per = (err * m).sum(dim=(1, 2)) / count.clamp_min(1)
    total = (err * m).sum() / (count.sum().clamp_min(1))
    return total, per


def euler_sigmas(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """Decreasing sigmas 1 -> 0 for sampling, with the SD3/FLUX time shift."""
    s = torch.linspace(1.0, 0.0, num_steps + 1)
    return shift * s / (1 + (shift - 1) * s)
