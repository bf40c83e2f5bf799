"""Cell geometry, the grid and sequence layouts, and deterministic shard bytes."""

import io
import json
import tarfile

import numpy as np
import pytest
import skimage.data
from PIL import Image

from core.images import encode_png
from core.grid import cell_shape, fit_cell
from pipelines.sampling_params import ExportParams
from pipelines.shards import CellCache, assemble, write_tar


@pytest.mark.parametrize("size", [256, 384, 512])
@pytest.mark.parametrize("aspect", [1.0, 4 / 3, 0.75, 16 / 9, 0.5, 3.0, 0.2])
def test_cell_area_near_r_squared_and_sides_divisible_by_16(size, aspect):
    h, w = cell_shape(size, aspect, max_aspect=2.0)
    assert h % 16 == 0 and w % 16 == 0
    assert abs(h * w / size**2 - 1) < 0.08
    clamped = min(max(aspect, 0.5), 2.0)
    assert abs(np.log((w / h) / clamped)) < 0.12
    if aspect == 1.0:
        assert (h, w) == (size, size)


def test_fit_cell_crops_centre_without_stretching():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # a white centre third
    out = fit_cell(img, (64, 64))
    assert out.shape == (64, 64, 3) and out.mean() > 250  # the crop is the white centre


def _cells(ids):
    photos = {"a": skimage.data.astronaut(), "b": skimage.data.chelsea(), "c": skimage.data.coffee()}
    cells = {}
    for i in ids:
        rgb = photos[i]
        cells[("image", i)] = encode_png(rgb)
        cells[("gray", i)] = encode_png(np.repeat(rgb.mean(-1, keepdims=True).astype(np.uint8), 3, -1))
    return cells


def _sample(ids, target_col=1):
    cols = ["gray", "image"]
    return {"key": "train_000000007", "split": "train", "task": "gray_to_image", "family": "restoration",
            "columns": cols, "image_ids": ids, "cell_nodes": [n for _ in ids for n in cols],
            "cell_ids": [i for i in ids for _ in cols], "target_row": len(ids) - 1, "target_col": target_col,
            "instruction": {"layout": "l", "task": "t", "content": "", "text": "l t"}}


@pytest.mark.parametrize("aspect", ["square", "query"])
def test_grid_geometry_boxes_and_sequence_cells_agree(aspect):
    ids = ["a", "b", "c"]
    export = ExportParams(cell_size=64, aspect=aspect, layouts=["grid", "sequence"])
    cache = CellCache(_cells(ids))
    grid_sample = assemble(_sample(ids, target_col=0), cache, export, "grid")
    record = json.loads(grid_sample["json"])
    grid = np.asarray(Image.open(io.BytesIO(grid_sample["grid.png"])))
    h, w = record["cell_height"], record["cell_width"]
    expected = cell_shape(64, 1.0 if aspect == "square" else 3 / 2)  # coffee (query) is 600 x 400
    assert (h, w) == expected and grid.shape == (3 * h, 2 * w, 3)
    assert record["target_cell"] == {"row": 2, "col": 0}
    assert [c["is_target"] for c in record["cells"]] == [False] * 4 + [True, False]
    assert [c["role"] for c in record["cells"]] == ["context"] * 4 + ["query"] * 2
    seq = assemble(_sample(ids, target_col=0), cache, export, "sequence")
    assert "grid.png" not in seq and "r0c0.png" not in grid_sample  # one layout per call
    assert sorted(k for k in seq if k.endswith(".png")) == ["r0c0.png", "r0c1.png", "r1c0.png", "r1c1.png",
                                                            "r2c0.png", "r2c1.png"]
    for c in record["cells"]:  # cutting the grid with a box gives the sequence cell exactly
        x0, y0, x1, y1 = c["box"]
        cell = np.asarray(Image.open(io.BytesIO(seq[f"r{c['row']}c{c['col']}.png"])))
        assert np.array_equal(grid[y0:y1, x0:x1], cell)
    assert json.loads(seq["json"])["layout"] == "sequence"


def test_shard_bytes_are_reproducible_sorted_and_keys_dot_free(tmp_path):
    ids = ["a", "b"]
    export = ExportParams(cell_size=32)
    s1 = assemble(_sample(ids), CellCache(_cells(ids)), export)
    s2 = dict(s1, __key__="train_000000001")
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    assert write_tar([s1, s2], one, mtime=0) == one.stat().st_size
    write_tar([s2, s1], two, mtime=0)
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["train_000000001.grid.png", "train_000000001.json",
                                         "train_000000007.grid.png", "train_000000007.json"]
    assert all(m.mtime == 0 for m in members)
    with pytest.raises(ValueError, match="dots"):
        write_tar([dict(s1, __key__="a.b")], tmp_path / "bad.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.tar", "two.tar"]  # no half shard left


def test_cell_cache_fits_a_shared_cell_once_and_gives_the_same_bytes():
    ids = ["a", "b"]
    export = ExportParams(cell_size=32)
    cache = CellCache(_cells(ids))
    first = assemble(_sample(ids), cache, export, "sequence")
    fitted = dict(cache._fitted)
    assert len(fitted) == 4  # 2 images x 2 nodes
    again = assemble(dict(_sample(ids), key="train_000000008"), cache, export, "sequence")
    assert all(cache._fitted[k] is v for k, v in fitted.items()) and len(cache._fitted) == 4
    assert {k: v for k, v in first.items() if k.endswith(".png")} == {k: v for k, v in again.items()
                                                                      if k.endswith(".png")}
    uncached = assemble(_sample(ids), CellCache(_cells(ids)), export, "sequence")
    assert uncached == first
    with pytest.raises(ValueError, match="unknown layout"):
        assemble(_sample(ids), cache, export, "mosaic")
