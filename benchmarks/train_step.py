"""Train-step time, peak memory and MFU of the bundled trainer's FLUX clean-context step.

Variants, measured in one process (ratios against the first):
  baseline   LoRA, stock per-sample modulation (every token at t)
  lora       LoRA, PICO clean context (per-token modulation: context at t = 0)
  moe-lora   MoE-LoRA on ff.net.2 (E experts, top-k) + LoRA elsewhere, clean context

    python benchmarks/train_step.py                          # tiny model, CPU
    python benchmarks/train_step.py --preset small
    python benchmarks/train_step.py --preset flux-12b --device cuda   # FLUX.1-dev, r=256, 1024^2 grid

MFU counts model FLOPs = 2 x forward FLOPs (forward + activation gradients; the base weights
are frozen, so no weight gradients), measured with torch's FlopCounterMode on one forward;
gradient-checkpointing recomputation is excluded (HFU, which includes it, is printed too).
The peak is the datasheet's dense (no sparsity) bf16 figure for the GPU, looked up by its
name in PEAK_BF16_TFLOPS and printed; --peak-tflops overrides it (and is required for a GPU the
table does not know).
"""

from __future__ import annotations

import argparse
import gc
import resource
import time

import torch

import training  # noqa: F401
from training import flow_matching as fm
from training.adapters import AdapterSpec, apply_adapters
from training.backends.flux import FluxBackend
from training.config import TrainParams
from training.models import BaseModels, flux_12b_transformer, tiny_flux_transformer
from training.moe_lora import collect_aux_loss

