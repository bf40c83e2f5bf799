"""Aspect buckets and any number of rows (issue 25): a sample's cells take the bucket nearest its
query image's aspect, so a 3:4 portrait keeps its whole subject; a cap on the grid's pixels makes
cells of many-row samples smaller, and the record says their size; the trainer batches by it."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from core.grid import capped, nearest_bucket
from core.images import encode_png
from pipelines.sampling_params import ExportParams
from pipelines.shards import CellCache, assemble

BUCKETS = [[1024, 1024], [896, 1152], [1152, 896], [768, 1024], [1024, 768]]


def portrait() -> np.ndarray:
    """A 3:4 portrait (300 x 400) whose subject runs from the top edge (red band) to the bottom (blue)."""
    img = np.full((400, 300, 3), 200, np.uint8)
    img[:20] = (255, 0, 0)
    img[-20:] = (0, 0, 255)
    return img


def _sample(ids, cols=("image", "image")):
    cols = list(cols)
    return {"key": "train_0", "split": "train", "task": "t", "family": "f", "columns": cols, "image_ids": ids,
            "cell_nodes": [n for _ in ids for n in cols], "cell_ids": [i for i in ids for _ in cols],
            "target_row": len(ids) - 1, "target_col": len(cols) - 1,
            "instruction": {"layout": "l", "task": "", "content": "", "text": "l"}}


def _grid(sample, cells, export) -> tuple[np.ndarray, dict]:
    out = assemble(sample, CellCache(cells), export, "grid")
    record = json.loads(out["json"])
    return np.asarray(Image.open(io.BytesIO(out["grid.png"])).convert("RGB")), record


def test_nearest_bucket_on_a_log_scale_and_the_pixel_cap():
    assert nearest_bucket(3 / 4, [tuple(b) for b in BUCKETS]) == (768, 1024)
    assert nearest_bucket(1.0, [tuple(b) for b in BUCKETS]) == (1024, 1024)
    assert nearest_bucket(2.0, [(1024, 512), (512, 1024)]) == (1024, 512)
    assert nearest_bucket(0.5, [(1024, 512), (512, 1024)]) == (512, 1024)
    assert capped((1024, 768), 2, 2, None) == (1024, 768)
    h, w = capped((1024, 768), 3, 2, 1024 * 1024)
    assert 3 * 2 * h * w <= 1024 * 1024 and h % 16 == 0 and w % 16 == 0 and abs(w / h - 0.75) < 0.05


def test_a_portrait_keeps_its_whole_subject_in_its_bucket_and_loses_it_in_a_square_crop():
    cells = {("image", "p"): encode_png(portrait())}
    sample = _sample(["p"])
    grid, record = _grid(sample, cells, ExportParams(buckets=BUCKETS))
    assert (record["cell_width"], record["cell_height"]) == (768, 1024)
    cell = grid[:, :768]
    assert cell[5, 150, 0] > 200 and cell[5, 150, 2] < 50  # the red top band is there
    assert cell[-5, 150, 2] > 200 and cell[-5, 150, 0] < 50  # and the blue bottom band
    square, record = _grid(sample, cells, ExportParams(cell_size=256))
    assert (record["cell_width"], record["cell_height"]) == (256, 256)
    assert not (square[:8, :256, 0] > 200).all()  # a square centre crop cut the top band away


def test_many_rows_shrink_cells_to_the_pixel_cap_and_the_record_says_the_size():
    ids = [f"i{k}" for k in range(6)]
    rng = np.random.default_rng(0)
    cells = {("image", i): encode_png(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) for i in ids}
    export = ExportParams(cell_size=128, max_grid_pixels=6 * 2 * 64 * 64, layouts=["grid", "sequence"])
    grid, record = _grid(_sample(ids), cells, export)
    assert record["rows"] == 6 and (record["cell_height"], record["cell_width"]) == (64, 64)
    assert grid.shape == (6 * 64, 2 * 64, 3)
    seq = assemble(_sample(ids), CellCache(cells), export, "sequence")
    assert sorted(k for k in seq if k.endswith(".png")) == sorted(f"r{r}c{c}.png" for r in range(6) for c in range(2))
    few, record = _grid(_sample(ids[:1]), cells, export)
    assert (record["cell_height"], record["cell_width"]) == (128, 128)  # under the cap: the cell size


def test_buckets_param_is_validated():
    with pytest.raises(ValueError):
        ExportParams(buckets=[[1000, 1024]])
    with pytest.raises(ValueError):
        ExportParams(buckets=[])


@pytest.mark.timeout(240)
def test_five_row_samples_through_sample_and_export_and_the_trainer_batches_by_bucket(tmp_path):
    from pipelines.cli import run_stages
    from tests.pipeline_fixtures import shard_records, small_params
    from training.data import GridSample, batch_by_layout

    params = small_params(tmp_path, count=24, annotators={"grayscale": {}}, mine={"enabled": False},
                          sample={"rows": {5: 1.0}, "samples_per_task": 4},
                          export={"cell_size": 64, "max_grid_pixels": 5 * 2 * 32 * 32, "layouts": ["grid", "sequence"]})
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    records = shard_records(tmp_path / "out")
    five = [r for r in records if r["rows"] == 5]  # fewer where a split's pool has fewer distinct groups
    assert five and max(r["rows"] for r in records) == 5
    assert {(r["cell_height"], r["cell_width"]) for r in five} == {(32, 32)}  # 5 x 2 x 64^2 capped to 10,240 px
    assert list((tmp_path / "out" / "shards_seq").glob("*/5x2/*.tar"))
    sizes = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["samples_per_cell_size"]
    assert sizes["32x32"] == len(five) and sum(sizes.values()) == len(records)  # the report's bucket histogram
    assert run_stages(("export",), params, log=lambda *_: None)["export"]["written"] == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["samples_per_cell_size"] == sizes
    # the trainer's batches hold one cell size (bucket) and one grid shape each
    made = [GridSample(f"k{k}", {"rows": 1, "cols": 2, "family": "f"}, [np.zeros((h, w, 3), np.uint8)] * 2, (h, w))
            for k, (h, w) in enumerate([(64, 48), (48, 64), (64, 48), (48, 64), (64, 48), (48, 64)])]
    for batch in batch_by_layout(iter(made), 3):
        assert len({s.cell_hw for s in batch}) == 1
