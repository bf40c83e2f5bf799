"""One Annotator per degradation / restoration source: `degrade_<node>` producing `(<node>,)`.

The classes are generated from `DEGRADATIONS` so the operator registry stays the single
source of truth; each is bound to a module-level name so Ray can pickle it by reference.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from annotators.base import Annotator, NodeOutput, Resources, seed_for
from annotators.degradations.operators import DEGRADATIONS, degrade, get_op, resolve_severity
from annotators.quality import GateParams, gate_view, no_op_quality
from annotators.registry import register


class DegradationParams(GateParams):
    """severity: None = the op's default (Elastic, Frost: 4) or a seeded draw in its range.

    overrides: fixed operator parameters by name (e.g. {"quality": 20} for JPEG).
    seed: None = seed_for(image_id, node_type); an int fixes the random stream for all images.
    no_op_min_changed / no_op_delta: the output is a no-op (quality `no_op`, never sampled) when
    fewer than `no_op_min_changed` of its pixels differ from the source by more than
    `no_op_delta` (8-bit units; annotators/quality.py), inside `gate_region` (default the centre
    square the exporter keeps). Defaults: 0.1 % and 4 - a grey photo's saturation change is 0 %,
    the faintest real degradation (a watermark) changes 0.4 %.
    """

    node_type: ClassVar[str] = ""
    severity: int | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = Field(None, ge=0)
    no_op_min_changed: float = Field(0.001, ge=0.0, le=1.0)
    no_op_delta: float = Field(4.0, ge=0.0, le=255.0)

    @model_validator(mode="after")
    def _check_against_op(self):
        op = get_op(self.node_type)
        rng = np.random.default_rng(0)
        # Validates the severity; then one sample on a tiny shape names the parameters the op takes.
        probe = op.sample(rng, resolve_severity(op, self.severity, rng), (64, 64))
        unknown = set(self.overrides) - set(probe) - set(op.derived)
        if unknown:
            raise ValueError(f"{op.name} has no parameter(s) {sorted(unknown)}; it takes {sorted(probe)}")
        return self


class DegradationAnnotator(Annotator):
    """Base of the generated classes; `node_type` names the operator."""

    node_type: ClassVar[str]
    version = "1"
    resources = Resources(batch_size=16, concurrency=2, num_cpus=1.0)

    def render(self, image, image_id: str) -> NodeOutput:
        p = self.params
        seed = p.seed if p.seed is not None else seed_for(image_id, self.node_type)
        array, used = degrade(self.node_type, image, seed=seed, severity=p.severity, **p.overrides)
        quality = no_op_quality(gate_view(image, p.gate_region), gate_view(array, p.gate_region),
                                p.no_op_min_changed, p.no_op_delta)
        return NodeOutput(array, {"params": used, "severity": used["severity"]}, quality)

    def annotate(self, inputs, image_ids):
        return [{self.node_type: self.render(item["image"], image_id)} for item, image_id in zip(inputs, image_ids)]


def class_name(node_type: str) -> str:
    return "Degrade_" + node_type


def _make(node_type: str) -> type[DegradationAnnotator]:
    name = class_name(node_type)
    params = type(name + "Params", (DegradationParams,), {"node_type": node_type, "__module__": __name__})
    cls = type(name, (DegradationAnnotator,), {
        "name": f"degrade_{node_type}", "produces": (node_type,), "node_type": node_type, "Params": params,
        "__module__": __name__, "__qualname__": name,
        "__doc__": f"Degradation `{node_type}`: {DEGRADATIONS[node_type].description}.",
    })
    params.__qualname__ = name + "Params"
    globals()[name], globals()[name + "Params"] = cls, params
    return register(cls)


DEGRADATION_ANNOTATORS: dict[str, type[DegradationAnnotator]] = {}
for _node in DEGRADATIONS:
    # `gray` already has its producer (annotators.color, `grayscale`); the operator stays online-only.
    if _node != "gray":
        DEGRADATION_ANNOTATORS[_node] = _make(_node)
