"""`vicl models list|check|fetch`: which weights the annotators and the trainer need, and getting them.

`check` resolves exactly as the annotators do (models dir, then the HF cache) and exits 1
when something configured is missing; `fetch` is the one place vicl downloads, for users
who are online.
"""

from __future__ import annotations

from core.weights import WeightSpec
from pipelines.params import WeightsMissing


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
    from core.weights import fetch

    entries = _entries(None, with_trainer=True)
    specs = [spec for owner, spec in entries if spec.repo_id == name or owner == name]
    if not specs:
        raise KeyError(f"{name!r} is neither a known repository nor an annotator with weights "
                       f"(`vicl models list --all` lists them)")
    unique = list(dict.fromkeys(specs))
    return [str(fetch(spec, models_dir)) for spec in unique]


def missing_weights(params) -> list[tuple[str, Exception]]:
    """(annotator, MissingWeightsError) for every weight a configured annotator would not find, resolved
    as its `load()` resolves it (models dir, then the HF cache); nothing is loaded."""
    import annotators
    from annotators import registry

    registry.load_plugins(list(params.annotate.plugins))
    out = []
    for name, spec in sorted(params.annotate.annotators.items()):
        cls = annotators.get(name)
        annotator = cls(cls.Params.model_validate(spec.params), models_dir=params.annotate.models_dir)
        out += [(name, e) for e in annotator.missing_weights()]
    return out


def require_weights(params) -> None:
    """WeightsMissing listing every missing weight, each with the command that fetches it."""
    missing = missing_weights(params)
    if missing:
        raise missing_weights_error(missing, "annotator", "annotate.models_dir", params.annotate.models_dir)


def missing_weights_error(missing: list[tuple[str, Exception]], what: str, key: str, folder) -> WeightsMissing:
    """One error listing every (configured model, MissingWeightsError), each with its fetch command."""
    lines = [f"  {name}: {e.spec.repo_id}{'/' + e.spec.filename if e.spec.filename else ''}  "
             f"(vicl models fetch {e.spec.repo_id})" for name, e in missing]
    return WeightsMissing(
        f"missing model weights for {len({n for n, _ in missing})} configured {what}(s):\n" + "\n".join(lines)
        + f"\nfetch them on a machine with network access (`vicl models fetch <repo>` into {key} = "
          f"{str(folder)!r}) or set HF_HOME to a cache that holds them"
        + ("; `vicl models check` lists what is there" if what == "annotator" else ""))


def fetch_error_line(name: str, error: Exception) -> str:
    """One line for a `vicl models fetch` that could not download (offline, no such repo, no access)."""
    import os

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    why = "HF_HUB_OFFLINE is set" if offline else f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return (f"vicl models fetch {name}: cannot download ({why}); fetch on a machine that reaches the Hugging Face "
            "hub and copy the folder into annotate.models_dir, or point HF_HOME at a cache that holds it")
