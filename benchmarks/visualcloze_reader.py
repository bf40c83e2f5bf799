"""Drive VisualCloze's own training reader over a vicl Graph200K export, on the CPU, without a model.

The reader's modules (`data/`, and `util/imgproc.py` for train.py's transform) are copied from a
fetched VisualCloze repository (a bare git dir: `git archive`) into a temporary folder at run
time, never into vicl's tree. They are driven as its train.py drives them: `MyDataset(config,
item_processor=T2IItemProcessor(transform, resolution), task_dicts={'image_grid_graph200k': ...})`
with train.py's transform, then `dataset[i]` per draw (its __getitem__ ignores the index and
draws rows, a task and a path itself). Its imports need h5py and numba beyond vicl's venv: give
a folder they were installed into (`pip install --target DIR --no-deps h5py numba llvmlite`) with
--site; nothing is stubbed. torchvision is imported through vicl's pipelines/torchvision_compat
(on machines where torchvision's compiled ops cannot load, as here).

Reports, as JSON (--json) and a summary:
  draws.export: N draws with the export's visualcloze_tasks.json task dicts (what to train with);
  draws.stock:  N draws with VisualCloze's stock `graph200k_task_dicts` (129 paths), as train.py;
  paths:        for each of the 129 stock paths, MyDataset.get_items with 3 rows (the most
                __getitem__ draws): loadable, or spins (fewer rows pass the reader's own
                check_item_graph200k than it needs: its loop never ends), or the error it raised
                (a path whose check passes >= 3 rows but times out is retried once at 6x);
  task_list:    whether vicl's copy of the stock list (pipelines.graph200k_export) equals the repo's.
Every draw runs under a timeout (SIGALRM in the worker, and a hard kill from the parent), so a
spinning get_items is counted, not hung on.

  python benchmarks/visualcloze_reader.py --export data/out/graph200k/train \\
      --repo /work/.mirror/lzyhha+VisualCloze/repo --site /tmp/vc-extra --draws 50 --json out.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = "image_grid_graph200k"


class DrawTimeout(BaseException):
    """Raised by SIGALRM inside a draw; a BaseException so MyDataset's `except Exception` lets it out."""


def copy_reader_modules(repo: Path, dest: Path, rev: str = "HEAD") -> str:
    """`data/` and `util/imgproc.py` of the repo at `rev` into dest; returns the commit id."""
    commit = subprocess.run(["git", f"--git-dir={repo}", "rev-parse", rev], check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", f"--git-dir={repo}", "archive", "--format=tar", commit, "data",
                              "util/imgproc.py"], check=True, capture_output=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return commit


