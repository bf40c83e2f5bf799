"""The mine stage's runner: pairs (a pyarrow table, or a Ray Dataset) -> embeddings (cached) -> quadruplets.

`run_mine(pairs, params, cache_dir)` embeds every source / edited image and instruction not
yet in `<cache_dir>/embeddings/<embedder key>/` (in-process, or through a Ray actor pool
that loads each model once per actor), then runs the pure `mining.quadruplets.mine`.
It also writes every candidate with its scores (`candidates.parquet`) and the SemDeDup
scores of every source (`dedup.parquet`) to `<cache_dir>/mine/<params digest>/`, so
thresholds can be tuned without re-running. Pairs are processed in pair_id order, so the
output does not depend on the order the input arrives in.

`stats.json` there also records, under "kmeans_backend", the K-Means backend of each
clustering step ({"dedup": ..., "tasks": ...}; `kmeans_backends(params)` gives the same
dict for the manifest). A configured backend that cannot run stops the stage before any
embedding work (mining.kmeans.KMeansBackendError) instead of changing the clusters.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mining.config import MineParams
from mining.embed import CellEmbedActor, EmbeddingCache, ImageEmbedActor, TextEmbedActor, explode_pair_batch, \
    make_image_embedder, make_text_embedder, text_id
from mining.kmeans import resolve_backend
from mining.quadruplets import MineResult, mine
from pipelines import executor

META_COLUMNS = ["pair_id", "source_id", "edited_id", "instruction"]
# A pair table that holds its images (tests, benchmarks): image ids are the bytes' content ids. The mine
# stage passes cell references instead (pipelines/stages/mine.py) and a reader of their bytes.
PAIR_SCHEMA = pa.schema([
    ("pair_id", pa.string()), ("source_id", pa.string()), ("edited_id", pa.string()),
    ("source_bytes", pa.binary()), ("edited_bytes", pa.binary()), ("instruction", pa.string()),
])
_PUT_EVERY = 1024  # images per cache part on the local path: progress survives an interruption


def _is_ray_dataset(obj: Any) -> bool:
    data = sys.modules.get("ray.data")  # not imported: not a Ray Dataset (and importing Ray costs a second)
    return data is not None and isinstance(obj, data.Dataset)


def _meta_table(pairs: Any) -> pa.Table:
    if _is_ray_dataset(pairs):
        import ray

        tables = ray.get(pairs.select_columns(META_COLUMNS).to_arrow_refs())
        meta = pa.concat_tables(tables) if tables else pa.table({c: pa.array([], pa.string()) for c in META_COLUMNS})
    else:
        meta = pairs.select(META_COLUMNS)
    meta = meta.sort_by("pair_id")
    if pc.count_distinct(meta["pair_id"]).as_py() != meta.num_rows:
        raise ValueError("pair_id values are not unique")
    return meta


def _embed_pool(data, actor, params: MineParams, **constructor_kwargs: Any):
    """`actor` (an embedder per actor) over `data` in the executor's actor pool."""
    e = params.embed
    return executor.actor_pool(data, actor, size=e.concurrency, num_cpus=e.num_cpus, num_gpus=e.num_gpus,
                               batch_size=e.batch_size,
                               constructor_kwargs={"embed_params": e.model_dump(), **constructor_kwargs})


def _collect(ds, id_col: str) -> tuple[list[str], np.ndarray | None]:
    ids, mats = [], []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=4096):
        ids.extend(str(x) for x in batch[id_col])
        mats.append(np.asarray(batch["embedding"], dtype=np.float32))
    return ids, (np.concatenate(mats) if mats else None)


def embed_images(pairs: Any, params: MineParams, cache: EmbeddingCache, wanted: list[str], reader=None) -> None:
    """Embed every image id in `wanted` that the cache lacks. With `reader` (cell refs -> encoded bytes),
    `pairs` holds cell references (source/edited node and image columns) instead of bytes."""
    missing = set(cache.missing(wanted))
    if not missing:
        return
    if reader is not None:
        embed_cells(_cells(pairs, missing), params, cache, reader)
        return
    use_ray = _is_ray_dataset(pairs) or params.embed.backend == "ray"
    if use_ray:
        ray = executor.ray_module()
        ds = pairs if _is_ray_dataset(pairs) else ray.data.from_arrow(pairs)
        out = _embed_pool(ds, ImageEmbedActor, params, wanted=missing)
        ids, mat = _collect(out, "image_id")
        if mat is not None:
            cache.put(ids, mat)
        return
    embedder = make_image_embedder(params.embed)
    embedder.load()
    from mining.embed import _decode

    ids, blobs = explode_pair_batch({c: pairs[c].to_pylist() for c in
                                     ("source_id", "source_bytes", "edited_id", "edited_bytes")}, missing)
    bs = params.embed.batch_size
    done_ids, done = [], []
    for s in range(0, len(ids), bs):
        done_ids.extend(ids[s:s + bs])
        done.append(embedder.embed_images([_decode(b) for b in blobs[s:s + bs]]))
        if len(done_ids) >= _PUT_EVERY or s + bs >= len(ids):
            cache.put(done_ids, np.concatenate(done))
            done_ids, done = [], []


