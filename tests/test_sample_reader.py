"""core/sample_reader.py, the one reader of exported shards (issue 24), on shards written the way
`vicl export` writes them (pipelines.shards.assemble + write_tar, what the export stage calls per shard)."""

import io
import json
import tarfile

import numpy as np
import pytest
import skimage.data
from PIL import Image

from core.images import encode_png
from core.sample_reader import (SchemaError, iter_samples, read_samples, shard_paths, split_member_name,
                                walk_shards)
from core.sample_schema import SCHEMA_VERSION
from pipelines.sampling_params import ExportParams
from pipelines.shards import CellCache, assemble, write_tar

PHOTOS = {"a": skimage.data.astronaut, "b": skimage.data.chelsea, "c": skimage.data.coffee}


def _cells() -> dict:
    cells = {}
    for i, load in PHOTOS.items():
        rgb = load()
        cells[("image", i)] = encode_png(rgb)
        cells[("gray", i)] = encode_png(np.repeat(rgb.mean(-1, keepdims=True).astype(np.uint8), 3, -1))
    return cells


def _sample(index: int, ids: list[str], split: str = "train") -> dict:
    cols = ["gray", "image"]
    return {"key": f"{split}_{index:09d}", "split": split, "task": "gray_to_image", "family": "restoration",
            "columns": cols, "image_ids": ids, "cell_nodes": [n for _ in ids for n in cols],
            "cell_ids": [i for i in ids for _ in cols], "target_row": len(ids) - 1, "target_col": 1,
            "instruction": {"layout": "l", "task": "t", "content": "", "text": "l t"}}


