"""Shard reading, cell cutting, layout batching, decoupled task sampling, latent cache."""

import io
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from shard_fixtures import write_shards
from training_helpers import tiny_base, tiny_params

from core.sample_reader import SchemaError, iter_samples
from training.backends import make_backend
from training.config import DataParams, TrainParams
from training.data import (batch_by_layout, cut_cells, decode_sample, family_draws, grid_batches,
                           raw_sample_stream, scan_families)
from training.latent_cache import LatentCache, encode_batch, fingerprint


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_samples=12, per_shard=4, cell=32,
                        layouts=(2, 2, 3))


def _raw(shards):
    return list(iter_samples(shards))


def test_decode_cuts_cells_exactly_with_boxes(shards):
    raw = _raw(shards)[0]
    s = decode_sample(raw)
    grid = np.asarray(Image.open(io.BytesIO(raw.images["grid.png"])).convert("RGB"))
    assert s.cell_hw == (32, 32) and len(s.cells) == s.rows * s.cols
    np.testing.assert_array_equal(s.grid(), grid)  # cells re-compose the lossless grid exactly
    np.testing.assert_array_equal(s.cells[s.target_index], grid[32:64, 32:64])
    assert s.sequence()[0] is s.cells[s.target_index]  # target first in the sequence layout
    assert s.target_box() == (32, 32, 64, 64)
    np.testing.assert_array_equal(cut_cells(grid, raw.record)[1], grid[:32, 32:64])


def test_cell_size_resizes_to_token_multiple(shards):
    s = decode_sample(_raw(shards)[0], cell_size=48)
    assert s.cell_hw == (48, 48) and s.grid().shape == (96, 96, 3)
    with pytest.raises(ValueError, match="multiple of 16"):
        decode_sample(_raw(shards)[0], cell_size=40)


def test_batches_hold_one_layout(shards):
    params = DataParams(shards=shards, batch_size=2, shuffle_buffer=8)
    batches = list(itertools.islice(grid_batches(params, seed=0), 12))
    layouts = {b[0].layout() for b in batches}
    assert layouts == {(2, 2, 32, 32), (3, 2, 32, 32)}
    for b in batches:
        assert len(b) == 2 and len({s.layout() for s in b}) == 1


def test_stream_is_resampled_and_deterministic(shards):
    a = [r.key for r in itertools.islice(raw_sample_stream(shards, seed=3, shuffle_buffer=4), 30)]
    b = [r.key for r in itertools.islice(raw_sample_stream(shards, seed=3, shuffle_buffer=4), 30)]
    c = [r.key for r in itertools.islice(raw_sample_stream(shards, seed=4, shuffle_buffer=4), 30)]
    assert a == b and a != c
    assert len(a) == 30 > 12  # infinite: resampled past the 12 samples


def test_decoupled_task_sampling_one_family_per_batch(shards):
    assert scan_families(shards) == ["gray", "invert"]
    params = DataParams(shards=shards, batch_size=2, decoupled_tasks=True, shuffle_buffer=0)
    r0 = list(itertools.islice(grid_batches(params, seed=0, rank=0), 10))
    r1 = list(itertools.islice(grid_batches(params, seed=0, rank=1), 10))
    for b in r0 + r1:
        assert len({s.family for s in b}) == 1 and len({s.layout() for s in b}) == 1
    draws0 = list(itertools.islice(family_draws(["gray", "invert"], {}, seed=0, rank=0), 10))
    draws1 = list(itertools.islice(family_draws(["gray", "invert"], {}, seed=0, rank=1), 10))
    assert [b[0].family for b in r0] == draws0  # each step follows this rank's own draw
    assert draws0 != draws1  # ranks draw independently
    only = list(itertools.islice(family_draws(["gray", "invert"], {"gray": 1.0}, seed=0, rank=0), 20))
    assert set(only) == {"gray"}


def test_missing_family_fails_with_a_reason(shards):
    samples = (decode_sample(r) for r in itertools.cycle(_raw(shards)))
    with pytest.raises(RuntimeError, match="'nope'"):
        next(batch_by_layout(samples, 2, max_buffered=20, family_for_step=iter(["nope"] * 5)))


def test_schema_version_checked(shards):
    s = _raw(shards)[0]
    rec = dict(s.record, schema="other/9")
    raw = {"__key__": s.key, "json": json.dumps(rec).encode(), "grid.png": s.images["grid.png"]}  # infer_grid's form
    with pytest.raises(SchemaError, match=f"{s.key}.*schema 'other/9'"):
        decode_sample(raw)


def test_latent_cache_returns_what_encoding_gives(shards, tmp_path):
    params = tiny_params("flux", shards, tmp_path / "o", data={"cache_dir": str(tmp_path / "cache")})
    backend = make_backend(params, tiny_base("flux"))
    samples = next(grid_batches(params.data, seed=0))
    cache = LatentCache(params.data.cache_dir, fingerprint(params, backend))
    first = encode_batch(backend, samples, cache)
    assert len(list(cache.dir.glob("*.safetensors"))) == 2
    fresh = next(grid_batches(params.data, seed=0))  # same keys, not decoded yet
    again = encode_batch(backend, fresh, cache)  # from disk now
    assert [s.key for s in fresh] == [s.key for s in samples]
    assert all(s._cells is None for s in fresh)  # a cache hit never decodes the PNG
    for a, b in zip(first, again):
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all()
    other = TrainParams(**{**params.model_dump(), "data": {**params.data.model_dump(), "cell_size": 48}})
    assert fingerprint(other, backend) != fingerprint(params, backend)


def test_latent_cache_misses_after_a_reexport_with_the_same_keys(tmp_path):
    """A re-export reuses sample keys with other content: the cache must not serve the old latents."""
    old = write_shards(tmp_path / "old", n_samples=2, per_shard=2, cell=32, families=("invert",))
    new = write_shards(tmp_path / "new", n_samples=2, per_shard=2, cell=32, families=("gray",))
    params = tiny_params("flux", old, tmp_path / "o", data={"cache_dir": str(tmp_path / "cache")})
    backend = make_backend(params, tiny_base("flux"))
    cache = LatentCache(params.data.cache_dir, fingerprint(params, backend))
    take = lambda urls: next(grid_batches(params.data.model_copy(update={"shards": urls}), seed=0))  # noqa: E731
    before, after = take(old), take(new)
    assert sorted(s.key for s in before) == sorted(s.key for s in after)  # same keys, other pixels
    encode_batch(backend, before, cache)
    got = {s.key: t for s, t in zip(after, encode_batch(backend, after, cache))}
    direct = {s.key: t for s, t in zip(after, backend.encode(after))}
    for key, t in got.items():
        assert torch.equal(t["latents"], direct[key]["latents"])
    assert len(list(cache.dir.glob("*.safetensors"))) == 4
