"""Which annotators a params file configures, in dependency order, and where each one's outputs live.

An annotator's outputs are keyed by (name, version, params, code digest) and by image part,
never by the whole ingest: `nodes/<name>/<key>/part-<image part>.parquet`. So adding images
computes only the new parts, changing one annotator's params computes only that annotator, and
a change to an annotator's code (its module or any annotators module it uses) recomputes it,
since a fixed bug must not leave its wrong outputs in place under `persist: true`.
Used by the annotate stage (to run) and by `vicl status` (to say what is left); later stages
read the catalog the annotate stage writes (pipelines/catalog.py), never this plan.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from pipelines.executor import resolve_device
from pipelines.params import AnnotatorSpec, Params, ParamsError
from pipelines.store import NodeStore

# Modules whose code does not decide an output: the registry, weight lookup, the package itself.
_NOT_OUTPUT_CODE = {"annotators", "annotators.registry", "core.weights", "annotators.models_catalog"}


@dataclass
class AnnotatorRun:
    name: str
    params_json: str  # validated params, JSON (plain data: travels to any worker)
    version: str
    code_digest: str
    produces: tuple[str, ...]
    requires: tuple[str, ...]
    folder: Path
    key: str
    spec: AnnotatorSpec
    device: str
    num_gpus: float
    num_cpus: float
    batch_size: int
    concurrency: int
    weight_free: bool  # no model weights: a pure CPU operator (degradations, edits, canny, ...)


def _own_module(name: str, plugins: tuple[str, ...]) -> bool:
    return (name.startswith(("annotators.", "mining.embed", "core.perceptual_hash", "core.map_resize")) or name in plugins) \
        and name not in _NOT_OUTPUT_CODE


def code_digest(cls, plugins: tuple[str, ...] = ()) -> str:
    """Digest of the source of the annotator's module and every annotators module it reaches
    through its classes and imports (the code that decides its outputs)."""
    roots = {c.__module__ for c in cls.__mro__ if c.__module__ and _own_module(c.__module__, plugins)}
    seen, stack = set(), sorted(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in sys.modules:
            continue
        seen.add(name)
        for value in vars(sys.modules[name]).values():
            dep = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if isinstance(dep, str) and _own_module(dep, plugins) and dep not in seen:
                stack.append(dep)
    digest = hashlib.sha256()
    for name in sorted(seen):
        path = getattr(sys.modules[name], "__file__", None)
        digest.update(name.encode() + b"\0" + (Path(path).read_bytes() if path else b"") + b"\0")
    return digest.hexdigest()[:16]


def output_key(cls, params_model, digest: str) -> str:
    blob = json.dumps({"name": cls.name, "version": cls.version, "params": params_model.model_dump(mode="json"),
                       "code": digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def configured(params: Params) -> dict[str, AnnotatorSpec]:
    """The annotators to run: those under annotate.annotators plus what the sampler needs from
    every image (its split embedding and the leakage check's perceptual hash)."""
    out = dict(params.annotate.annotators)
    for name in (params.sample.split_embedder, "image_dhash"):
        out.setdefault(name, AnnotatorSpec())
    return out


def plan(params: Params, store: NodeStore) -> list[AnnotatorRun]:
    """Configured (materialised) annotators in dependency order, each with its store folder and resources."""
    import annotators

    plugins = tuple(params.annotate.plugins)
    runs: dict[str, AnnotatorRun] = {}
    producer: dict[str, str] = {}
    for name, spec in sorted(configured(params).items()):
        if spec.online:
            continue
        cls = annotators.get(name)
        model = cls.Params.model_validate(spec.params)
        digest = code_digest(cls, plugins) if params.annotate.code_digest else "off"
        key = output_key(cls, model, digest)
        num_gpus = spec.num_gpus if spec.num_gpus is not None else cls.resources.num_gpus
        runs[name] = AnnotatorRun(
            name=name, params_json=model.model_dump_json(), version=cls.version, code_digest=digest,
            produces=cls.produces_for(model),
            requires=tuple(r.removesuffix(".meta") for r in cls.requires_for(model)),
            folder=store.annotator_dir(name, key), key=key, spec=spec,
            device=resolve_device(params.annotate.device, num_gpus), num_gpus=num_gpus,
            num_cpus=spec.num_cpus if spec.num_cpus is not None else cls.resources.num_cpus,
            batch_size=spec.batch_size or cls.resources.batch_size,
            concurrency=spec.concurrency or cls.resources.concurrency, weight_free=not cls.weights)
        for node in runs[name].produces:
            producer[node] = name
    order, state = [], {}

    def visit(name: str, trail: tuple[str, ...]):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ParamsError(f"annotate.annotators: dependency cycle {' -> '.join(trail + (name,))}")
        state[name] = "visiting"
        for node in runs[name].requires:
            if node != "image":
                if node not in producer:
                    raise ParamsError(f"annotate.annotators.{name}: requires node type {node!r} which no "
                                      f"materialised annotator produces")
                visit(producer[node], trail + (name,))
        state[name] = "done"
        order.append(runs[name])

    for name in sorted(runs):
        visit(name, ())
    return order


def online_nodes(params: Params) -> dict[str, tuple[str, str]]:
    """node type -> (annotator name, params JSON) for annotators configured `online: true`."""
    import annotators

    out = {}
    for name, spec in sorted(params.annotate.annotators.items()):
        if spec.online:
            cls = annotators.get(name)
            model = cls.Params.model_validate(spec.params)
            out.update({node: (name, model.model_dump_json()) for node in cls.produces_for(model)})
    return out
