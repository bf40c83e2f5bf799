"""The training loop: accelerate (bf16, multi-GPU), gradient accumulation, checkpoints, jsonl logs.

Reproducibility: adapter init is seeded; each micro-batch's sigma and noise come from
(seed, rank, step, micro); the data stream is seeded per rank, and a resumed run skips the
batches the checkpointed run had consumed. Resuming therefore continues the same loss curve.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

import training  # noqa: F401
from training import flow_matching as fm
from training.adapters import AdapterSpec, apply_adapters, save_adapter
from training.backends import make_backend
from training.backends.common import collate
from training.config import TrainParams
from training.data import grid_batches
from training.latent_cache import LatentCache, encode_batch, fingerprint
from training.models import BaseModels, load_base
from training.moe_lora import collect_aux_loss, moe_layers

LOG_FILE = "train_log.jsonl"
CKPT_DIR = "checkpoints"
OPTIMIZER_FILE = "optimizer.pt"  # optimizer + scheduler state: tensors and plain values only
_CKPT_NAME = re.compile(r"step-(\d+)")


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint file holds more than tensors and plain values (a pickle that could run code)."""


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path
    log_path: Path
    steps: int
    losses: list[float] = field(default_factory=list)  # total loss per optimizer step run here


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The finished checkpoint with the highest step (`step-NNNNNNNN` with a state.json)."""
    ckpts = [(int(m.group(1)), p) for p in (output_dir / CKPT_DIR).glob("step-*")
             if (m := _CKPT_NAME.fullmatch(p.name)) and (p / "state.json").is_file()]
    return max(ckpts)[1] if ckpts else None


def _check_plain(obj, where: str = "state") -> None:
    """Raise TypeError unless obj is tensors and JSON-like values (what weights_only loading reads)."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} in a checkpoint")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a weights-only checkpoint")


def save_training_state(path: Path, optimizer, scheduler) -> None:
    """Optimizer and scheduler state as tensors plus plain values, readable with weights_only=True."""
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    _check_plain(state)
    torch.save(state, path)