# --- the worker: imports VisualCloze's modules, runs draws on request ------------------------------
def worker(conn, modules: str, site: list[str], config: str, tasks_json: str, resolution: int, cwd: str):
    sys.path[:0] = [modules, *site, str(ROOT)]
    os.chdir(cwd)
    import core.torchvision_compat  # noqa: F401  (torchvision's nms where its compiled ops cannot load)

    import random

    import numpy as np
    import torch
    from torchvision import transforms

    from data.data_reader import T2IItemProcessor
    from data.data_utils import check_item_graph200k
    from data.dataset import MyDataset
    from data.prefix_instruction import graph200k_task_dicts
    from util.imgproc import to_rgb_if_rgba

    transform = transforms.Compose([transforms.Lambda(lambda img: to_rgb_if_rgba(img)), transforms.ToTensor(),
                                    transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True)])
    processor = T2IItemProcessor(transform, resolution=resolution)
    export_tasks = json.loads(Path(tasks_json).read_text())
    datasets = {"stock": MyDataset(config, item_processor=processor, task_dicts={GROUP: graph200k_task_dicts}),
                "export": MyDataset(config, item_processor=processor, task_dicts={GROUP: export_tasks})}

    def on_alarm(*_):
        raise DrawTimeout()

    signal.signal(signal.SIGALRM, on_alarm)

    def timed(fn, seconds: float, seed: int):
        random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        t0 = time.perf_counter()
        try:
            out = fn()
            return {"status": "built", "seconds": time.perf_counter() - t0, **describe(out)}
        except DrawTimeout:
            return {"status": "spins", "seconds": time.perf_counter() - t0}
        except Exception as e:  # MyDataset re-raises a TypeError from `e.with_traceback()`; the cause is its context
            cause = e.__context__ or e
            return {"status": "error", "seconds": time.perf_counter() - t0,
                    "error": f"{type(cause).__name__}: {cause}"[:300]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def describe(item):
        group, images, instruction, _, (cols, rows) = item
        return {"rows": rows, "cols": cols, "grid": [list(im.shape) for im in images],
                "instruction_chars": len(instruction)}

    # compile the numba kernels of its degradations once (a training run pays this on its first
    # items), so a draw's timeout measures the draw
    from data.degradation_utils import add_degradation
    from data.prefix_instruction import degradation_list

    t0, warm_errors = time.perf_counter(), {}
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for name in degradation_list:
        try:
            add_degradation(noise, name)
        except Exception as e:
            warm_errors[name] = f"{type(e).__name__}: {e}"[:200]
    ds = datasets["stock"]
    conn.send({"ready": True, "rows": len(ds), "task_list": graph200k_task_dicts,
               "warmup_s": round(time.perf_counter() - t0, 1), "warmup_errors": warm_errors})
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, seed, seconds = msg["kind"], msg["seed"], msg["timeout"]
        if kind == "draw":
            d = datasets[msg["tasks"]]
            result = timed(lambda: d[seed], seconds, seed)
        elif kind == "count":  # rows that pass the reader's own check for one path
            result = {"rows_passing_check": sum(bool(check_item_graph200k(row, msg["path"])) for row in ds.ann)}
        else:  # one stock path, 3 rows, through get_items as __getitem__ calls it
            path, check = msg["path"], ds.check_item[GROUP]

            def build():
                index = random.choice(ds.group_indices[GROUP])
                return ds.get_items(index, check, 3, path, {index}, GROUP)

            result = timed(build, seconds, seed)
        conn.send(result)


class Reader:
    """The worker process; restarted after a hard timeout."""

    def __init__(self, args, modules: Path):
        self.args, self.modules = args, modules
        self.ctx = mp.get_context("spawn")
        self.start()

    def start(self):
        a = self.args
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=worker, args=(child, str(self.modules), a.site, str(a.config),
                                                          str(a.tasks_json), a.resolution, str(a.cwd)), daemon=True)
        self.proc.start()
        if not self.conn.poll(600):
            raise RuntimeError("VisualCloze's modules did not import within 600 s")
        self.hello = self.conn.recv()

    def ask(self, msg: dict) -> dict:
        self.conn.send(msg)
        if self.conn.poll(msg["timeout"] + 60):
            return self.conn.recv()
        self.proc.kill()  # stuck where SIGALRM cannot reach (native code): restart for the next one
        self.proc.join()
        self.start()
        return {"status": "spins", "seconds": msg["timeout"] + 60, "killed": True}

    def close(self):
        self.conn.send(None)
        self.proc.join(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", type=Path, required=True, help="a split folder of the export (holds data.json)")
    ap.add_argument("--repo", type=Path, default=Path("/work/.mirror/lzyhha+VisualCloze/repo"),
                    help="VisualCloze's git dir (a bare clone or its .git)")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--site", action="append", default=[], help="extra import folder (h5py, numba)")
    ap.add_argument("--config", type=Path, help="VisualCloze data config (default: the split's visualcloze.yaml)")
    ap.add_argument("--cwd", type=Path,
                    help="the reader's working directory (default: the copied repository root, where train.py "
                         "runs and its Frost degradation finds data/degradation_toolkit/frost/)")
    ap.add_argument("--place-export", metavar="PREFIX",
                    help="link the export folder (the split's parent) at PREFIX under the copied repository root, "
                         "as a relative-path export is meant to lie (export.graph200k_relative_prefix)")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per draw before it counts as spinning")
    ap.add_argument("--spin-timeout", type=float, default=2.0,
                    help="seconds per stock path that the reader's own check says cannot fill 3 rows")
    ap.add_argument("--resolution", type=int, default=384, help="train.py's --grid_resolution (exps/train.sh: 384)")
    ap.add_argument("--modes", default="export,stock,paths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.export = args.export.resolve()
    args.config_given = args.config is not None
    args.config = (args.config or args.export / "visualcloze.yaml").resolve()
    args.tasks_json = args.export / "visualcloze_tasks.json"
    args.site = [str(Path(s).resolve()) for s in args.site]

    modes = args.modes.split(",")
    report: dict = {"export": str(args.export), "config": str(args.config),
                    "resolution": args.resolution, "timeout_s": args.timeout}
    with tempfile.TemporaryDirectory(prefix="visualcloze-") as tmp:
        report["visualcloze_commit"] = copy_reader_modules(args.repo, Path(tmp), args.rev)
        if args.place_export:
            link = Path(tmp) / args.place_export
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(args.export.parent, target_is_directory=True)
            if not args.config_given:
                args.config = link / args.export.name / "visualcloze.yaml"
        args.cwd = (args.cwd or Path(tmp)).resolve()
        report["cwd"] = str(args.cwd)
        t0 = time.perf_counter()
        reader = Reader(args, Path(tmp))
        report["import_s"] = round(time.perf_counter() - t0, 1)
        report["data_json_rows"] = reader.hello["rows"]
        report["degradation_warmup_s"] = reader.hello["warmup_s"]
        report["degradation_warmup_errors"] = reader.hello["warmup_errors"]
        from pipelines.graph200k_export import visualcloze_task_dicts

        theirs = [(t["task_name"], t["image_list"]) for t in reader.hello["task_list"]]
        ours = [(t["task_name"], t["image_list"]) for t in visualcloze_task_dicts()]
        report["task_list"] = {"stock_paths": sum(len(p) for _, p in theirs), "vicl_copy_equal": theirs == ours}
        for mode in ("export", "stock"):
            if mode not in modes:
                continue
            results = [reader.ask({"kind": "draw", "tasks": mode, "seed": args.seed + i, "timeout": args.timeout})
                       for i in range(args.draws)]
            report.setdefault("draws", {})[mode] = _tally(results)
            print(f"draws with {mode} task dicts: {report['draws'][mode]['built']} of {args.draws} items built "
                  f"({report['draws'][mode]['spins']} spin, {report['draws'][mode]['error']} error)", flush=True)
        if "paths" in modes:
            served = {tuple(p) for t in json.loads(args.tasks_json.read_text()) for p in t["image_list"]}
            per_path = {}
            for i, (_, paths) in enumerate(theirs):
                for path in paths:
                    count = reader.ask({"kind": "count", "path": path, "seed": 0, "timeout": args.timeout})
                    # the reader's own check decides whether get_items can end; where it cannot,
                    # the short timeout confirms the spin
                    timeout = args.timeout if count["rows_passing_check"] >= 3 else args.spin_timeout
                    probe = reader.ask({"kind": "path", "path": path, "seed": args.seed + i, "timeout": timeout})
                    if probe["status"] == "spins" and count["rows_passing_check"] >= 3:
                        # enough rows pass, so get_items can end: a slow item (its multi-Otsu
                        # quantization on noisy images), given six times as long once
                        probe = reader.ask({"kind": "path", "path": path, "seed": args.seed + i,
                                            "timeout": 6 * timeout})
                        probe["retried"] = True
                    per_path[" > ".join(path)] = {**count, **probe, "listed_by_export": tuple(path) in served}
            loadable = [p for p, r in per_path.items() if r["status"] == "built"]
            report["paths"] = {"loadable": len(loadable), "of": len(per_path), "loadable_paths": loadable,
                               "listed_by_export": len(served),
                               "listing_agrees": sorted(loadable) == sorted(" > ".join(p) for p in served),
                               "errors": {p: r["error"] for p, r in per_path.items() if r["status"] == "error"},
                               "per_path": per_path}
            print(f"task paths loadable: {len(loadable)} of {len(per_path)} "
                  f"(export lists {len(served)}; agree: {report['paths']['listing_agrees']})", flush=True)
        reader.close()
    print(f"task list: vicl's copy equals VisualCloze's {report['task_list']['stock_paths']} paths: "
          f"{report['task_list']['vicl_copy_equal']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _tally(results: list[dict]) -> dict:
    out = {"built": 0, "spins": 0, "error": 0}
    for r in results:
        out[r["status"]] += 1
    built = [r["seconds"] for r in results if r["status"] == "built"]
    out["seconds_per_built_item"] = round(sum(built) / len(built), 3) if built else None
    out["errors"] = sorted({r["error"] for r in results if r["status"] == "error"})[:10]
    out["grid_rows"] = {str(k): sum(r.get("rows") == k for r in results) for k in (1, 2, 3)}
    out["per_draw"] = [[r["status"], r.get("rows"), r.get("cols")] for r in results]
    return out


if __name__ == "__main__":
    sys.exit(main())