SAMPLES = [_sample(0, ["a", "b"]), _sample(1, ["b", "c", "a"]), _sample(2, ["c", "a"])]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Two grid shards and one sequence shard of the same samples, plus what was written."""
    root = tmp_path_factory.mktemp("reader")
    export = ExportParams(cell_size=32, layouts=["grid", "sequence"])
    cache = CellCache(_cells())
    grid = [assemble(s, cache, export, "grid") for s in SAMPLES]
    seq = [assemble(s, cache, export, "sequence") for s in SAMPLES]
    (root / "grid").mkdir()
    (root / "seq").mkdir()
    write_tar(grid[2:], root / "grid" / "train-00001.tar")  # written first: order comes from the names
    write_tar(grid[:2], root / "grid" / "train-00000.tar")
    write_tar(seq, root / "seq" / "train-00000.tar")
    return root, {g["__key__"]: g for g in grid}, {s["__key__"]: s for s in seq}


def test_grid_shards_read_in_order_with_records_and_image_bytes(shards):
    root, grid, _ = shards
    samples = list(iter_samples(root / "grid"))  # a folder; a glob or a list of paths read the same
    assert [s.key for s in samples] == ["train_000000000", "train_000000001", "train_000000002"]
    assert [s.shard for s in samples] == [str(root / "grid" / "train-00000.tar")] * 2 + \
        [str(root / "grid" / "train-00001.tar")]
    assert [s.key for s in iter_samples(str(root / "grid" / "*.tar"))] == [s.key for s in samples]
    assert [s.key for s in iter_samples(sorted((root / "grid").glob("*.tar"), reverse=True))] == \
        [s.key for s in samples]
    for s in samples:
        written = grid[s.key]
        assert s.record == json.loads(written["json"]) and s.record["schema"] == SCHEMA_VERSION
        assert s.layout == "grid" and s.images == {"grid.png": written["grid.png"]}  # bytes, undecoded
        image = s.image("grid.png")
        assert image.shape == (s.record["rows"] * 32, s.record["cols"] * 32, 3)
        cells = s.cells()
        assert len(cells) == s.record["rows"] * s.record["cols"]
        x0, y0, x1, y1 = s.record["cells"][-1]["box"]
        np.testing.assert_array_equal(cells[-1], image[y0:y1, x0:x1])


def test_sequence_shard_reads_the_same_cells_as_the_grid(shards):
    root, _, seq = shards
    grid_cells = {s.key: s.cells() for s in iter_samples(root / "grid")}
    samples = list(iter_samples(root / "seq" / "train-00000.tar"))  # one shard
    assert [s.key for s in samples] == sorted(seq)
    for s in samples:
        rows, cols = s.record["rows"], s.record["cols"]
        assert s.layout == "sequence" and s.record["layout"] == "sequence"
        assert s.images == {f"r{r}c{c}.png": seq[s.key][f"r{r}c{c}.png"] for r in range(rows) for c in range(cols)}
        assert all(np.array_equal(a, b) for a, b in zip(s.cells(), grid_cells[s.key], strict=True))


def test_a_wrong_schema_version_names_the_shard_and_the_key(shards, tmp_path):
    _, grid, _ = shards
    old = dict(grid["train_000000001"])
    old["json"] = json.dumps(dict(json.loads(old["json"]), schema="vicl.sample/0")).encode()
    path = tmp_path / "train-00000.tar"
    write_tar([grid["train_000000000"], old], path)
    samples = iter_samples(path)
    assert next(samples).key == "train_000000000"  # streamed: the good sample before it comes out first
    with pytest.raises(SchemaError, match=r"train-00000\.tar: sample 'train_000000001': schema 'vicl.sample/0' "
                                          r"is not the supported 'vicl.sample/1'") as e:
        next(samples)
    assert (e.value.shard, e.value.key) == (str(path), "train_000000001") and isinstance(e.value, ValueError)
    nojson = {k: v for k, v in grid["train_000000002"].items() if k != "json"}
    write_tar([nojson], tmp_path / "x.tar")
    with pytest.raises(SchemaError, match="x.tar: sample 'train_000000002': no `json` member"):
        list(iter_samples(tmp_path / "x.tar"))


def test_reading_is_lazy_across_shards(shards, tmp_path):
    root, _, _ = shards
    samples = read_samples([root / "grid" / "train-00000.tar", tmp_path / "missing.tar"])
    assert [next(samples).key, next(samples).key] == ["train_000000000", "train_000000001"]
    with pytest.raises(FileNotFoundError):
        next(samples)
    with pytest.raises(FileNotFoundError, match="no shards"):
        shard_paths([str(tmp_path / "none" / "*.tar")])


def test_member_names_split_at_the_first_dot_of_the_last_component():
    assert split_member_name("train_000000001.grid.png") == ("train_000000001", "grid.png")
    assert split_member_name("train_000000001.r0c1.png") == ("train_000000001", "r0c1.png")
    assert split_member_name("a.b/train_1.json") == ("a.b/train_1", "json")  # dots in folders stay in the key
    assert split_member_name("../escape.json") == ("../escape", "json")
    assert split_member_name("nodot") is None and split_member_name(".json") is None


def test_walk_reports_links_and_keeps_repeated_keys_apart(tmp_path):
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tf:
        for name in ("k1.json", "k1.grid.png", "k1.json", "k2.json", "k2"):
            info = tarfile.TarInfo(name)
            info.size = len(name)
            tf.addfile(info, io.BytesIO(name.encode()))
        link = tarfile.TarInfo("k3.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    skipped = []
    raws = list(walk_shards([path], lambda name, why: skipped.append((name, why))))
    assert [(r.key, sorted(r.fields)) for r in raws] == [("k1", ["grid.png", "json"]), ("k1", ["json"]),
                                                         ("k2", ["json"])]
    assert raws[0].fields["json"] == b"k1.json" and raws[0].shard == str(path)
    assert skipped == [("k2", "member name has no field (no dot)"), ("k3.json", "not a regular file in the shard")]


def test_the_trainer_and_eval_read_what_the_reader_reads(shards):
    from training.data import decode_sample
    from training.evaluate import read_eval_set

    root, _, _ = shards
    samples = list(iter_samples(root / "grid"))
    grid = decode_sample(samples[1])
    assert grid.key == samples[1].key and grid.record == samples[1].record
    assert all(np.array_equal(a, b) for a, b in zip(grid.cells, samples[1].cells(), strict=True))
    evals = read_eval_set([root / "seq"])
    assert [e.key for e in evals] == [s.key for s in samples]
    assert all(np.array_equal(a, b) for e, s in zip(evals, samples) for a, b in zip(e.cells, s.cells(), strict=True))


def test_sample_images_are_pngs_as_written(shards):
    root, _, _ = shards
    s = next(iter_samples(root / "seq"))
    with Image.open(io.BytesIO(s.images["r0c0.png"])) as im:
        assert im.format == "PNG" and im.size == (32, 32)
