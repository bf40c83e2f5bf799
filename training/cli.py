"""Entry points the lead wires as `vicl train` and `vicl infer`.

- `train(params)`: params is the `train:` section of params.yaml (TrainParams or a dict).
- `infer(adapter_dir, a, a_prime, b, out)`: writes B' for an (A, A', B) triple.
- `infer_grid(adapter_dir, record, grid_png, out)`: the same for a shard-format grid.
- `add_seed_arguments(parser)` / `add_eval_arguments(parser)` + `eval_main(args, params)`:
  the `--seeds/--select` options of `vicl infer` and the whole of `vicl eval`.
Multi-GPU: run under `accelerate launch -m training.cli train params.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import training  # noqa: F401
from training.config import TrainParams

# torch, diffusers and accelerate load on first use, so building `vicl`'s parser stays fast.


def __getattr__(name: str):
    if name in ("infer", "infer_grid"):  # re-exported for `vicl infer`
        from training import infer as module

        return getattr(module, name)
    raise AttributeError(name)


def load_train_params(source: str | Path | dict | TrainParams) -> TrainParams:
    """TrainParams from a model, a dict, or a params.yaml (its `train:` section)."""
    if isinstance(source, TrainParams):
        return source
    if isinstance(source, dict):
        return TrainParams(**source)
    import yaml

    data = yaml.safe_load(Path(source).read_text()) or {}
    return TrainParams(**data.get("train", data))


def train(params: TrainParams | dict | str | Path, *, base=None, max_steps: int | None = None):
    """Returns training.loop.TrainResult."""
    from training.loop import train as _train

    return _train(load_train_params(params), base=base, max_steps=max_steps)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def add_seed_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--seeds N --select pivot|random|first (and the probe's steps and blocks)."""
    p.add_argument("--seeds", type=int, default=1, help="candidate seeds: --seed, --seed+1, ... (default 1)")
    p.add_argument("--select", choices=("pivot", "random", "first"), default="pivot",
                   help="how to pick among --seeds candidates: PICO's attention pivot (default), a seeded "
                        "random pick, or the first; pivot costs (max probe step + 1) x N transformer calls")
    p.add_argument("--probe-steps", type=_ints, default=(0, 1, 2), help="pivot: denoising steps probed (0,1,2)")
    p.add_argument("--pivot-blocks", type=_ints, default=None,
                   help="pivot: transformer blocks read, indices over [double..., single...] blocks "
                        "(default: FLUX 9,11,12; other depths scaled)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda")
    p.add_argument("--dtype", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 on a GPU")
    return p


def add_eval_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--shards", nargs="+", default=None,
                   help="eval shards: files, globs or folders (grid or sequence layout); "
                        "default: <paths.out>/shards/eval*/*.tar")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--adapter", default=None, help="adapter folder written by `vicl train`")
    src.add_argument("--predictions", default=None, help="folder of predicted target cells named <key>.png")
    p.add_argument("--out", default=None, help="report folder (default: <paths.out>/eval)")
    p.add_argument("--baselines", default="copy_query,copy_exemplar,annotator",
                   help="comma list of copy_query, copy_exemplar, annotator ('' for none)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="score only the first N samples (key order)")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models-dir", default=None, help="base weights (default: train.model.models_dir)")
    p.add_argument("--perceptual", choices=("clip",), default=None,
                   help="also CLIP cosine for image targets (needs the open_clip ViT-L-14 weights)")
    return add_seed_arguments(p)


def infer_main(args) -> int:
    """`vicl infer` with parsed `args` (including the seed-selection options)."""
    from training.infer import infer

    infer(args.adapter, args.a, args.a_prime, args.b, args.out, instruction=args.instruction,
          models_dir=args.models_dir, num_steps=args.steps, seed=args.seed, cell_size=args.cell_size,
          seeds=args.seeds, select=args.select, probe_steps=args.probe_steps, blocks=args.pivot_blocks,
          device=args.device, dtype=args.dtype, log=print)
    print(f"wrote {args.out}")
    return 0


def eval_main(args, params) -> int:
    """`vicl eval` with parsed `args` and the pipeline Params (annotators for the ceiling)."""
    from training.evaluate import BASELINES, default_eval_shards, run_eval

    baselines = tuple(b for b in args.baselines.split(",") if b)
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise SystemExit(f"--baselines: unknown {unknown} (known: {', '.join(BASELINES)})")
    shards = args.shards or default_eval_shards(params.paths.out)
    out = args.out or str(Path(params.paths.out) / "eval")
    run_eval(shards, out_dir=out, params=params, adapter=args.adapter, predictions=args.predictions,
             baselines=baselines, batch_size=args.batch_size, limit=args.limit, num_steps=args.steps,
             seed=args.seed, seeds=args.seeds, select=args.select, probe_steps=args.probe_steps,
             blocks=args.pivot_blocks, device=args.device, dtype=args.dtype,
             models_dir=args.models_dir or params.train.model.models_dir, perceptual=args.perceptual)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.cli")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="fine-tune a LoRA / MoE-LoRA adapter on vicl shards")
    t.add_argument("params", help="params.yaml (its train: section)")
    i = sub.add_parser("infer", help="apply an adapter to (A, A', B) and write B'")
    i.add_argument("adapter")
    i.add_argument("a")
    i.add_argument("a_prime")
    i.add_argument("b")
    i.add_argument("out")
    i.add_argument("--instruction", default="")
    i.add_argument("--models-dir", default=None)
    i.add_argument("--steps", type=int, default=28)
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--cell-size", type=int, default=None)
    add_seed_arguments(i)
    args = ap.parse_args(argv)  # evaluation is `vicl eval`: it reads the whole params (annotators for the ceiling)
    if args.cmd == "train":
        res = train(args.params)
        print(f"trained {res.steps} steps; adapter: {res.adapter_dir}; log: {res.log_path}")
    else:
        infer_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
