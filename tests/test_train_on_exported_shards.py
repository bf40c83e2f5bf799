"""The bundled trainer reads shards the pipeline itself exported (not hand-made fixtures)."""

import glob
from pathlib import Path

import numpy as np
from training_helpers import tiny_base, tiny_params

from pipelines.cli import run_stages
from tests.pipeline_fixtures import small_params
from training.cli import train


def test_loss_falls_on_pipeline_shards(tmp_path, ray_local):
    params = small_params(tmp_path / "build", count=16, annotators={"canny": {}},
                          sample={"samples_per_task": 8, "rows": {2: 1.0}}, export={"cell_size": 32})
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    shards = sorted(glob.glob(str(Path(params.paths.out) / "shards" / "train" / "*.tar")))
    assert shards
    train_params = tiny_params("flux", shards, tmp_path / "train", max_steps=30, lora={"rank": 8, "alpha": 8},
                               optim={"lr": 1e-2}, data={"batch_size": 4})
    result = train(train_params, base=tiny_base("flux"))
    assert len(result.losses) == 30 and np.isfinite(result.losses).all()
    assert np.mean(result.losses[-10:]) < np.mean(result.losses[:10])
    assert (tmp_path / "train" / "adapter" / "adapter.safetensors").is_file()