# Dense bf16 tensor-core peaks, TFLOP/s, from the vendors' datasheets (the "with sparsity"
# figures are twice these). Matched against torch.cuda.get_device_name(), first hit wins, so
# the more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),  # SXM; same tensor cores as H100 SXM
    ("H800", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops_for(device_name: str) -> float | None:
    """Dense bf16 peak of a GPU by name, None when the table does not know it."""
    name = device_name.upper()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def resolve_peak(device: str, override: float | None) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) for the MFU line."""
    if override is not None:
        return override, "--peak-tflops"
    if not device.startswith("cuda"):
        return None, "no GPU"
    name = torch.cuda.get_device_name(torch.device(device))
    peak = peak_tflops_for(name)
    if peak is None:
        raise SystemExit(f"no dense bf16 peak known for {name!r}: pass --peak-tflops")
    return peak, f"table entry for {name!r}"


PRESETS = {
    #            transformer kwargs (None: real FLUX)                      grid  rank  text  ckpt
    "tiny": (dict(num_layers=1, num_single_layers=1), 64, 8, 8, False),
    "small": (dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                   joint_attention_dim=256, pooled_projection_dim=64, axes_dims_rope=(8, 28, 28)), 256, 32, 64, False),
    "flux-12b": (None, 1024, 256, 512, True),
}


def build(preset: str, device: str, dtype: torch.dtype):
    kwargs = PRESETS[preset][0]
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: 12B never exists in fp32 (48 GB)
    try:
        with torch.device(device):
            model = flux_12b_transformer() if kwargs is None else tiny_flux_transformer(**kwargs)
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype)


def params_for(args, moe: bool) -> TrainParams:
    return TrainParams(model={"prompt_encoder": "random"}, lora={"rank": args.rank, "alpha": args.rank},
                       moe={"enabled": moe, "num_experts": args.experts, "top_k": args.top_k},
                       mixed_precision="bf16" if args.dtype == "bf16" else "no",
                       gradient_checkpointing=args.ckpt)


def synthetic_batch(model, args, device) -> dict:
    lat = args.grid // 8
    half = args.grid // 2
    return {
        "latents": torch.randn(args.batch, 16, lat, lat),
        "target_box": torch.tensor([[half, half, args.grid, args.grid]] * args.batch),  # bottom-right cell
        "prompt": torch.randn(args.batch, args.text, model.config.joint_attention_dim),
        "pooled": torch.randn(args.batch, model.config.pooled_projection_dim),
    }


def forward_flops(backend, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    lay = backend.layout(batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, _autocast(backend):
        backend.predict(lay["x0"], torch.full((lay["x0"].shape[0],), 0.5), batch, lay)
    return float(counter.get_total_flops())


def _autocast(backend):
    dev = next(backend.model.parameters()).device
    enabled = next(p for p in backend.model.parameters() if not p.requires_grad).dtype == torch.bfloat16
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=enabled)


def measure(backend, batch, trainable, args) -> tuple[float, float]:
    """Seconds per optimizer step (median of --steps after --warmup) and peak memory in GiB."""
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    dev = next(backend.model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        with _autocast(backend):
            res = backend.loss(batch, fm.step_generator(0, 0, step))
            aux = collect_aux_loss(backend.model)
            loss = res.loss + (0.01 * aux if aux is not None else 0.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process RSS high-water mark
    del opt
    return times[len(times) // 2], peak


def run_variant(name, args, moe: bool, per_token: bool, device, dtype, cache: dict):
    if cache.get("moe") != moe:
        cache.clear()
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        torch.manual_seed(0)
        model = build(args.preset, device, dtype)
        apply_adapters(model, AdapterSpec.from_params(params_for(args, moe)))
        if args.ckpt:
            model.enable_gradient_checkpointing()
        model.train()
        backend = FluxBackend(params_for(args, moe), BaseModels(model, None, None, "random"))
        cache.update(moe=moe, backend=backend, handle=backend.modulation,
                     batch=synthetic_batch(model, args, device))
    backend, batch = cache["backend"], cache["batch"]
    backend.modulation = cache["handle"] if per_token else None  # None: predict leaves t per sample
    cache["handle"].set_clean_tokens(None)
    trainable = [p for p in backend.model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    flops = forward_flops(backend, batch)
    step_s, peak = measure(backend, batch, trainable, args)
    return {"name": name, "step_s": step_s, "peak_gib": peak, "trainable": n_train, "fwd_flops": flops}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--grid", type=int, default=None, help="grid side in px (2x2 cells)")
    ap.add_argument("--rank", type=int, default=None)
    ap.add_argument("--text", type=int, default=None, help="prompt tokens")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    ap.add_argument("--ckpt", action=argparse.BooleanOptionalAction, default=None, help="gradient checkpointing")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak for MFU (default: PEAK_BF16_TFLOPS by GPU name)")
    args = ap.parse_args(argv)
    _, grid, rank, text, ckpt = PRESETS[args.preset]
    args.grid = args.grid or grid
    args.rank = args.rank or rank
    args.text = args.text or text
    args.ckpt = ckpt if args.ckpt is None else args.ckpt
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    tokens = (args.grid // 16) ** 2
    print(f"preset={args.preset} device={args.device} dtype={args.dtype} grid={args.grid}px (2x2) "
          f"image tokens={tokens} (target {tokens // 4}) text tokens={args.text} batch={args.batch} "
          f"rank={args.rank} experts={args.experts} top-k={args.top_k} ckpt={args.ckpt} "
          f"threads={torch.get_num_threads()}")
    peak_tflops, peak_from = resolve_peak(args.device, args.peak_tflops)
    if peak_tflops is not None:
        print(f"MFU peak: {peak_tflops:.0f} TFLOP/s dense bf16 ({peak_from})")
    cache: dict = {}
    rows = [run_variant("baseline (LoRA, per-sample t)", args, False, False, args.device, dtype, cache),
            run_variant("LoRA clean context", args, False, True, args.device, dtype, cache),
            run_variant("MoE-LoRA clean context", args, True, True, args.device, dtype, cache)]
    base = rows[0]
    for r in rows:
        model_flops = 2 * r["fwd_flops"]
        hw_flops = (3 if args.ckpt else 2) * r["fwd_flops"]
        line = (f"{r['name']:<30} step {r['step_s'] * 1e3:9.1f} ms  x{r['step_s'] / base['step_s']:.2f}  "
                f"peak {r['peak_gib']:7.2f} GiB  trainable {r['trainable'] / 1e6:9.3f} M "
                f"(x{r['trainable'] / base['trainable']:.3f})  fwd {r['fwd_flops'] / 1e12:.3f} TFLOP")
        if peak_tflops is not None:
            mfu = model_flops / r["step_s"] / (peak_tflops * 1e12)
            hfu = hw_flops / r["step_s"] / (peak_tflops * 1e12)
            line += f"  MFU {mfu * 100:5.1f}%  HFU {hfu * 100:5.1f}% (of {peak_tflops:.0f} TFLOP/s)"
        else:
            line += f"  {model_flops / r['step_s'] / 1e9:.2f} GFLOP/s"
        print(line)
    if not args.device.startswith("cuda"):
        print("peak on CPU is the process RSS high-water mark (includes Python and the libraries)")


if __name__ == "__main__":
    main()
