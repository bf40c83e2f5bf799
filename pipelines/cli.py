"""`vicl`: one subcommand per stage, `vicl run` for the chain, `vicl status` for what is done.

Every subcommand calls the same stage functions the dvc stages call (dvc.yaml runs
`vicl <stage>`), so there is one code path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipelines.catalog import StageOrderError
from pipelines.params import ParamsError, check_inputs, load_params

STAGES = ("ingest", "annotate", "mine", "sample", "export")


def _progress():
    from tqdm import tqdm

    return tqdm


def _store(params):
    from pipelines.store import NodeStore

    return NodeStore(params.paths.store)


def _stage(name: str, params, store, progress):
    if name == "ingest":
        from pipelines.stages.ingest import run_ingest

        return run_ingest(params, store, progress)
    if name == "annotate":
        from pipelines.stages.annotate import run_annotate

        return run_annotate(params, store, progress)
    if name == "mine":
        from pipelines.stages.mine import run_mine_stage

        return run_mine_stage(params, store)
    if name == "sample":
        from pipelines.stages.sample import run_sample

        return run_sample(params, store)
    if name == "export":
        from pipelines.stages.export import run_export

        return run_export(params, store, progress)
    raise ValueError(name)


def run_stages(names, params, ray_address: str | None = None, progress=None, log=print) -> dict:
    from pipelines import ray_runtime

    store = _store(params)
    results = {}
    with ray_runtime.session(params.ray, ray_address):
        for name in names:
            start = time.perf_counter()
            results[name] = _stage(name, params, store, progress)
            log(f"[{name}] done in {time.perf_counter() - start:.1f}s: {json.dumps(results[name])}")
    return results


def closing_summary(params) -> tuple[int, int]:
    """(live images, failures) over the whole store: the same two numbers `vicl status` and the
    failures table give."""
    from pipelines.annotation_plan import plan
    from pipelines.stages.ingest import summarise_ingest

    store = _store(params)
    if not store.images_dir.exists():
        return 0, 0
    ok = summarise_ingest(store)["ok"]
    return ok, store.failures([r.folder for r in plan(params, store)]).num_rows


def require_inputs(stage: str, store) -> None:
    """A stage run before the stage that makes its inputs stops here, naming the command to run."""
    need = {"annotate": (store.images_dir / "listing.parquet", "vicl ingest"),
            "mine": (store.catalog_path, "vicl annotate"), "sample": (store.catalog_path, "vicl annotate"),
            "export": (store.samples_path, "vicl sample")}
    if stage in need and not need[stage][0].exists():
        raise StageOrderError(f"{need[stage][0]} does not exist: run `{need[stage][1]}` first")


EXIT_UNFINISHED = 75  # EX_TEMPFAIL: transient failures left parts for a later run


def cmd_stage(args) -> int:
    params = load_params(args.params)
    names = STAGES if args.command == "run" else (args.command,)
    if "ingest" in names:
        check_inputs(params, args.params)  # inputs exist: one line and exit 2, before Ray starts
    if names[0] != "ingest":
        require_inputs(names[0], _store(params))  # the stages before it ran
    results = run_stages(names, params, args.ray_address, _progress())
    ok, failed = closing_summary(params)
    print(f"{ok} ok, {failed} failed")
    if failed:
        print(f"failures table: {Path(params.paths.out) / 'failures.parquet'} (after export); "
              f"`vicl status` lists reasons")
    unfinished = sum(r.get("unfinished_parts", 0) for r in results.get("annotate", []))
    if unfinished:
        print(f"{unfinished} annotator parts left unfinished by transient errors (out of memory, device lost, "
              f"timeouts): run `vicl annotate` again", file=sys.stderr)
        return EXIT_UNFINISHED
    return 1 if (args.fail_on_error and failed) else 0


def cmd_validate(args) -> int:
    check_inputs(load_params(args.params), args.params)
    print(f"{args.params}: ok")
    return 0


def cmd_status(args) -> int:
    from pipelines.status import status_report

    params = load_params(args.params)
    print(status_report(params, _store(params)))
    return 0


def cmd_train(args) -> int:
    from training.cli import train

    params = load_params(args.params)
    train_params = params.train.model_copy(deep=True)
    if not train_params.data.shards:  # default: the train split this params file exports
        train_params.data.shards = [str(Path(params.paths.out) / "shards" / "train" / "*.tar")]
    result = train(train_params, max_steps=args.max_steps)
    print(f"trained {result.steps} steps; adapter: {result.adapter_dir}; log: {result.log_path}")
    return 0


def cmd_infer(args) -> int:
    from training.cli import infer_main

    return infer_main(args)  # incl. --seeds/--select (seed selection), --device/--dtype


def cmd_eval(args) -> int:
    from training.cli import eval_main

    return eval_main(args, load_params(args.params))


def cmd_models(args) -> int:
    from pipelines import models_cli

    params = load_params(args.params)
    configured = list(params.annotate.annotators)
    models_dir = args.models_dir or params.annotate.models_dir
    if args.action == "list":
        print(models_cli.models_list(args.all, configured))
        return 0
    if args.action == "check":
        text, ok = models_cli.models_check(models_dir, args.all, configured)
        print(text)
        return 0 if ok else 1
    if not args.name:
        print("vicl models fetch NAME: give a repository id or an annotator name", file=sys.stderr)
        return 2
    for path in models_cli.models_fetch(args.name, models_dir):
        print(f"fetched into {path}")
    return 0


def cmd_tasks(args) -> int:
    from pipelines.tasks import cmd_tasks as show_tasks

    return show_tasks(load_params(args.params))


def cmd_preview(args) -> int:
    from pipelines.preview import cmd_preview as write_preview

    return write_preview(load_params(args.params), args.n)


def cmd_report(args) -> int:
    from pipelines.report import cmd_report as write_report

    return write_report(load_params(args.params))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vicl", description="Build visual in-context learning datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        return p

    helps = {"ingest": "read the configured sources into the node store (normalised RGB images)",
             "annotate": "run every configured annotator over every image, in dependency order",
             "mine": "mine open-domain edit quadruplets (task vectors, K-Means, neighbours, dual filter)",
             "sample": "draw in-context samples (tasks x rows of distinct images) into the samples table",
             "export": "write WebDataset shards, the failures table and the manifest",
             "run": "ingest -> annotate -> mine -> sample -> export in one Ray session"}
    for name, text in helps.items():
        p = common(sub.add_parser(name, help=text, description=text))
        p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: RAY_ADDRESS or local)")
        p.add_argument("--fail-on-error", action="store_true", help="exit 1 when any input or annotation failed")
        p.set_defaults(func=cmd_stage)
    p = common(sub.add_parser("status", help="what is done and what is left, per stage",
                              description="what is done and what is left, per stage"))
    p.set_defaults(func=cmd_status)
    text = "print the enumerated tasks (families x node types present) and the VisRel axes coverage matrix"
    p = common(sub.add_parser("tasks", help=text, description=text))
    p.set_defaults(func=cmd_tasks)
    text = "write an HTML contact sheet of N samples per task with their instructions"
    p = common(sub.add_parser("preview", help=text, description=text))
    p.add_argument("--n", type=int, default=None, help="samples per task (default: export.preview_per_task)")
    p.set_defaults(func=cmd_preview)
    text = "write report.html/json: counts per task, node type, axis cell, clusters, failures, leakage"
    p = common(sub.add_parser("report", help=text, description=text))
    p.set_defaults(func=cmd_report)
    text = "list the weights annotators need, check which are on disk, fetch them (needs network)"
    p = common(sub.add_parser("models", help=text, description=text))
    p.add_argument("action", choices=("list", "check", "fetch"))
    p.add_argument("name", nargs="?", help="fetch: a repository id or an annotator name")
    p.add_argument("--all", action="store_true", help="every registered annotator (default: the configured ones)")
    p.add_argument("--models-dir", default=None, help="default: annotate.models_dir")
    p.set_defaults(func=cmd_models)
    text = "fine-tune a LoRA / MoE-LoRA adapter of FLUX or Qwen-Image on the exported shards (train: section)"
    p = common(sub.add_parser("train", help=text, description=text))
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: train.max_steps)")
    p.set_defaults(func=cmd_train)
    text = "apply a trained adapter to an (A, A', B) triple and write B'"
    p = sub.add_parser("infer", help=text, description=text)
    for name, what in (("adapter", "adapter folder written by `vicl train`"), ("a", "exemplar source A"),
                       ("a_prime", "exemplar target A'"), ("b", "query source B"), ("out", "where to write B'")):
        p.add_argument(name, help=what)
    p.add_argument("--instruction", default="")
    p.add_argument("--models-dir", default=None, help="local folder with the base weights")
    p.add_argument("--steps", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell-size", type=int, default=None)
    from training.cli import add_eval_arguments, add_seed_arguments

    add_seed_arguments(p)
    p.set_defaults(func=cmd_infer)
    text = "score an adapter, or a folder of predictions named by sample key, on the eval shards, with baselines"
    p = add_eval_arguments(common(sub.add_parser("eval", help=text, description=text)))
    p.set_defaults(func=cmd_eval)
    p = common(sub.add_parser("validate", help="validate params.yaml and stop",
                              description="validate params.yaml and stop"))
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ParamsError as e:
        print(f"invalid params:\n{e}", file=sys.stderr)
        return 2
    except StageOrderError as e:
        print(f"vicl {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
