"""What weights the registered annotators need, and which are on disk: backs `vicl models list/check/fetch`.

The CLI fetches with `core.weights.fetch(spec, models_dir)` for each spec it selects
(`specs_for_repo` maps a `vicl models fetch REPO` argument to specs).
"""

from __future__ import annotations

from pathlib import Path

from core.weights import WeightSpec


def catalog(annotator_names: list[str] | None = None) -> list[tuple[str, WeightSpec]]:
    """(annotator name, weight spec) for every registered annotator (or the named ones), sorted by name.

    An annotator with several specs (variants, or several files) lists each; the first is its default.
    """
    import annotators  # noqa: F401 - registers the built-in annotators
    from annotators import registry

    names = registry.names() if annotator_names is None else annotator_names
    return [(name, spec) for name in names for spec in registry.get(name).weights]


def unique_specs(entries: list[tuple[str, WeightSpec]]) -> list[WeightSpec]:
    """Specs in first-seen order without repeats (one file may serve several annotators, each
    describing it in its own words: a file is its repo and name)."""
    seen: dict[tuple[str, str | None], WeightSpec] = {}
    for _, spec in entries:
        seen.setdefault((spec.repo_id, spec.filename), spec)
    return list(seen.values())


def check(models_dir: str | Path | None, annotator_names: list[str] | None = None) -> list[tuple[WeightSpec, bool]]:
    """Each distinct spec of the catalog with whether it resolves (models dir, then HF cache)."""
    from core.weights import is_present

    return [(spec, is_present(spec, models_dir)) for spec in unique_specs(catalog(annotator_names))]


def specs_for_repo(repo_id: str) -> list[WeightSpec]:
    """The catalog's specs of one repository (for `vicl models fetch REPO`); empty when unknown."""
    return [spec for spec in unique_specs(catalog()) if spec.repo_id == repo_id]


def format_table(rows: list[tuple[WeightSpec, bool]]) -> str:
    """Plain-text listing: status, repo, file, description (one line each)."""
    lines = []
    for spec, present in rows:
        status = "ok     " if present else "missing"
        lines.append(f"{status}  {spec.repo_id}  {spec.filename or '(whole repo)'}  {spec.description}")
    return "\n".join(lines)
