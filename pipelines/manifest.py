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
from pipelines.store import write_json
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


def file_hashes(out: Path, paths: list[Path], cache_path: Path) -> dict[str, dict]:
    """{path relative to out: {sha256, bytes}}, reading only files written since the last export: a
    file whose size and mtime are those recorded beside its hash in `cache_path` keeps that hash (an
    incremental export of a large set would otherwise read every shard again; `vicl verify` reads
    them all). The cache lives in the store, not in `out`: it holds file times, which differ between
    two copies of one build whose outputs are byte-identical."""
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    files, fresh = {}, {}
    for path in paths:
        rel, st = str(path.relative_to(out)), path.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        known = cache.get(rel)
        digest = known[2] if known and known[:2] == stamp else sha256_file(path)
        fresh[rel] = stamp + [digest]
        files[rel] = {"sha256": digest, "bytes": st.st_size}
    write_json(fresh, cache_path)
    return files


def build_manifest(params: Params, store, out: Path, cat, failures, cell_sizes: dict | None = None) -> dict:
    """Counts from the catalog's compact index and the failures table computed once by the export."""
    index = cat.node_index()
    samples = pq.read_table(store.samples_path, columns=["split", "task"]).to_pylist()
    files = file_hashes(out, sorted(p for p in out.rglob("*") if p.is_file()
                                    and p.name not in ("manifest.json", SUMS_FILE) and not p.name.startswith(".")),
                        store.export_hashes_path)
    files["store/samples.parquet"] = {"sha256": sha256_file(store.samples_path),
                                      "bytes": store.samples_path.stat().st_size}
    per_task: dict[str, dict[str, int]] = {}
    for s in samples:
        per_task.setdefault(s["task"], Counter())[s["split"]] += 1
    reasons = Counter(f"{stage}/{reason}" for stage, reason in zip(failures["stage"].to_pylist(),
                                                                    failures["reason"].to_pylist()))
    mining = store.mined_summary_path
    sampled = store.sample_inputs_path
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
            # grid samples per cell size ("<width>x<height>": an aspect bucket after the grid's pixel cap)
            "samples_per_cell_size": dict(sorted((cell_sizes or {}).items())),
        },
        "online_nodes": sorted(cat.online),
        "mining": json.loads(mining.read_text()) if mining.exists() else None,
        # the task mix per family and origin, and how edit quadruplets were paired (their precision)
        "task_mix": summary.get("mix"), "edit_pairing": summary.get("edit_pairing"),
        "params": params.model_dump(mode="json"),  # paths as given: relative ones keep two build folders alike
        "versions": package_versions(),
        "files": files,
    }

