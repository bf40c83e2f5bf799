"""The episode shard layout: personalization episodes (pipelines/episodes.py) as WebDataset shards.

  episodes/<split>/<split>-NNNNN.tar     shard j: episodes [j*S, (j+1)*S) of the split, in key order
  one sample per episode, key `<split>_ep<9 digits>`:
    c<k>_r<j>.<ext>   reference image j of concept k (k < K, j < M)
    query_<q>.<ext>   the query image(s)
    json              {"schema": "vicl.episode/1", key, split, k, m,
                       concepts: [{label, name, record, images: [field...], image_ids: [...]}],
                       query: {images: [field...], image_ids: [...], concepts: [label...]},
                       roles: {field: "reference" | "query"}, question, answer, qa: [{question, answer}]}
Images are the store's source images as stored (`ingest.image_format`: the extension), so every
sample of a shard set has the same fields (K and M are fixed by `sample.episodes`). Shards are
written atomically and skipped on a re-run when their plan digest (episodes, image parts, shard
size, this module's code) is unchanged; shards no longer planned are removed. `episodes/plan.json`
(shard -> digest) is always written, so the folder exists when `sample.episodes` is off too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.episodes import EPISODES_FILE
from pipelines.shards import write_tar
from pipelines.store import clean_temp_files, write_json

SCHEMA = "vicl.episode/1"
_EXT = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}


def episode_fields(episode: dict, ext: str) -> tuple[dict[str, str], dict]:
    """({field: image id}, the json record) of one episode."""
    images: dict[str, str] = {}
    concepts = []
    for k, (label, name, record, refs) in enumerate(zip(episode["concept_labels"], episode["concept_names"],
                                                        episode["concept_records"], episode["reference_ids"])):
        fields = [f"c{k}_r{j}.{ext}" for j in range(len(refs))]
        images.update(zip(fields, refs))
        concepts.append({"label": label, "name": name, "record": record, "images": fields, "image_ids": list(refs)})
    query = [f"query_{q}.{ext}" for q in range(len(episode["query_ids"]))]
    images.update(zip(query, episode["query_ids"]))
    record = {"schema": SCHEMA, "key": episode["key"], "split": episode["split"], "k": len(concepts),
              "m": len(concepts[0]["images"]) if concepts else 0, "concepts": concepts,
              "query": {"images": query, "image_ids": list(episode["query_ids"]),
                        "concepts": list(episode["query_concepts"])},
              "roles": {f: ("query" if f.startswith("query_") else "reference") for f in sorted(images)},
              "question": episode["question"], "answer": episode["answer"], "qa": list(episode["qa"])}
    return images, record


def shard_path(out: Path, split: str, index: int) -> Path:
    return out / "episodes" / split / f"{split}-{index:05d}.tar"


def write_episode_shards(store, cat, out: Path, shard_size: int, mtime: int = 0) -> dict:
    """Write the samples set's episodes (samples/episodes.parquet) as shards; {"episodes", "shards", "written"}."""
    out = Path(out)
    folder = out / "episodes"
    path = store.samples_dir / EPISODES_FILE
    episodes = pq.read_table(path).to_pylist() if path.exists() else []
    index = cat.node_index()
    code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    plan: dict[str, tuple[str, list[dict]]] = {}
    for split in sorted({e["split"] for e in episodes}):
        chosen = sorted((e for e in episodes if e["split"] == split), key=lambda e: e["key"])
        for j in range(0, len(chosen), shard_size):
            chunk = chosen[j:j + shard_size]
            ids = sorted({i for e in chunk for i in [*sum(e["reference_ids"], []), *e["query_ids"]]})
            pos = index.positions(ids)
            if (pos < 0).any():
                raise KeyError(f"episode image {ids[int((pos < 0).argmax())]} is not a live store image")
            parts = [index.parts[int(p)].as_py() for p in pos]
            digest = hashlib.sha256(json.dumps({"episodes": chunk, "parts": parts, "code": code, "mtime": mtime},
                                               sort_keys=True).encode()).hexdigest()
            plan[str(shard_path(out, split, j // shard_size).relative_to(out))] = (digest, chunk)
    clean_temp_files(folder)
    for stale in sorted(folder.glob("*/*.tar")) if folder.is_dir() else []:
        if str(stale.relative_to(out)) not in plan:
            stale.unlink()
    for split_dir in sorted(p for p in folder.glob("*") if p.is_dir() and not any(p.iterdir())):
        split_dir.rmdir()  # a split with no episodes left
    plan_file = folder / "plan.json"
    old = json.loads(plan_file.read_text()) if plan_file.exists() else {}
    written = 0
    for rel, (digest, chunk) in sorted(plan.items()):
        target = out / rel
        if target.exists() and old.get(rel) == digest:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_tar(_encode(chunk, cat), target, mtime=mtime)
        written += 1
    # always written: the folder is an export output (DVC) even when episodes are off
    write_json({rel: digest for rel, (digest, _) in sorted(plan.items())}, plan_file)
    return {"episodes": len(episodes), "shards": len(plan), "written": written}


def _encode(chunk: list[dict], cat) -> list[dict]:
    cells = cat.read_cells([("image", i) for e in chunk for i in [*sum(e["reference_ids"], []), *e["query_ids"]]])
    samples = []
    for e in chunk:
        first = cells[("image", e["query_ids"][0])]
        ext = _EXT.get(str(first["format"]).lower(), "png")
        images, record = episode_fields(e, ext)
        sample = {"__key__": e["key"], "json": json.dumps(record, sort_keys=True).encode()}
        for field, image_id in images.items():
            cell = cells[("image", image_id)]
            if _EXT.get(str(cell["format"]).lower()) != ext:
                raise ValueError(f"episode {e['key']}: images stored in two formats ({ext}, {cell['format']})")
            sample[field] = cell["data"]
        samples.append(sample)
    return samples
