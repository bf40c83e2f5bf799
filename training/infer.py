"""Run a trained adapter: (A, A', B) or a whole grid in, the target cell B' out.

Sampling integrates the flow ODE with Euler steps over the target only: in clean-context
and sequence modes the context tokens stay their clean latents (and, for FLUX, are modulated
at t = 0, exactly as in training); in Fill mode the whole grid starts from noise next to the
masked-grid condition, and the target cell is cut out at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import training  # noqa: F401
from core.sample_schema import SCHEMA_VERSION, cell_boxes
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


def resolve_device(device: str = "auto") -> torch.device:
    """"auto": the first GPU when there is one, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto": bf16 on a GPU (as `vicl train`'s default mixed precision), fp32 on a CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]


@dataclass
class Prepared:
    """One batch (one layout) encoded once, ready for any number of sampling runs."""

    samples: list
    batch: dict
    lay: dict
    cond: torch.Tensor | None  # FLUX Fill's masked-grid condition
    target: torch.Tensor | None  # (B, N, 1) bool on the device: FLUX tokens to generate

    @property
    def target_tokens(self) -> torch.Tensor:
        """(B, N_img) bool over the image tokens the transformer sees: the target cell's."""
        if self.target is not None:
            return self.target[..., 0]
        b, n_t = len(self.samples), self.lay["n_target"]
        n_img = n_t * self.lay["n"]
        return (torch.arange(n_img) < n_t).expand(b, n_img)


