"""Node names of the generative outputs.

The store keeps one row per (image, node type), so an annotator with N outputs per image
writes N node types: output 0 under the Graph200K name (`FillEdit`), output k under
`FillEdit_k`. A style output's reference is its own node (`InstantStyle_ref`, `InstantStyle_ref_k`).
The first output's meta also lists every output's record (`outputs`), so one row is enough to
write Graph200K's `{image_path: [..], description, name}` / `{image_path, style_path}` forms.

Only the first output keeps the Graph200K node's group (`edit` / `style`), so the task
families (which select groups) see each edit once; the further outputs and the references
are registered in the group `generative_variant`, which no family selects.
"""

from __future__ import annotations

from core.node_types import register_node_type

VARIANT_GROUP = "generative_variant"

MAX_OUTPUTS = {"FillEdit": 5, "DepthEdit": 1, "InstantStyle": 3, "ReduxStyle": 3}
ANALOGOUS_SOURCE = "analogous_source"
ANALOGOUS_EDIT = "analogous_edit"
MAX_ANALOGOUS_PAIRS = 2


def output_node(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def output_nodes(base: str, n: int) -> tuple[str, ...]:
    return tuple(output_node(base, i) for i in range(n))


def reference_node(base: str, index: int) -> str:
    return f"{base}_ref" if index == 0 else f"{base}_ref_{index}"


def reference_nodes(base: str, n: int) -> tuple[str, ...]:
    return tuple(reference_node(base, i) for i in range(n))


def _ensure(name: str, group: str, description: str) -> None:
    # core/node_types.py lists the same entries (so the registry has them without importing
    # this package); registering again is a no-op when they agree and raises when they do not
    register_node_type(name, group, description)


def variant_node_types() -> list[tuple[str, str, str]]:
    """(name, group, description) of every node type this package adds to core/node_types.py."""
    out = []
    for base, n in MAX_OUTPUTS.items():
        for i in range(1, n):
            out.append((output_node(base, i), VARIANT_GROUP, f"{base} output {i} (further generation of the image)"))
    for base in ("InstantStyle", "ReduxStyle"):
        for i in range(MAX_OUTPUTS[base]):
            out.append((reference_node(base, i), VARIANT_GROUP, f"style reference of {output_node(base, i)}"))
    for i in range(MAX_ANALOGOUS_PAIRS):
        out.append((output_node(ANALOGOUS_SOURCE, i), "synthetic_pair",
                    f"generated scene A of analogous pair {i} (VIRAL's synthesised stream)"))
        out.append((output_node(ANALOGOUS_EDIT, i), "synthetic_pair",
                    f"A' of analogous pair {i}: the instruction applied to A by an editing model"))
    return out


for _name, _group, _desc in variant_node_types():
    _ensure(_name, _group, _desc)
