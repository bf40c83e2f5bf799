"""Run a trained adapter: (A, A', B) or a whole grid in, the target cell B' out.

Sampling integrates the flow ODE with Euler steps over the target only: in clean-context
and sequence modes the context tokens stay their clean latents (and, for FLUX, are modulated
at t = 0, exactly as in training); in Fill mode the whole grid starts from noise next to the
masked-grid condition, and the target cell is cut out at the end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

import training  # noqa: F401
from pipelines.sample_schema import SCHEMA_VERSION, cell_boxes
from training import flow_matching as fm
from training.adapters import AdapterSpec, load_adapter, read_spec
from training.backends import make_backend
from training.backends.common import collate, to_uint8, unpack
from training.config import TrainParams
from training.data import TOKEN_PX, GridSample
from training.models import BaseModels, load_base


def params_from_spec(spec: AdapterSpec, *, models_dir=None, prompt_encoder: str = "pretrained") -> TrainParams:
    return TrainParams(model={"backend": spec.backend, "mode": spec.mode, "base_repo": spec.base_repo,
                              "models_dir": models_dir, "guidance": spec.guidance,
                              "zero_cond_t": spec.zero_cond_t, "prompt_encoder": prompt_encoder},
                       mixed_precision="no")


def triple_sample(a: np.ndarray, a_prime: np.ndarray, b: np.ndarray, *, instruction: str = "",
                  cell_size: int | None = None) -> GridSample:
    """A 2 x 2 grid [A, A'; B, ?] with the target at (1, 1); cells resized to one size."""
    if cell_size is None:
        h, w = (max(TOKEN_PX, s // TOKEN_PX * TOKEN_PX) for s in b.shape[:2])
    else:
        h = w = cell_size
    fit = [np.asarray(Image.fromarray(x[..., :3]).resize((w, h), Image.Resampling.BICUBIC)) for x in (a, a_prime, b)]
    cells = fit + [np.zeros_like(fit[0])]
    boxes = cell_boxes(2, 2, h, w)
    record = {"schema": SCHEMA_VERSION, "key": "infer", "split": "infer", "task": "", "family": "",
              "columns": ["source", "target"], "rows": 2, "cols": 2, "cell_height": h, "cell_width": w,
              "target_cell": {"row": 1, "col": 1},
              "cells": [{"row": i // 2, "col": i % 2, "node": "", "image_id": "", "is_target": i == 3,
                         "role": "query" if i >= 2 else "context", "box": boxes[i]} for i in range(4)],
              "instruction": {"layout": "", "task": "", "content": "", "text": instruction}}
    return GridSample("infer", record, cells, (h, w))


class Predictor:
    """A backend with a loaded adapter, ready to generate target cells."""

    def __init__(self, backend):
        self.backend = backend
        backend.model.eval()

    @classmethod
    def from_adapter(cls, adapter_dir: str | Path, *, base: BaseModels | None = None, models_dir=None,
                     prompt_encoder: str = "pretrained") -> "Predictor":
        spec = read_spec(adapter_dir)
        params = params_from_spec(spec, models_dir=models_dir, prompt_encoder=prompt_encoder)
        base = base or load_base(params.model)
        load_adapter(base.transformer, adapter_dir)
        return cls(make_backend(params, base))

    @torch.no_grad()
    def generate(self, samples: list[GridSample], *, num_steps: int = 28, shift: float = 3.0,
                 seed: int = 0) -> list[np.ndarray]:
        """B' for each sample (all of one layout): H x W x 3 uint8 target cells."""
        be = self.backend
        batch = collate(be.encode(samples))
        lay = be.layout(batch)
        gen = torch.Generator().manual_seed(seed)
        sigmas = fm.euler_sigmas(num_steps, shift)
        b = len(samples)
        if be.name == "qwen_image":
            x = torch.randn(lay["x0_target"].shape, generator=gen)
            for s, s_next in zip(sigmas[:-1], sigmas[1:]):
                v = be.predict(x, s.repeat(b), batch, lay).float().cpu()
                x = x + (s_next - s) * v
            cells = be.vae_decode(unpack(x, lay["h"], lay["w"]))
            return list(to_uint8(cells))
        noise = torch.randn(lay["x0"].shape, generator=gen)
        cond = be.condition(batch, lay)
        target = lay["target"].unsqueeze(-1)
        x = noise if be.mode == "fill" else torch.where(target, noise, lay["x0"])
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            v = be.predict(x, s.repeat(b), batch, lay, cond).float().cpu()
            step = x + (s_next - s) * v
            x = step if be.mode == "fill" else torch.where(target, step, x)
        grids = to_uint8(be.vae_decode(unpack(x, lay["h"], lay["w"])))
        out = []
        for g, s in zip(grids, samples):
            x0, y0, x1, y1 = s.target_box()
            out.append(g[y0:y1, x0:x1])
        return out


def infer(adapter_dir: str | Path, a: str | np.ndarray, a_prime: str | np.ndarray, b: str | np.ndarray,
          out_path: str | Path, *, instruction: str = "", cell_size: int | None = None, num_steps: int = 28,
          shift: float = 3.0, seed: int = 0, models_dir=None, base: BaseModels | None = None,
          prompt_encoder: str = "pretrained") -> np.ndarray:
    """`vicl infer`: apply the adapter to (A, A', B) and write B' to `out_path` (PNG)."""
    arrays = [np.asarray(Image.open(x).convert("RGB")) if isinstance(x, (str, Path)) else x for x in (a, a_prime, b)]
    predictor = Predictor.from_adapter(adapter_dir, base=base, models_dir=models_dir, prompt_encoder=prompt_encoder)
    sample = triple_sample(*arrays, instruction=instruction, cell_size=cell_size)
    result = predictor.generate([sample], num_steps=num_steps, shift=shift, seed=seed)[0]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(out_path)
    return result


def infer_grid(adapter_dir: str | Path, record: dict, grid_png: str | Path | bytes, out_path: str | Path, **kw) -> np.ndarray:
    """Apply the adapter to one shard-format grid (`json` record + `grid.png`); write the target cell."""
    import json

    from training.data import decode_sample

    raw = {"json": json.dumps(record).encode(),
           "grid.png": grid_png if isinstance(grid_png, bytes) else Path(grid_png).read_bytes()}
    sample = decode_sample(raw, kw.pop("cell_size", None))
    gen_kw = {k: kw.pop(k) for k in ("num_steps", "shift", "seed") if k in kw}
    predictor = Predictor.from_adapter(adapter_dir, **kw)
    result = predictor.generate([sample], **gen_kw)[0]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result).save(out_path)
    return result