class Predictor:
    """A backend with a loaded adapter, ready to generate target cells.

    Sampling is split into `prepare` (encode once), `initial` (seeded noise), `step` (one
    Euler step = one transformer call) and `finish` (decode, cut the target), so seed
    selection can probe a few steps of several seeds over one encoding.
    """

    def __init__(self, backend):
        self.backend = backend
        backend.model.eval()
        self.device = next(backend.model.parameters()).device
        frozen = [p for p in backend.model.parameters() if not p.requires_grad] or list(backend.model.parameters())
        self.dtype = frozen[0].dtype  # base weights; adapters stay fp32

    @classmethod
    def from_adapter(cls, adapter_dir: str | Path, *, base: BaseModels | None = None, models_dir=None,
                     prompt_encoder: str = "pretrained", device: str = "auto", dtype: str = "auto") -> "Predictor":
        """Base weights and adapter on `device` in `dtype` (auto: GPU + bf16 where there is one)."""
        spec = read_spec(adapter_dir)
        params = params_from_spec(spec, models_dir=models_dir, prompt_encoder=prompt_encoder)
        dev = resolve_device(device)
        weight_dtype = resolve_dtype(dtype, dev)
        if base is None:
            base = load_base(params.model, dtype=weight_dtype, device=dev)
        elif dtype != "auto":  # given models (tests, notebooks) keep their dtype unless one is asked for
            base.transformer.to(weight_dtype)
            base.vae.to(weight_dtype)
        load_adapter(base.transformer, adapter_dir)
        base.transformer.to(dev)
        base.vae.to(dev)
        return cls(make_backend(params, base))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == torch.bfloat16)

    @torch.no_grad()
    def prepare(self, samples: list[GridSample]) -> Prepared:
        be = self.backend
        with self._autocast():
            batch = collate(be.encode(samples))
        lay = be.layout(batch)
        if be.name == "qwen_image":
            return Prepared(samples, batch, lay, None, None)
        cond = be.condition(batch, lay)
        return Prepared(samples, batch, lay, None if cond is None else cond.to(self.device),
                        lay["target"].unsqueeze(-1).to(self.device))

    def initial(self, prep: Prepared, seed: int | list[int]) -> torch.Tensor:
        """x at sigma = 1: seeded noise on the target (all of the grid in Fill mode). Each sample's
        noise comes from its own seed alone (one int: every sample's), drawn on the CPU, so a seed
        gives the same start whatever the batch and the device."""
        seeds = [seed] * len(prep.samples) if isinstance(seed, int) else list(seed)
        ref = prep.lay["x0_target"] if self.backend.name == "qwen_image" else prep.lay["x0"]
        noise = torch.stack([torch.randn(ref.shape[1:], generator=torch.Generator().manual_seed(int(s)))
                             for s in seeds]).to(self.device)
        if self.backend.name == "qwen_image" or self.backend.mode == "fill":
            return noise
        return torch.where(prep.target, noise, prep.lay["x0"].to(self.device))

    @torch.no_grad()
    def step(self, prep: Prepared, x: torch.Tensor, s: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """One Euler step from sigma s to s_next: exactly one transformer call."""
        be, b = self.backend, x.shape[0]
        with self._autocast():
            if be.name == "qwen_image":
                v = be.predict(x, s.repeat(b), prep.batch, prep.lay)
            else:
                v = be.predict(x, s.repeat(b), prep.batch, prep.lay, prep.cond)
        moved = x + (s_next - s).to(x.device) * v.float()
        if be.name == "qwen_image" or be.mode == "fill":
            return moved
        return torch.where(prep.target, moved, x)  # context tokens stay their clean latents

    @torch.no_grad()
    def finish(self, prep: Prepared, x: torch.Tensor) -> list[np.ndarray]:
        be, lay = self.backend, prep.lay
        if be.name == "qwen_image":
            return list(to_uint8(be.vae_decode(unpack(x.float().cpu(), lay["h"], lay["w"]))))
        grids = to_uint8(be.vae_decode(unpack(x.float().cpu(), lay["h"], lay["w"])))
        out = []
        for g, s in zip(grids, prep.samples):
            x0, y0, x1, y1 = s.target_box()
            out.append(g[y0:y1, x0:x1])
        return out

    def run(self, prep: Prepared, seed: int | list[int], sigmas: torch.Tensor) -> list[np.ndarray]:
        x = self.initial(prep, seed)
        for s, s_next in zip(sigmas[:-1], sigmas[1:]):
            x = self.step(prep, x, s, s_next)
        return self.finish(prep, x)

    @torch.no_grad()
    def generate(self, samples: list[GridSample], *, num_steps: int = 28, shift: float = 3.0,
                 seed: int | list[int] = 0) -> list[np.ndarray]:
        """B' for each sample (all of one layout): H x W x 3 uint8 target cells; `seed` is every
        sample's seed, or one per sample."""
        return self.run(self.prepare(samples), seed, fm.euler_sigmas(num_steps, shift))


def infer(adapter_dir: str | Path, a: str | np.ndarray, a_prime: str | np.ndarray, b: str | np.ndarray,
          out_path: str | Path, *, instruction: str = "", cell_size: int | None = None, num_steps: int = 28,
          shift: float = 3.0, seed: int = 0, seeds: int = 1, select: str = "first",
          probe_steps: tuple[int, ...] = (0, 1, 2), blocks: tuple[int, ...] | None = None, models_dir=None,
          base: BaseModels | None = None, prompt_encoder: str = "pretrained", device: str = "auto",
          dtype: str = "auto", log=None) -> np.ndarray:
    """`vicl infer`: apply the adapter to (A, A', B) and write B' to `out_path` (PNG).

    `seeds` > 1 draws candidates seed..seed+seeds-1 and keeps one by `select` (pivot: PICO's
    attention-pivot score over `probe_steps` in `blocks`; random; first)."""
    from training.seed_selection import generate_selected

    arrays = [np.asarray(Image.open(x).convert("RGB")) if isinstance(x, (str, Path)) else x for x in (a, a_prime, b)]
    predictor = Predictor.from_adapter(adapter_dir, base=base, models_dir=models_dir, prompt_encoder=prompt_encoder,
                                       device=device, dtype=dtype)
    sample = triple_sample(*arrays, instruction=instruction, cell_size=cell_size)
    res = generate_selected(predictor, [sample], seed=seed, seeds=seeds, select=select, num_steps=num_steps,
                            shift=shift, probe_steps=probe_steps, blocks=blocks)
    result = res.images[0]
    if log is not None and seeds > 1:
        log(f"seed {res.choices[0].seed} of {res.choices[0].candidates} by {select}; probe cost "
            f"{res.probe_calls} transformer calls on top of {num_steps}")
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
