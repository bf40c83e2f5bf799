"""`vicl`: one subcommand per stage, `vicl run` for the chain, `vicl status` for what is done.

Every subcommand calls the same stage functions the dvc stages call (dvc.yaml runs
`vicl <stage>`), so there is one code path.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shlex
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from pipelines.stage import StageOrderError
from pipelines.params import ParamsError, WeightsMissing, load_params
from pipelines.store_lock import StoreLocked



@contextmanager
def _progress():
    """tqdm, closing on the way out every bar a stage opened: a bar an error or Ctrl-C left open
    would redraw itself at exit, after the command's closing line."""
    from tqdm import tqdm

    bars = []

    def bar(*args, **kwargs):
        bars.append(tqdm(*args, **kwargs))
        return bars[-1]

    try:
        yield bar
    finally:
        for b in bars:
            b.close()


def _store(params):
    from pipelines.store import NodeStore

    return NodeStore(params.paths.store)


def run_stages(names, params, ray_address: str | None = None, progress=None, log=print) -> dict:
    from pipelines import executor
    from pipelines.stages import STAGES

    by_name = {stage.name: stage for stage in STAGES}
    store = _store(params)
    results = {}
    with executor.session(params.ray, ray_address):
        for name in names:
            start = time.perf_counter()
            results[name] = by_name[name].run(params, store, progress)
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


EXIT_USAGE = 2  # invalid params, a stage run before its inputs exist, the store in use, missing weights
EXIT_DATAERR = 65  # EX_DATAERR: a store file failed its checksums (`vicl verify --repair`)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: `vicl models fetch` could not reach the hub
EXIT_IOERR = 74  # EX_IOERR: disk full or read-only file system; finished work is kept
EXIT_UNFINISHED = 75  # EX_TEMPFAIL: transient failures left parts for a later run
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


@contextmanager
def writer_lock(args, params, required: bool = True):
    """The store's one-writer lock, held while a command writes the store or `paths.out`
    (a second writer would delete this run's temporary files as leftovers of a killed run)."""
    from pipelines.store_lock import store_lock

    command = getattr(args, "command_line", None) or f"vicl {args.command}"
    with store_lock(params.paths.store, command, required):
        yield


def cmd_stage(args) -> int:
    params = load_params(args.params)
    with writer_lock(args, params):
        return _run_stage_command(args, params)


def _run_stage_command(args, params) -> int:
    from pipelines.stage import require_inputs
    from pipelines.stages import STAGES

    chosen = STAGES if args.command == "run" else tuple(s for s in STAGES if s.name == args.command)
    for stage in chosen:
        if stage.check is not None:
            stage.check(params, args.params)  # inputs, weights: one line and exit 2, before Ray starts
    require_inputs(chosen[0], params, STAGES)  # the stages before it ran
    names = [stage.name for stage in chosen]
    with _progress() as progress:
        results = run_stages(names, params, args.ray_address, progress)
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
    from pipelines.stages import STAGES

    params = load_params(args.params)
    for stage in STAGES:  # every stage's own check: inputs, weights
        if stage.check is not None:
            stage.check(params, args.params)
    print(f"{args.params}: ok")
    return 0


def cmd_verify(args) -> int:
    from pipelines.verify import report_lines, verify

    params = load_params(args.params)
    if args.repair:  # removes files: the one-writer lock
        with writer_lock(args, params):
            result = verify(Path(params.paths.store), Path(params.paths.out), repair=True)
    else:
        result = verify(Path(params.paths.store), Path(params.paths.out))
    print("\n".join(report_lines(result, args.repair)))
    return EXIT_DATAERR if result["damaged"] and not args.repair else 0


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
    try:
        paths = models_cli.models_fetch(args.name, models_dir)
    except KeyError as e:
        return _fail(f"vicl models fetch: {e.args[0]}", EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - offline, no such repository, no access: one line, not a traceback
        return _fail(models_cli.fetch_error_line(args.name, e), EXIT_UNAVAILABLE)
    for path in paths:
        print(f"fetched into {path}")
    return 0


def cmd_tasks(args) -> int:
    from pipelines.tasks import cmd_tasks as show_tasks

    return show_tasks(load_params(args.params))


def cmd_preview(args) -> int:
    from pipelines.preview import cmd_preview as write_preview

    params = load_params(args.params)
    with writer_lock(args, params, required=False):  # writes under paths.out, which export rewrites
        return write_preview(params, args.n)


def cmd_report(args) -> int:
    from pipelines.report import cmd_report as write_report

    params = load_params(args.params)
    with writer_lock(args, params, required=False):  # writes under paths.out, which export rewrites
        return write_report(params)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vicl", description="Build visual in-context learning datasets.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        return p

    from pipelines.stages import STAGES

    helps = {stage.name: stage.help for stage in STAGES}
    helps["run"] = " -> ".join(helps) + " in one session"
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
    p = common(sub.add_parser("validate", help="validate params.yaml (inputs, model weights) and stop",
                              description="validate params.yaml (inputs, model weights) and stop"))
    p.set_defaults(func=cmd_validate)
    text = "check every store file's page checksums and the shards' SHA256SUMS; --repair removes what is damaged"
    p = common(sub.add_parser("verify", help=text, description=text))
    p.add_argument("--repair", action="store_true", help="remove damaged files (the next `vicl run` remakes them)")
    p.set_defaults(func=cmd_verify)
    return parser


STORAGE_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}
# "OSError: [Errno 28] No space left on device: '/store/x'" as a worker's traceback text writes it
_ERRNO_TEXT = re.compile(r"^[\w.]*(?:Error|Exception)\b.*?\[errno (\d+)\].*?(?:: '(.+)')?$",
                         re.IGNORECASE | re.MULTILINE)


