"""`vicl models list|check|fetch`: which weights the annotators and the trainer need, and getting them.

`check` resolves exactly as the annotators do (models dir, then the HF cache) and exits 1
when something configured is missing; `fetch` is the one place vicl downloads, for users
who are online.
"""

from __future__ import annotations

from annotators.base import WeightSpec


def _entries(names: list[str] | None, with_trainer: bool) -> list[tuple[str, WeightSpec]]:
    from annotators.models_catalog import catalog

    entries = catalog(names)
    if with_trainer:
        from training.models import WEIGHTS

        entries += [("train", spec) for spec in WEIGHTS]
    return entries


def models_list(all_annotators: bool, configured: list[str]) -> str:
    entries = _entries(None if all_annotators else configured, with_trainer=all_annotators)
    if not entries:
        return "the configured annotators need no weights (use --all for every registered annotator)"
    return "\n".join(f"{name:<22} {spec.repo_id}  {spec.filename or '(whole repo)'}  {spec.description}"
                     for name, spec in entries)


def models_check(models_dir: str, all_annotators: bool, configured: list[str]) -> tuple[str, bool]:
    from annotators.models_catalog import check, format_table

    rows = check(models_dir, None if all_annotators else configured)
    if not rows:
        return "nothing to check: the configured annotators need no weights", True
    return format_table(rows), all(present for _, present in rows)


def models_fetch(name: str, models_dir: str) -> list[str]:
    """NAME is a repository id or an annotator name; downloads every spec it stands for."""
    from annotators.weights import fetch

    entries = _entries(None, with_trainer=True)
    specs = [spec for owner, spec in entries if spec.repo_id == name or owner == name]
    if not specs:
        raise KeyError(f"{name!r} is neither a known repository nor an annotator with weights "
                       f"(`vicl models list --all` lists them)")
    unique = list(dict.fromkeys(specs))
    return [str(fetch(spec, models_dir)) for spec in unique]
