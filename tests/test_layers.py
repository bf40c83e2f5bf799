"""The packages form layers, and no module imports itself round a circle (issue 24).

    core  <  mining  <  annotators  <  training  <  pipelines

A module may import its own package and the packages below it, never one above (imports inside
functions count: they run too). `core` imports nothing of vicl's; `pipelines` composes the rest.
Read from the source with `ast`, so a violation fails here before anything is imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "mining", "annotators", "training", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The vicl modules `path` imports anywhere in its body (the longest known prefix of each name)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import submodule` needs the submodule; `from pkg import name` the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for name in names:
            parts = name.split(".")
            for k in range(len(parts), 0, -1):
                if ".".join(parts[:k]) in known:
                    out.add(".".join(parts[:k]))
                    break
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative order by name)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_a_higher_layer():
    rank = {layer: k for k, layer in enumerate(LAYERS)}
    bad = sorted(f"{m} -> {t}" for m, targets in graph().items() for t in targets
                 if rank[t.split(".")[0]] > rank[m.split(".")[0]])
    assert bad == [], "imports from a lower layer to a higher one:\n  " + "\n  ".join(bad)


def test_no_import_circles():
    found = cycles(graph())
    assert found == [], "import circles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_what_they_claim():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    found = imports(ROOT / "pipelines" / "cli.py", set(modules()))
    assert "pipelines.params" in found and "training.cli" in found  # function-level imports count
