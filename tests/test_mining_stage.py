"""Pair readers (folder, parquet, HF datasets, WebDataset) and the mining stage (local and Ray)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mining  # noqa: F401,E402
from mining.config import MineParams  # noqa: E402
from mining.quadruplets import QUADRUPLET_SCHEMA  # noqa: E402
from pipelines.mine_runner import KMEANS_BACKEND_KEY, PAIR_SCHEMA, embed_and_mine, kmeans_backends, run_mine  # noqa: E402
from core.images import content_id, encode_png  # noqa: E402

EDITS = {
    "brighten": ("make the photo brighter", lambda im: np.clip(im.astype(np.float32) * 1.6, 0, 255).astype(np.uint8)),
    "grey": ("turn it black and white", lambda im: np.repeat(im.mean(2, keepdims=True), 3, 2).astype(np.uint8)),
    "blur": ("blur the whole picture", lambda im: __import__("cv2").GaussianBlur(im, (0, 0), 3)),
    "invert": ("invert the colours", lambda im: 255 - im),
}


@pytest.fixture(scope="module")
def pair_table() -> pa.Table:
    import cv2
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rows = {name: [] for name in PAIR_SCHEMA.names}
    k = 0
    for p, photo in enumerate(photos):
        for c in range(2):  # two crops per photo
            h, w = photo.shape[:2]
            side = min(h, w) // 2
            crop = cv2.resize(photo[c * side // 2: c * side // 2 + side, c * side // 2: c * side // 2 + side], (64, 64))
            for family, (text, fn) in EDITS.items():
                src, edt = encode_png(crop), encode_png(fn(crop))
                rows["pair_id"].append(f"pair{k:03d}")
                rows["source_id"].append(content_id(src))
                rows["edited_id"].append(content_id(edt))
                rows["source_bytes"].append(src)
                rows["edited_bytes"].append(edt)
                rows["instruction"].append(text)
                k += 1
    return pa.table(rows, schema=PAIR_SCHEMA)


def _params() -> MineParams:
    return MineParams(kmeans={"clusters": {"c": 0.5, "k_min": 2}, "nredo": 3},
                      filters={"tau_text": 0.6, "tau_visual": 0.95})


def test_run_mine_local_cache_reuse_and_order_independence(pair_table, tmp_path):
    res = embed_and_mine(pair_table, _params(), tmp_path)
    q = res.quadruplets
    assert q.schema == QUADRUPLET_SCHEMA and q.num_rows > 0
    for a, b in zip(q["instruction_a"].to_pylist(), q["instruction_b"].to_pylist()):
        assert a == b  # the text filter keeps only matching edits here
    assert all(x != y for x, y in zip(q["source_id_a"].to_pylist(), q["source_id_b"].to_pylist()))
    parts = sorted((tmp_path / "embeddings").rglob("part-*.parquet"))
    assert {p.parent.name for p in parts} == {"colour_gradient_stats-v2-s128", "text-all-MiniLM-L6-v2"}
    mined = list((tmp_path / "mine").iterdir())
    assert len(mined) == 1 and (mined[0] / "candidates.parquet").is_file() and (mined[0] / "dedup.parquet").is_file()
    assert pq.read_table(mined[0] / "dedup.parquet").num_rows == 8  # 8 distinct source crops
    stats = json.loads((mined[0] / "stats.json").read_text())
    assert stats[KMEANS_BACKEND_KEY] == kmeans_backends(_params()) == {"dedup": "faiss", "tasks": "faiss"}

    shuffled = pair_table.take(np.random.default_rng(0).permutation(pair_table.num_rows))
    again = run_mine(shuffled, _params(), tmp_path)
    assert again.equals(q)  # same quadruplets whatever the input order
    assert sorted((tmp_path / "embeddings").rglob("part-*.parquet")) == parts  # nothing re-embedded


def test_missing_faiss_stops_mining_before_any_embedding(pair_table, tmp_path, monkeypatch):
    import mining.kmeans

    from mining.kmeans import KMeansBackendError

    monkeypatch.setattr(mining.kmeans, "have_faiss", lambda: False)
    with pytest.raises(KMeansBackendError, match="backend: sklearn"):
        embed_and_mine(pair_table, _params(), tmp_path)
    assert not (tmp_path / "embeddings").exists()  # failed before the expensive part


def test_run_mine_rejects_duplicate_pair_ids(pair_table, tmp_path):
    doubled = pa.concat_tables([pair_table, pair_table.slice(0, 1)])
    with pytest.raises(ValueError, match="pair_id"):
        run_mine(doubled, _params(), tmp_path)


def test_run_mine_ray_dataset_matches_local(pair_table, tmp_path, ray_local):
    import ray

    local = run_mine(pair_table, _params(), tmp_path / "local")
    ds = ray.data.from_arrow(pair_table).repartition(3)
    via_ray = run_mine(ds, _params(), tmp_path / "ray")
    assert via_ray.equals(local)
    assert sorted(p.name for p in (tmp_path / "ray" / "embeddings").iterdir()) == \
        ["colour_gradient_stats-v2-s128", "text-all-MiniLM-L6-v2"]