def _cells(pairs: pa.Table, wanted: set[str]) -> list[dict]:
    """One {key, node, image_id} per wanted embedding key of the pairs' cells, sorted by key."""
    cells = {}
    for side in ("source", "edited"):
        for key, node, image in zip(pairs[f"{side}_id"].to_pylist(), pairs[f"{side}_node"].to_pylist(),
                                    pairs[f"{side}_image"].to_pylist()):
            if key in wanted:
                cells.setdefault(key, {"key": key, "node": node, "image_id": image})
    return [cells[k] for k in sorted(cells)]


def embed_cells(cells: list[dict], params: MineParams, cache: EmbeddingCache, reader) -> None:
    """Embed store cells: in a Ray actor pool whose workers read their own cells (`embed.backend: ray`;
    only keys and vectors reach the driver), or here, a batch of cells at a time."""
    if params.embed.backend == "ray":
        ids, mat = _collect(_embed_pool(cells, CellEmbedActor, params, reader=reader), "key")
        if mat is not None:
            cache.put(ids, mat)
        return
    from mining.embed import _decode

    embedder = make_image_embedder(params.embed)
    embedder.load()
    bs = params.embed.batch_size
    done_ids, done = [], []
    for s in range(0, len(cells), bs):
        batch = cells[s:s + bs]
        blobs = reader([(c["node"], c["image_id"]) for c in batch])
        done_ids.extend(c["key"] for c in batch)
        done.append(embedder.embed_images([_decode(b) for b in blobs]))
        if len(done_ids) >= _PUT_EVERY or s + bs >= len(cells):
            cache.put(done_ids, np.concatenate(done))
            done_ids, done = [], []


def embed_texts(texts: list[str], params: MineParams, cache: EmbeddingCache, use_ray: bool) -> None:
    by_id = {text_id(t): t for t in texts}
    missing = cache.missing(sorted(by_id))
    if not missing:
        return
    if use_ray:
        rows = [{"text_id": i, "text": by_id[i]} for i in missing]
        ids, mat = _collect(_embed_pool(rows, TextEmbedActor, params), "text_id")
        if mat is not None:
            cache.put(ids, mat)
        return
    embedder = make_text_embedder(params.embed)
    embedder.load()
    cache.put(missing, embedder.embed_texts([by_id[i] for i in missing]))


def params_digest(params: MineParams) -> str:
    return hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]


KMEANS_BACKEND_KEY = "kmeans_backend"


def kmeans_backends(params: MineParams) -> dict[str, str]:
    """The K-Means backend of each clustering step; KMeansBackendError if one cannot run here."""
    return {"dedup": resolve_backend(params.dedup.kmeans), "tasks": resolve_backend(params.kmeans)}


def embed_and_mine(pairs: Any, params: MineParams, cache_dir: str | Path, reader=None) -> MineResult:
    """`reader`: cell refs -> encoded bytes, when `pairs` references store cells instead of holding bytes."""
    backends = kmeans_backends(params)  # fail before the embedding work, not after it
    cache_dir = Path(cache_dir)
    meta = _meta_table(pairs)
    image_embedder = make_image_embedder(params.embed)
    text_embedder = make_text_embedder(params.embed, image_embedder)
    image_cache = EmbeddingCache(cache_dir / "embeddings", image_embedder.key)
    text_cache = EmbeddingCache(cache_dir / "embeddings", text_embedder.key)
    source_ids = meta["source_id"].to_pylist()
    edited_ids = meta["edited_id"].to_pylist()
    instructions = meta["instruction"].to_pylist()
    embed_images(pairs, params, image_cache, source_ids + edited_ids, reader)
    use_ray = _is_ray_dataset(pairs) or params.embed.backend == "ray"
    embed_texts(instructions, params, text_cache, use_ray)
    result = mine(meta, image_cache.get(source_ids), image_cache.get(edited_ids),
                  text_cache.get([text_id(t) for t in instructions]), params)
    out = cache_dir / "mine" / params_digest(params)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(result.candidates, out / "candidates.parquet")
    pq.write_table(result.dedup, out / "dedup.parquet")
    stats = {**result.stats, KMEANS_BACKEND_KEY: backends}
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    (out / "params.json").write_text(json.dumps(params.model_dump(mode="json"), indent=1, sort_keys=True))
    return result


def instruction_filter_heldout(params: MineParams, cache_dir: str | Path) -> dict:
    """The instruction filter (text cosine >= tau_text and no conflict) scored on the held-out set of
    opposite and paraphrased instruction pairs (mining/instruction_pairs_heldout.yaml), with the
    configured text embedder: its precision goes into the manifest and the report."""
    from mining.instruction_conflicts import heldout_agreement

    text_embedder = make_text_embedder(params.embed, make_image_embedder(params.embed))
    cache = EmbeddingCache(Path(cache_dir) / "embeddings", text_embedder.key)

    def embed(texts: list[str]) -> np.ndarray:
        embed_texts(texts, params, cache, use_ray=False)
        return cache.get([text_id(t) for t in texts])

    return heldout_agreement(embed, params.filters)


def run_mine(pairs: Any, params: MineParams, cache_dir: str | Path) -> pa.Table:
    """Quadruplets of a pair corpus (columns pair_id, source_id, edited_id, source_bytes,
    edited_bytes, instruction) as a pyarrow table (mining.quadruplets.QUADRUPLET_SCHEMA):
    the lead stores it as the task `mined_edit`."""
    return embed_and_mine(pairs, params, cache_dir).quadruplets
