"""The one registry of annotators, keyed by name.

Modules listed in BUILTIN_MODULES register their classes on import; a user's own
annotator registers with `@register` from any module named in params
(`annotate.plugins`), so it is importable on every Ray worker.
"""

from __future__ import annotations

import importlib

from annotators.base import Annotator

_REGISTRY: dict[str, type[Annotator]] = {}

# One module per family of annotators; later families append here.
BUILTIN_MODULES = (
    "annotators.edges_weightfree",
    "annotators.color",
    "annotators.degradations.annotators",
    "annotators.synthetic_edits",
    "annotators.edges_models",
    "annotators.depth",
    "annotators.normals",
    "annotators.pose",
    "annotators.sam",
    "annotators.segmentation",
    "annotators.grounding",
    "annotators.foreground",
    "annotators.caption",
    "annotators.generative",
    "annotators.image_quality",
    "annotators.embeddings",
)


def register(cls: type[Annotator]) -> type[Annotator]:
    name = cls.name
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"annotator {name!r} registered twice ({_REGISTRY[name].__module__} and {cls.__module__})")
    if not getattr(cls, "produces", None):
        raise ValueError(f"annotator {name!r} declares no node types in `produces`")
    _REGISTRY[name] = cls
    return cls


def get(name: str) -> type[Annotator]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown annotator {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def producers() -> dict[str, list[str]]:
    """node type -> annotator names that can produce it, with any params (each class's `produces`).

    What a configured annotator writes is `cls.produces_for(params)`, which may be fewer
    (pipelines/annotation_plan.py and pipelines/params.py ask that)."""
    out: dict[str, list[str]] = {}
    for name, cls in sorted(_REGISTRY.items()):
        for node in cls.produces:
            out.setdefault(node, []).append(name)
    return out


def produced_nodes(configured: dict) -> dict[str, str]:
    """node type -> the configured annotator that writes it, and the source image -> 'ingest', for
    `configured` ({name: its spec, whose `params` are that annotator's params})."""
    out = {"image": "ingest"}
    for name, spec in configured.items():
        cls = get(name)
        for node in cls.produces_for(cls.Params.model_validate(spec.params)):
            out[node] = name
    return out


def load_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def load_plugins(modules: list[str]) -> None:
    for module in modules:
        importlib.import_module(module)
