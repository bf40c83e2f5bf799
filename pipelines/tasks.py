"""Task families (YAML data) -> concrete tasks for the node types present, each on VisRel's axes.

A family lists paths whose elements are node type names or group selectors; enumeration
binds every selector to each present node type of its groups (cartesian product, sorted), so
the task list follows the store: add an annotator and its tasks appear. A task takes the
VisRel axes (anchors.md §1.2) of its "transformation" node: the path's most semantic node
other than the photo itself (ties: the most global), unless its family overrides them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.node_types import LOCALITY_LEVELS, MINED_EDIT, MINED_SOURCE, NODE_TYPES, SEMANTIC_LEVELS, axes_of
from pipelines.sampling_params import SamplerParams

FAMILIES_FILE = Path(__file__).with_name("task_families.yaml")
MINED_TASK = "mined_edit"  # quadruplets from the mining stage: a task of their own (pipelines/sampling.py)


@dataclass(frozen=True)
class Family:
    name: str
    meta_task: str
    weight: float
    paths: tuple[tuple[Any, ...], ...]  # elements: node name or selector dict
    same_category: bool = False
    axes: tuple[str, str] | None = None


@dataclass(frozen=True)
class Task:
    name: str
    path: tuple[str, ...]  # conditions..., target
    family: str
    meta_task: str = ""
    semantic: str = "pixel"
    locality: str = "global"
    weight: float = 1.0  # the family's weight (sampler: per-family weighting)
    same_category: bool = False


class TaskFamilyError(ValueError):
    pass


def _parse_family(name: str, spec: dict, source: str) -> Family:
    if not isinstance(spec, dict):
        raise TaskFamilyError(f"{source}: families.{name}: must be a mapping")
    unknown = set(spec) - {"meta_task", "weight", "paths", "same_category", "axes"}
    if unknown:
        raise TaskFamilyError(f"{source}: families.{name}: unknown keys {sorted(unknown)}")
    paths = spec.get("paths")
    if not paths or not all(isinstance(p, list) and len(p) >= 2 for p in paths):
        raise TaskFamilyError(f"{source}: families.{name}.paths: a list of paths of >= 2 elements")
    for path in paths:
        for el in path:
            if isinstance(el, str):
                if el not in NODE_TYPES:
                    raise TaskFamilyError(f"{source}: families.{name}.paths: unknown node type {el!r}")
            elif isinstance(el, dict):
                if "group" not in el or set(el) - {"group", "only", "exclude"}:
                    raise TaskFamilyError(f"{source}: families.{name}.paths: selector needs `group` "
                                          f"(and optional only/exclude): {el}")
            else:
                raise TaskFamilyError(f"{source}: families.{name}.paths: bad element {el!r}")
    axes = spec.get("axes")
    if axes is not None:
        if (not isinstance(axes, dict) or axes.get("semantic") not in SEMANTIC_LEVELS
                or axes.get("locality") not in LOCALITY_LEVELS):
            raise TaskFamilyError(f"{source}: families.{name}.axes: {{semantic: {SEMANTIC_LEVELS}, "
                                  f"locality: {LOCALITY_LEVELS}}}")
        axes = (axes["semantic"], axes["locality"])
    weight = float(spec.get("weight", 1.0))
    if weight < 0:
        raise TaskFamilyError(f"{source}: families.{name}.weight: must be >= 0")
    return Family(name, str(spec.get("meta_task", name)), weight, tuple(tuple(p) for p in paths),
                  bool(spec.get("same_category", False)), axes)


def load_families(extra_files: list[str | Path] = ()) -> list[Family]:
    """The built-in families, then each extra file's (a later family of the same name replaces it)."""
    out: dict[str, Family] = {}
    for path in [FAMILIES_FILE, *extra_files]:
        path = Path(path)
        if not path.is_file():
            raise TaskFamilyError(f"{path}: no such task family file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data.get("families"), dict):
            raise TaskFamilyError(f"{path}: top level needs `families:` mapping")
        for name, spec in data["families"].items():
            if "." in name or "/" in name:
                raise TaskFamilyError(f"{path}: family names may not contain '.' or '/': {name!r}")
            out[name] = _parse_family(name, spec, str(path))
    return list(out.values())


def _expand(element, present: list[str]) -> list[str]:
    if isinstance(element, str):
        return [element] if element in present else []
    groups = element["group"] if isinstance(element["group"], list) else [element["group"]]
    only, exclude = element.get("only"), set(element.get("exclude", ()))
    return [n for n in present if NODE_TYPES.get(n) is not None and NODE_TYPES[n].group in groups
            and n not in exclude and (only is None or n in only)]


def task_name(path: tuple[str, ...]) -> str:
    return f"{'_and_'.join(path[:-1])}_to_{path[-1]}"


def task_axes(path: tuple[str, ...]) -> tuple[str, str]:
    """Axes of the path's transformation node: the most semantic node other than the photo and
    the identity reference (inputs every family shares), then the most global."""
    nodes = [n for n in path if n not in ("image", "reference")] or list(path)
    return max((axes_of(n) for n in nodes),
               key=lambda a: (SEMANTIC_LEVELS.index(a[0]), LOCALITY_LEVELS.index(a[1])))


def enumerate_tasks(families: list[Family], present_nodes) -> list[Task]:
    """Every concrete task of the families over the present node types, in family then path order.

    A path repeating a node (a selector binding the target again) is skipped; a task reached
    by two families keeps the first.
    """
    present = sorted(set(present_nodes))
    tasks: dict[str, Task] = {}
    for fam in families:
        for template in fam.paths:
            for path in itertools.product(*(_expand(el, present) for el in template)):
                if len(set(path)) < len(path):
                    continue
                name = task_name(path)
                if name in tasks:
                    continue
                semantic, locality = fam.axes or task_axes(path)
                tasks[name] = Task(name, tuple(path), fam.name, fam.meta_task, semantic, locality, fam.weight,
                                   fam.same_category)
    return list(tasks.values())


def explicit_task(name: str, path: list[str], family: str = "custom") -> Task:
    semantic, locality = task_axes(tuple(path))
    return Task(name, tuple(path), family, family, semantic, locality)


def mined_task() -> Task:
    return Task(MINED_TASK, (MINED_SOURCE, MINED_EDIT), "mined_editing", "editing", "object", "global")


def coverage_matrix(tasks: list[Task]) -> dict[str, dict[str, int]]:
    """{semantic level: {locality level: number of tasks}} over the full 3 x 3 grid."""
    out = {s: dict.fromkeys(LOCALITY_LEVELS, 0) for s in SEMANTIC_LEVELS}
    for t in tasks:
        out[t.semantic][t.locality] += 1
    return out


def format_tasks(tasks: list[Task]) -> str:
    """The task table and the axes coverage matrix, as printed by `vicl tasks`."""
    lines = [f"{len(tasks)} tasks", f"{'task':48s} {'family':30s} {'meta-task':12s} {'semantic':10s} locality"]
    for t in tasks:
        lines.append(f"{t.name:48s} {t.family:30s} {t.meta_task:12s} {t.semantic:10s} {t.locality}")
    matrix = coverage_matrix(tasks)
    lines += ["", "coverage (rows: semantic complexity, columns: spatial locality)",
              f"{'':10s} " + " ".join(f"{c:>9s}" for c in LOCALITY_LEVELS)]
    for s in SEMANTIC_LEVELS:
        lines.append(f"{s:10s} " + " ".join(f"{matrix[s][c]:9d}" for c in LOCALITY_LEVELS))
    empty = [f"{s}/{c}" for s in SEMANTIC_LEVELS for c in LOCALITY_LEVELS if matrix[s][c] == 0]
    if empty:
        lines.append(f"empty cells: {', '.join(empty)}")
    return "\n".join(lines)


def cmd_tasks(params) -> int:
    """`vicl tasks`: the tasks enumerated over the store's node types (or, before annotation,
    over the configured producers) with their family, meta-task and axes, and the coverage matrix."""
    from pipelines.catalog import Catalog
    from pipelines.store import NodeStore

    store = NodeStore(params.paths.store)
    nodes = Catalog.load(store).node_index().nodes() if store.catalog_path.exists() else None
    print(format_tasks(configured_tasks(params, nodes=nodes)))
    return 0


def auto_tasks(nodes, params: SamplerParams | None = None) -> list[Task]:
    """Every task of the (built-in + extra) families over the present node types."""
    params = params or SamplerParams()
    families = load_families(params.extra_task_families)
    if params.families is not None:
        families = [f for f in families if f.name in params.families]
    return enumerate_tasks(families, nodes)


def configured_tasks(params: Params, nodes=None) -> list[Task]:
    """The explicit task list, or every family task over `nodes` (default: the configured producers)."""
    sp = params.sample
    if sp.tasks != "auto":
        return [explicit_task(t.name, t.path, t.family) for t in sp.tasks]
    if nodes is None:
        from pipelines.params import produced_nodes

        nodes = list(produced_nodes(params))
    return auto_tasks(nodes, sp)
