"""Pieces both backends share: pixels <-> tensors, 2x2 latent packing, token masks, collation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import training  # noqa: F401


@dataclass
class LossOut:
    loss: torch.Tensor  # scalar, flow-matching loss (no aux)
    per_sample: torch.Tensor  # (B,)
    pred: torch.Tensor  # (B, N, C) the model's velocity for every image token it returned
    target: torch.Tensor  # (B, N, C)
    loss_mask: torch.Tensor | None  # (B, N) bool; None: all tokens
    sigma: torch.Tensor  # (B,)


def to_pixels(arrays: list[np.ndarray]) -> torch.Tensor:
    """uint8 H x W x 3 arrays -> (B, 3, H, W) float in [-1, 1]."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> B x H x W x 3 uint8."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): 2x2 patches, row-major tokens (the FLUX/Qwen packing)."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack` for a latent of h x w."""
    b, n, d = tokens.shape
    c = d // 4
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def token_box_mask(boxes_px: torch.Tensor, token_hw: tuple[int, int], token_px: int = 16) -> torch.Tensor:
    """(B, 4) pixel boxes [x0, y0, x1, y1] -> (B, th*tw) bool of the tokens inside each box."""
    th, tw = token_hw
    rows = torch.arange(th).view(1, th, 1)
    cols = torch.arange(tw).view(1, 1, tw)
    b = (boxes_px // token_px).view(-1, 4, 1, 1)
    inside = (cols >= b[:, 0]) & (cols < b[:, 2]) & (rows >= b[:, 1]) & (rows < b[:, 3])
    return inside.reshape(boxes_px.shape[0], th * tw)


def pixel_box_mask(boxes_px: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) boxes -> (B, 1, H, W) float mask, 1 inside the box."""
    h, w = hw
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    b = boxes_px.view(-1, 4, 1, 1)
    inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    return inside.unsqueeze(1).float()


def collate(encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack per-sample tensors; prompts of different lengths are right-padded with a mask."""
    out: dict[str, torch.Tensor] = {}
    for name in encoded[0]:
        items = [e[name] for e in encoded]
        if name == "prompt" and len({t.shape[0] for t in items}) > 1:
            length = max(t.shape[0] for t in items)
            padded = items[0].new_zeros(len(items), length, items[0].shape[-1])
            mask = torch.zeros(len(items), length, dtype=torch.long)
            for i, t in enumerate(items):
                padded[i, :t.shape[0]] = t
                mask[i, :t.shape[0]] = encoded[i].get("prompt_mask", torch.ones(t.shape[0], dtype=torch.long))
            out["prompt"], out["prompt_mask"] = padded, mask
        elif name == "prompt_mask" and "prompt_mask" in out:
            continue
        else:
            out[name] = torch.stack(items)
    return out
