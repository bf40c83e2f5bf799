"""A stage of the build, declared once: what it reads and writes, the params and code it depends
on, how to run it, and what `vicl status` says of it.

The CLI's stage commands, `vicl run`'s order, the check that a stage's inputs exist (one line and
exit 2 naming the command to run first), `vicl status` and the test that `dvc.yaml` agrees with
the code (tests/test_stages.py) all come from these declarations: a new stage is one module that
defines a `Stage` plus one line in pipelines/stages/__init__.py (tests/test_stages.py adds a toy
one). Paths are templates over the params' paths: `{store}/images`, `{out}/shards`; `dvc.yaml`
writes them `${paths.store}/images`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipelines.params import Params
from pipelines.store import NodeStore


class StageOrderError(RuntimeError):
    """A stage run before the stage that makes its inputs; the message names the command to run."""


@dataclass(frozen=True)
class Stage:
    name: str
    help: str
    run: Callable[[Params, NodeStore, Any], Any]  # (params, store, progress bar factory or None) -> summary
    reads: tuple[str, ...] = ()  # store/out paths it reads (dvc deps)
    writes: tuple[str, ...] = ()  # store/out paths it writes (dvc outs)
    done: str = ""  # the file whose existence says the stage has run: a template or `store.<path property>`
    params: tuple[str, ...] = ()  # params sections it reads (dvc params)
    code: tuple[str, ...] = ()  # repository files and folders it runs (dvc deps besides `reads`)
    check: Callable[[Params, str], None] | None = None  # before any work (and before Ray): inputs, weights
    status: Callable[[Params, NodeStore], list[str]] | None = None  # its lines of `vicl status`
    persist: tuple[str, ...] = field(default=())  # outputs dvc must keep between runs (resumable, incremental)


REPO = Path(__file__).resolve().parents[1]


def code_digest(paths: tuple[str, ...]) -> str:
    """Digest of the repository files (and every .py/.yaml file in the folders) among `paths`."""
    import hashlib

    digest = hashlib.sha256()
    for rel in paths:
        path = REPO / rel
        files = sorted(p for p in path.rglob("*") if p.suffix in (".py", ".yaml")) if path.is_dir() else [path]
        for f in files:
            digest.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def resolve(template: str, params: Params) -> Path:
    """A path template (`{store}/images`, `{out}/manifest.json`) or a store path by name
    (`store.listing_path`: every store file's path is a property of NodeStore)."""
    if template.startswith("store."):
        return getattr(NodeStore(params.paths.store), template.removeprefix("store."))
    return Path(template.format(store=params.paths.store, out=params.paths.out))


def producer(path: str, stages: tuple[Stage, ...]) -> Stage | None:
    """The stage that writes `path` (or the folder holding it)."""
    for stage in stages:
        if any(path == w or path.startswith(w + "/") for w in stage.writes):
            return stage
    return None


def require_inputs(stage: Stage, params: Params, stages: tuple[Stage, ...]) -> None:
    """StageOrderError naming the command to run when a stage this one reads from has not run."""
    for path in stage.reads:
        before = producer(path, stages)
        if before is not None and before is not stage and before.done and not resolve(before.done, params).exists():
            raise StageOrderError(f"{resolve(before.done, params)} does not exist: run `vicl {before.name}` first")
