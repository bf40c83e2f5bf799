"""`vicl eval` on a tiny eval set the pipeline itself exported (grid and sequence layouts)."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from training_helpers import tiny_base, tiny_params

from pipelines.cli import main as vicl, run_stages
from tests.pipeline_fixtures import small_params
from training.evaluate import read_eval_set, run_eval


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ray_local):
    """12 photos, canny + grayscale; gray_to_image held out (eval_unseen); no cloze, 2 rows."""
    root = tmp_path_factory.mktemp("evalset")
    params = small_params(root, count=12, annotators={"canny": {"params": {"resolution": None}}, "grayscale": {}},
                          sample={"samples_per_task": 6, "rows": {2: 1.0}, "eval_fraction": 0.5,
                                  "cloze_probability": 0.0, "heldout_tasks": ["gray_to_image"]},
                          export={"cell_size": 64, "layouts": ["grid", "sequence"]})
    run_stages(("ingest", "annotate", "sample", "export"), params, log=lambda *_: None)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return root, params, params_file


def _doc(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())


def test_baselines_floor_below_ceiling_and_unseen_apart(exported, tmp_path, capsys):
    root, params, params_file = exported
    out = tmp_path / "report"
    assert vicl(["eval", "--params", str(params_file), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("vicl eval: eval:") and "eval_unseen:" in line and (out / "index.html").is_file()
    doc = _doc(out)
    tables = doc["tables"]
    assert set(tables) == {"eval", "eval_unseen"}  # unseen tasks are reported apart
    assert set(tables["eval_unseen"]["by_task"]) == {"gray_to_image"}
    assert "gray_to_image" not in tables["eval"]["by_task"]
    canny = tables["eval"]["by_task"]["image_to_canny"]
    assert canny["primary"] == "edge_f" and canny["missing"]["annotator"] == 0
    f = canny["metrics"]["edge_f"]
    assert f["copy_query"] < f["annotator"] and f["copy_exemplar"] < f["annotator"]  # floor < ceiling
    assert f["model"] is None and canny["missing"]["model"] == canny["n"]  # no model given: baselines only
    # images made by ingest have no annotator: no ceiling, but the copies are scored
    gen = tables["eval"]["by_task"]["canny_to_image"]
    assert gen["metrics"]["psnr"]["annotator"] is None and gen["metrics"]["psnr"]["copy_query"] is not None
    assert set(tables["eval"]["by_axes"]) and set(tables["eval"]["by_family"])
    assert all(r["metrics"]["copy_query"] for r in doc["samples"])


def test_folder_predictions_and_the_sequence_layout(exported, tmp_path):
    root, params, _ = exported
    out = Path(params.paths.out)
    samples = read_eval_set([out / "shards"], None)
    samples = [s for s in samples if s.split.startswith("eval")]
    seq = {s.key: s for s in read_eval_set([out / "shards_seq" / "eval", out / "shards_seq" / "eval_unseen"])}
    assert sorted(seq) == sorted(s.key for s in samples)
    for s in samples:  # the separate-images layout holds the same cells
        assert all(np.array_equal(a, b) for a, b in zip(s.cells, seq[s.key].cells))
    preds = tmp_path / "preds"
    preds.mkdir()
    for s in samples[1:]:  # a perfect model; one sample left without, one saved at twice the size
        Image.fromarray(s.target).save(preds / f"{s.key}.png")
    big = samples[1]
    Image.fromarray(big.target).resize((128, 128), Image.Resampling.BICUBIC).save(preds / f"{big.key}.png")
    res = run_eval([out / "shards_seq" / "eval", out / "shards_seq" / "eval_unseen"], out_dir=tmp_path / "r",
                   params=params, predictions=str(preds), baselines=("copy_query",), log=lambda *_: None)
    rows = {r["key"]: r for r in res.rows}
    assert rows[samples[0].key]["metrics"]["model"] is None
    for s in samples[2:]:
        m = rows[s.key]["metrics"]["model"]
        assert (m.get("edge_f") == 1.0) or (m.get("psnr") == 100.0)
    assert rows[big.key]["metrics"]["model"]  # scored after resizing to the cell
    assert "without a prediction" in res.summary and "beats copy_query" in res.summary
    html = (tmp_path / "r" / "index.html").read_text()
    assert "best" in html and "worst" in html and len(list((tmp_path / "r" / "img").glob("*.png"))) > 0
    # CLIP similarity needs real weights: their absence is the named error, never a random model
    from core.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="clip"):
        run_eval([out / "shards" / "eval"], out_dir=tmp_path / "c", predictions=str(preds), perceptual="clip",
                 models_dir=str(tmp_path / "no-models"), log=lambda *_: None)


def test_adapter_predictions_with_pivot_seeds(exported, tmp_path):
    import glob

    from training.cli import train

    root, params, _ = exported
    shards = sorted(glob.glob(str(Path(params.paths.out) / "shards" / "train" / "*.tar")))
    res = train(tiny_params("flux", shards, tmp_path / "train", max_steps=1), base=tiny_base("flux"))
    report = run_eval([Path(params.paths.out) / "shards" / "eval"], out_dir=tmp_path / "r", params=None,
                      adapter=str(res.adapter_dir), base=tiny_base("flux"), prompt_encoder="random",
                      num_steps=2, seeds=2, select="pivot", probe_steps=(0,), batch_size=8, limit=3,
                      log=lambda *_: None)
    assert len(report.rows) == 3 and all(r["metrics"]["model"] for r in report.rows)
    assert all(r["seed"] in (0, 1) and len(r["pivot_scores"]) == 2 for r in report.rows)
    assert report.probe_calls == 2  # one batch: probe steps (1) x candidates (2)
    for r in report.rows:
        img = np.asarray(Image.open(tmp_path / "r" / "predictions" / f"{r['key']}.png"))
        assert img.shape == (64, 64, 3)


def test_contact_sheet_keeps_only_the_best_and_worst(tmp_path):
    from shard_fixtures import write_shards

    from training.evaluate import evaluate, write_report

    samples = read_eval_set(write_shards(tmp_path / "s", n_samples=8, per_shard=8, cell=32, families=("invert",),
                                         split="eval"))
    noise = {s.key: 6 * i for i, s in enumerate(samples)}  # sample i: noise of sd 6 i (0: perfect)

    def predict(batch):
        rng = np.random.default_rng(0)
        return [(np.clip(s.target + rng.normal(0, noise[s.key], s.target.shape), 0, 255).astype(np.uint8), {})
                for s in batch]

    res = evaluate(samples, predict, baselines=("copy_query",), sheet_per_task=2)
    keys = [s.key for s in samples]
    assert sorted(res.thumbs) == sorted(keys[:2] + keys[-2:])  # the 2 best and the 2 worst, nothing else
    psnr = [next(r for r in res.rows if r["key"] == k)["metrics"]["model"]["psnr"] for k in keys]
    assert psnr[0] == 100.0 and psnr == sorted(psnr, reverse=True)
    _, page = write_report(res, tmp_path / "r", per_task=2)
    text = page.read_text()
    assert f"best: {keys[0]}" in text and f"worst: {keys[-1]}" in text and f"worst: {keys[-2]}" in text
