"""Where the trainer finds its base model: a repository folder holding every subfolder a part
needs, from `train.model.models_dir` or the HF cache; never a download, never random weights."""

from __future__ import annotations

from pathlib import Path

from core.weights import MissingWeightsError, WeightSpec, resolve

MODELS_DIR_KEY = "train.model.models_dir"  # the trainer's own key (not annotate.models_dir)


def repo_dir(repo_id: str, models_dir: str | Path | None, subfolders: tuple[str, ...]) -> Path:
    """Local folder of a base repo holding all `subfolders`, else MissingWeightsError."""
    root = resolve(WeightSpec(repo_id, description="base model for the bundled trainer"), models_dir, MODELS_DIR_KEY)
    missing = [s for s in subfolders if not (root / s).is_dir()]
    if missing:
        raise MissingWeightsError(WeightSpec(repo_id, filename=f"{missing[0]}/config.json"),
                                  [str(root / m) for m in missing], MODELS_DIR_KEY)
    return root