def load_training_state(path: Path) -> dict:
    """Read `save_training_state`'s file without unpickling anything but tensors and plain values."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refusing to resume: the file holds objects other than tensors and plain values, "
            f"which vicl never writes and which could run code when unpickled ({first}). Delete "
            f"{path.parent} or set `resume: false` under train:") from None
    if not isinstance(state, dict) or not {"optimizer", "scheduler"} <= set(state):
        raise ValueError(f"{path}: not a vicl optimizer checkpoint (expected the keys optimizer and scheduler)")
    return state


def _save_checkpoint(output_dir: Path, step: int, model, spec, optimizer, scheduler, keep: int) -> Path:
    folder = output_dir / CKPT_DIR / f"step-{step:08d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model, spec, tmp)
    save_training_state(tmp / OPTIMIZER_FILE, optimizer, scheduler)
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    old = sorted((p for p in (output_dir / CKPT_DIR).glob("step-*") if _CKPT_NAME.fullmatch(p.name)),
                 key=lambda p: int(p.name.split("-")[1]))
    for stale in old[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def _load_checkpoint(folder: Path, model, optimizer, scheduler) -> int:
    from safetensors.torch import load_file

    state = load_training_state(folder / OPTIMIZER_FILE)  # before touching the model
    tensors = load_file(str(folder / "adapter.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        raise ValueError(f"checkpoint {folder} was written by another adapter setup "
                         f"(e.g. {sorted(set(tensors) ^ expected)[:3]}); use a new output_dir or resume: false")
    with torch.no_grad():
        for name, t in tensors.items():
            params[name].copy_(t.to(params[name].dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(json.loads((folder / "state.json").read_text())["step"])


def _warmup(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def train(params: TrainParams, *, base: BaseModels | None = None, max_steps: int | None = None) -> TrainResult:
    """Fine-tune the adapter named by `params`; `vicl train`.

    `base`: already-built models (tests pass tiny random ones); None loads them from
    `params.model.models_dir` or the HF cache. `max_steps` stops early (the schedule and
    checkpoints still follow `params.max_steps`); used to test interrupted runs.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # One process may train twice (tests, notebooks) with another precision; the distributed
    # state (PartialState) is kept, only the per-run accelerator settings are dropped.
    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(mixed_precision=params.mixed_precision)
    rank = accelerator.process_index
    out = Path(params.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    weight_dtype = torch.bfloat16 if params.mixed_precision == "bf16" else torch.float32

    torch.manual_seed(params.seed)
    base = base or load_base(params.model, dtype=weight_dtype)
    model = base.transformer
    if next(model.parameters()).dtype != weight_dtype:
        model.to(weight_dtype)
    spec = AdapterSpec.from_params(params)
    apply_adapters(model, spec)  # trainable tensors in fp32
    if params.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    base.vae.requires_grad_(False).eval()
    base.vae.to(accelerator.device)
    backend = make_backend(params, base)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=params.optim.lr, betas=params.optim.betas,
                                  eps=params.optim.eps, weight_decay=params.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup(params.optim.warmup_steps))
    # The scheduler is not prepared: accelerate would step it once per process per step.
    runner, optimizer = accelerator.prepare(model, optimizer)
    backend.runner = runner

    start = 0
    ckpt = latest_checkpoint(out) if params.resume else None
    if ckpt is not None:
        start = _load_checkpoint(ckpt, model, optimizer, scheduler)

    cache = None
    if params.data.cache_dir:
        cache = LatentCache(params.data.cache_dir, fingerprint(params, backend))
    batches = grid_batches(params.data, seed=params.seed, rank=rank)
    for _ in range(start * params.grad_accum):  # fast-forward to where the checkpoint stopped
        next(batches)

    log_path = out / LOG_FILE
    if start == 0 and accelerator.is_main_process and log_path.exists():
        log_path.unlink()
    losses: list[float] = []
    end = min(params.max_steps, max_steps or params.max_steps)
    aux_weight = params.moe.aux_loss_weight if params.moe.enabled else 0.0
    for step in range(start, end):
        fam_loss: dict[str, list[float]] = defaultdict(list)
        flow_sum = aux_sum = 0.0
        for micro in range(params.grad_accum):
            samples = next(batches)
            batch = collate(encode_batch(backend, samples, cache))
            sync = micro == params.grad_accum - 1
            with (nullcontext() if sync else accelerator.no_sync(runner)), accelerator.autocast():
                res = backend.loss(batch, fm.step_generator(params.seed, rank, step, micro))
                aux = collect_aux_loss(model)
                total = res.loss + (aux_weight * aux if aux is not None else 0.0)
            accelerator.backward(total / params.grad_accum)
            flow_sum += res.loss.item()
            aux_sum += aux.item() if aux is not None else 0.0
            for s, v in zip(samples, res.per_sample.tolist()):
                fam_loss[s.family].append(v)
        if params.optim.grad_clip:
            accelerator.clip_grad_norm_(trainable, params.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        flow = flow_sum / params.grad_accum
        aux_mean = aux_sum / params.grad_accum
        total_loss = flow + aux_weight * aux_mean
        losses.append(total_loss)
        if not math.isfinite(total_loss):
            raise FloatingPointError(f"loss is {total_loss} at step {step} (fp16? use bf16)")
        if accelerator.is_main_process and (step + 1) % params.log_every == 0:
            entry = {"step": step + 1, "loss": total_loss, "flow_loss": flow, "lr": scheduler.get_last_lr()[0],
                     "loss_by_family": {k: sum(v) / len(v) for k, v in sorted(fam_loss.items())}}
            if params.moe.enabled:
                entry["aux_loss"] = aux_mean
                loads = [m.last_load.tolist() for m in moe_layers(model) if m.last_load is not None]
                entry["expert_load"] = [sum(col) / len(loads) for col in zip(*loads)] if loads else []
            with log_path.open("a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")
        done = step + 1
        if accelerator.is_main_process and (done % params.checkpoint_every == 0 or done == params.max_steps):
            _save_checkpoint(out, done, model, spec, optimizer, scheduler, params.keep_checkpoints)
    accelerator.wait_for_everyone()
    adapter_dir = out / "adapter"
    if accelerator.is_main_process and end == params.max_steps:
        save_adapter(model, spec, adapter_dir)
    return TrainResult(out, adapter_dir, log_path, end, losses)
