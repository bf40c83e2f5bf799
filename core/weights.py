"""Find model weights on disk: a local models directory first, then the HF cache. Never download.

Layout of a models directory (`annotate.models_dir`):
  <models_dir>/<org>--<name>/...           a whole HF repository (config.json, *.safetensors, ...)
  <models_dir>/<org>/<name>/...            the same, nested (as `huggingface-cli download --local-dir`)
  <models_dir>/<filename>                  a single checkpoint file (e.g. sam_vit_h_4b8939.pth)
  <models_dir>/<org>--<name>/<filename>    a single file of a repository
`vicl models fetch REPO` fills it for users who are online.
"""

from __future__ import annotations

import os
from pathlib import Path

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightSpec:
    """A weight file or repository an annotator needs, for `vicl models list/check/fetch`."""

    repo_id: str
    filename: str | None = None  # None: a whole HF repository (from_pretrained)
    description: str = ""


class MissingWeightsError(FileNotFoundError):
    """Raised when weights are not on disk; the message names the file, how to get it and the params
    key that points at the folder (`annotate.models_dir`, or the trainer's `train.model.models_dir`)."""

    def __init__(self, spec: WeightSpec, searched: list[str], key: str = "annotate.models_dir"):
        what = f"{spec.repo_id}/{spec.filename}" if spec.filename else spec.repo_id
        fetch = f"vicl models fetch {spec.repo_id}"
        super().__init__(
            f"missing weights {what!r} (looked in: {', '.join(searched) or 'nothing'}). "
            f"Fetch them on a machine with network access with `{fetch}` "
            f"(or `huggingface-cli download {spec.repo_id}"
            f"{' ' + spec.filename if spec.filename else ''}`) and point "
            f"{key} at the folder, or set HF_HOME to a cache that holds them."
        )
        self.spec, self.searched, self.key = spec, searched, key


def _repo_dirs(models_dir: Path | None, repo_id: str) -> list[Path]:
    if models_dir is None:
        return []
    return [models_dir / repo_id.replace("/", "--"), models_dir / repo_id]


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any miss in the cache is "not there"
        return None


def _hf_cache_file(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename, local_files_only=True))
    except Exception:  # noqa: BLE001
        return None


def resolve(spec: WeightSpec, models_dir: str | Path | None, key: str = "annotate.models_dir") -> Path:
    """Return the local path of a repository folder (filename None) or of one file; else raise
    MissingWeightsError naming `key`, the params key that points at the models directory."""
    models_dir = Path(models_dir) if models_dir else None
    searched: list[str] = []
    if spec.filename is None:
        for d in _repo_dirs(models_dir, spec.repo_id):
            searched.append(str(d))
            if (d / "config.json").is_file() or (d.is_dir() and any(d.iterdir())):
                return d
        found = _hf_cache_snapshot(spec.repo_id)
        searched.append(f"HF cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})")
    else:
        candidates = [d / spec.filename for d in _repo_dirs(models_dir, spec.repo_id)]
        if models_dir is not None:
            candidates.append(models_dir / spec.filename)
        for c in candidates:
            searched.append(str(c))
            if c.is_file():
                return c
        found = _hf_cache_file(spec.repo_id, spec.filename)
        searched.append(f"HF cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})")
    if found is not None:
        return found
    raise MissingWeightsError(spec, searched, key)


def is_present(spec: WeightSpec, models_dir: str | Path | None) -> bool:
    try:
        resolve(spec, models_dir)
        return True
    except MissingWeightsError:
        return False


def fetch(spec: WeightSpec, models_dir: str | Path) -> Path:
    """Download into the models directory (needs network; used only by `vicl models fetch`)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    target = Path(models_dir) / spec.repo_id.replace("/", "--")
    if spec.filename is None:
        return Path(snapshot_download(spec.repo_id, local_dir=target))
    return Path(hf_hub_download(spec.repo_id, spec.filename, local_dir=target))
