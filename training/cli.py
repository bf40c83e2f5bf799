"""Entry points the lead wires as `vicl train` and `vicl infer`.

- `train(params)`: params is the `train:` section of params.yaml (TrainParams or a dict).
- `infer(adapter_dir, a, a_prime, b, out)`: writes B' for an (A, A', B) triple.
- `infer_grid(adapter_dir, record, grid_png, out)`: the same for a shard-format grid.
Multi-GPU: run under `accelerate launch -m training.cli train params.yaml`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import training  # noqa: F401
from training.config import TrainParams
from training.infer import infer, infer_grid  # noqa: F401  - re-exported for `vicl infer`
from training.loop import TrainResult
from training.loop import train as _train


def load_train_params(source: str | Path | dict | TrainParams) -> TrainParams:
    """TrainParams from a model, a dict, or a params.yaml (its `train:` section)."""
    if isinstance(source, TrainParams):
        return source
    if isinstance(source, dict):
        return TrainParams(**source)
    import yaml

    data = yaml.safe_load(Path(source).read_text()) or {}
    return TrainParams(**data.get("train", data))


def train(params: TrainParams | dict | str | Path, *, base=None, max_steps: int | None = None) -> TrainResult:
    return _train(load_train_params(params), base=base, max_steps=max_steps)


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
    args = ap.parse_args(argv)
    if args.cmd == "train":
        res = train(args.params)
        print(f"trained {res.steps} steps; adapter: {res.adapter_dir}; log: {res.log_path}")
    else:
        infer(args.adapter, args.a, args.a_prime, args.b, args.out, instruction=args.instruction,
              models_dir=args.models_dir, num_steps=args.steps, seed=args.seed, cell_size=args.cell_size)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
