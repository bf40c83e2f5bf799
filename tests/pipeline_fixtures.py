"""Small params for end-to-end pipeline tests (a few dozen embedded images, tiny cells)."""

from __future__ import annotations

from pathlib import Path

from core.sample_reader import iter_samples
from pipelines.params import Params, parse_params, validate_params


def small_params(root: Path, *, count: int = 24, annotators: dict | None = None, sources: list | None = None,
                 **sections) -> Params:
    data = {
        "paths": {"store": str(root / "store"), "out": str(root / "out")},
        "ray": {"num_cpus": 2},
        "ingest": {"sources": sources or [{"kind": "embedded", "count": count, "size": 96}], "part_size": 8},
        "annotate": {"annotators": annotators if annotators is not None else {"canny": {}, "grayscale": {}}},
        "sample": {"samples_per_task": 6, "eval_fraction": 0.2},
        "export": {"shard_size": 5, "cell_size": 32},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    params = parse_params(data)
    validate_params(params)
    return params


def shard_records(out: Path) -> list[dict]:
    """The JSON record of every sample in the grid shard sets under `out`, in shard order (read by
    core.sample_reader, so each record's schema version is checked)."""
    paths = sorted(Path(out).glob("shards/*/*.tar"))
    return [dict(s.record) for s in iter_samples(paths)] if paths else []


def write_params(root: Path, params: Params) -> str:
    """`params` as `<root>/params.yaml` (only what differs from the defaults), for CLI tests."""
    import yaml

    path = Path(root) / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json", exclude_defaults=True)))
    return str(path)
