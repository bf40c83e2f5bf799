"""The run manifest: what was made, from what, with which versions, and the hash of every output file.

Contains no wall-clock time, so identical runs give identical manifests.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.params import Params
from pipelines.verify import SUMS_FILE, sha256_file

PACKAGES = ("vicl", "torch", "numpy", "pillow", "opencv-python-headless", "ray", "webdataset", "pyarrow",
            "controlnet_aux", "transformers", "open_clip_torch", "faiss-cpu", "diffusers", "peft")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_manifest(params: Params, store, out: Path, cat, failures) -> dict:
    """Counts from the catalog's compact index and the failures table computed once by the export."""
    index = cat.node_index()
    samples = pq.read_table(store.samples_path, columns=["split", "task"]).to_pylist()
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.json", SUMS_FILE)
                       and not p.name.startswith(".")):
        files[str(path.relative_to(out))] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    files["store/samples.parquet"] = {"sha256": sha256_file(store.samples_path),
                                      "bytes": store.samples_path.stat().st_size}
    per_task: dict[str, dict[str, int]] = {}
    for s in samples:
        per_task.setdefault(s["task"], Counter())[s["split"]] += 1
    reasons = Counter(f"{stage}/{reason}" for stage, reason in zip(failures["stage"].to_pylist(),
                                                                    failures["reason"].to_pylist()))
    mining = store.mined_dir / "mined.json"
    sampled = store.samples_dir / "inputs.json"
    summary = json.loads(sampled.read_text())["summary"] if sampled.exists() else {}
    return {
        "schema": "vicl.manifest/2",
        "counts": {
            "images": len(index),
            "nodes": {n: int(index.has(n).sum()) for n in index.nodes() if n not in cat.online},
            "samples": len(samples),
            "samples_per_split": dict(sorted(Counter(s["split"] for s in samples).items())),
            "samples_per_task": {t: dict(sorted(c.items())) for t, c in sorted(per_task.items())},
            "failures": failures.num_rows,
            "failures_per_reason": dict(sorted(reasons.items())),
        },
        "online_nodes": sorted(cat.online),
        "mining": json.loads(mining.read_text()) if mining.exists() else None,
        # the task mix per family and origin, and how edit quadruplets were paired (their precision)
        "task_mix": summary.get("mix"), "edit_pairing": summary.get("edit_pairing"),
        "params": params.model_dump(mode="json"),  # paths as given: relative ones keep two build folders alike
        "versions": package_versions(),
        "files": files,
    }

