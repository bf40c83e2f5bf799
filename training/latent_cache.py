"""Cache of per-sample encoder outputs (VAE latents, prompt embeddings).

Encoding with a frozen VAE and text encoder is the same every epoch, so it is done once.
An entry is keyed by the sample key and the digest of the content it encodes (record, fitted
cell size, grid pixels: `GridSample.content_digest`), so a re-export that reuses a key with
other cells or another instruction misses the cache instead of serving old latents. The
folder is namespaced by a fingerprint of everything else that changes the tensors (backend,
mode, base repo, cell size, VAE config, prompt encoder).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import training  # noqa: F401


def fingerprint(params, backend) -> str:
    parts = {
        "backend": params.model.backend, "mode": params.model.mode, "repo": params.model.repo_id(),
        "cell_size": params.data.cell_size, "vae": dict(backend.vae.config),
        "prompts": backend.prompts.fingerprint() if hasattr(backend.prompts, "fingerprint") else type(backend.prompts).__name__,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class LatentCache:
    def __init__(self, root: str | Path, fp: str):
        self.dir = Path(root) / fp
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """`key`: `entry_key(sample)`."""
        p = self._path(key)
        return load_file(str(p)) if p.is_file() else None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        p = self._path(key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, p)  # atomic: concurrent ranks never read half a file


def entry_key(sample) -> str:
    """File stem of a sample's entry: its key (readable) and its content digest (correct)."""
    return f"{sample.key}-{sample.content_digest[:32]}"


def encode_batch(backend, samples, cache: LatentCache | None = None) -> list[dict[str, torch.Tensor]]:
    """Encoder outputs of `samples` in order, encoding only those not cached."""
    if cache is None:
        return backend.encode(samples)
    found = [cache.get(entry_key(s)) for s in samples]
    todo = [i for i, f in enumerate(found) if f is None]
    if todo:
        fresh = backend.encode([samples[i] for i in todo])
        for i, t in zip(todo, fresh):
            cache.put(entry_key(samples[i]), t)
            found[i] = t
    return found