def _chain(exc: BaseException):
    """`exc`, its causes and contexts, and the `.cause` a Ray error carries from its worker."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]


def storage_error(exc: BaseException) -> OSError | None:
    """The disk-full or read-only OSError behind `exc`, however Ray wrapped it, else None.

    Ray Data passes a worker's exception on as a UserCodeException whose own cause is lost in
    pickling; only the worker's traceback, in the Ray error's text, still names the OSError, so it
    is read from there as a last resort."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return e
        cause = getattr(e, "cause", None)  # RayTaskError(OSError): the errno is on the worker's original
        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS:
            return cause
    for e in _chain(exc):
        for m in _ERRNO_TEXT.finditer(getattr(e, "traceback_str", None) or str(e)):
            code = int(m.group(1))
            if code in STORAGE_ERRNOS:
                return OSError(code, os.strerror(code), m.group(2))
    return None


# "corrupt store file <path>: <why>. Run `vicl verify --repair` ..." (pipelines/store.py CorruptPartError)
_CORRUPT_TEXT = re.compile(r"corrupt store file [^\n]*?`vicl run` to recompute them")


def corrupt_file(exc: BaseException) -> str | None:
    """The CorruptPartError message behind `exc` (raised in a Ray worker: read from its text), else None."""
    from pipelines.store import CorruptPartError

    for e in _chain(exc):
        if isinstance(e, CorruptPartError):
            return str(e)
    for e in _chain(exc):
        m = _CORRUPT_TEXT.search(getattr(e, "traceback_str", None) or str(e))
        if m:
            return m.group(0)
    return None


def _resume(args, fix: str) -> str:
    """What was kept and what to run, for the closing line of a failed or interrupted command."""
    command = getattr(args, "command_line", None) or f"vicl {args.command}"
    if getattr(args, "func", None) is cmd_stage:  # a stage or `run`
        return f"finished parts and shards are kept; {fix}run `{command}` to resume"
    return f"{fix}run `{command}` again"


def storage_line(args, err: OSError) -> str:
    what = STORAGE_ERRNOS[err.errno]
    where = f": {err.filename}" if err.filename else ""
    fix = ("free space, then " if err.errno != errno.EROFS else
           "make the store and out folders writable (or point paths.store / paths.out elsewhere), then ")
    return f"vicl {args.command}: {what} ({err.strerror or os.strerror(err.errno)}{where}); {_resume(args, fix)}"


def interrupted_line(args) -> str:
    return f"vicl {args.command}: interrupted; {_resume(args, '')}"


def _fail(line: str, code: int) -> int:
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["vicl", *argv])  # what the lock names and the closing line asks to run
    try:
        return args.func(args)
    except ParamsError as e:
        return _fail(f"invalid params:\n{e}", EXIT_USAGE)
    except (StageOrderError, StoreLocked, WeightsMissing) as e:
        return _fail(f"vicl {args.command}: {e}", EXIT_USAGE)
    except KeyboardInterrupt:  # Ctrl-C: the Ray session has already shut down on the way out
        return _fail(interrupted_line(args), EXIT_INTERRUPTED)
    except Exception as e:
        err = storage_error(e)
        if err is not None:
            return _fail(storage_line(args, err), EXIT_IOERR)
        corrupt = corrupt_file(e)
        if corrupt is not None:
            return _fail(f"vicl {args.command}: {corrupt}", EXIT_DATAERR)
        raise


if __name__ == "__main__":
    sys.exit(main())
