"""On-the-fly rendering for the sampler: one call for degradations and synthetic edits alike.

It returns the same meta the offline annotators store, so a sample records the exact
parameters and seed-derived choices whichever way the node was made.
"""

from __future__ import annotations

import numpy as np

from annotators.base import seed_for
from annotators.degradations.operators import DEGRADATIONS, degrade


def render_node(node_type: str, image: np.ndarray, image_id: str,
                params: dict | None = None) -> tuple[np.ndarray, dict]:
    """Render `node_type` from `image`; seed = params["seed"] or seed_for(image_id, node_type).

    For a degradation, params may hold `severity` and operator overrides; the meta is
    {"params", "severity", "seed"}. For `edit_<family>`, params may hold operator overrides;
    the meta is {"family", "instruction", "params", "seed"}.
    """
    params = dict(params or {})
    seed = params.pop("seed", None)
    seed = seed_for(image_id, node_type) if seed is None else int(seed)
    if node_type in DEGRADATIONS:
        severity = params.pop("severity", None)
        array, used = degrade(node_type, image, seed=seed, severity=severity, **params)
        return array, {"params": used, "severity": used["severity"], "seed": seed}
    if node_type.startswith("edit_"):
        from annotators.synthetic_edits import EDIT_FAMILIES, apply_edit

        family = node_type[len("edit_"):]
        if family in EDIT_FAMILIES:
            array, instruction, used = apply_edit(family, image, seed=seed, **params)
            return array, {"family": family, "instruction": instruction, "params": used, "seed": seed}
    raise KeyError(f"render_node cannot make {node_type!r}: not a degradation or a synthetic edit family")
