"""Judges of edit pairs (annotators/judges.py), the judge stage and the sample stage's thresholds:
the registry and params, CLIP directional similarity and CLIP-IQA on a tiny open_clip loaded from a
models dir, the VLM judge's prompt and parser (and a tiny random Qwen2.5-VL loaded from a models dir),
and the stage through the CLI: scores written, a re-run scores nothing, a threshold change
re-samples without re-scoring and writes the rejects."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from skimage import data  # noqa: E402

from annotators import judges  # noqa: E402
from annotators.judges import EditPair, directional_similarity, judge_chat_prompt, parse_judge_answer  # noqa: E402
from core.weights import MissingWeightsError  # noqa: E402
from pipelines.params import ParamsError, WeightsMissing, parse_params, validate_params  # noqa: E402
from tests.pipeline_fixtures import small_params, write_params  # noqa: E402

TINY_CLIP = "vicl-judge-tiny-clip"
TINY_CLIP_REPO = "test/tiny-judge-clip"
TINY_PIXELS = {"min_pixels": 4 * 28 * 28, "max_pixels": 16 * 28 * 28}


# --- registry and params -------------------------------------------------------------------------

def test_registry_lists_the_judges_and_names_unknown_ones():
    assert judges.names() == ["clip_direction", "clip_iqa", "qwen_vl"]
    assert judges.get("clip_direction").scores == ("direction", "image_image")
    with pytest.raises(KeyError, match="unknown judge 'nope'; known: clip_direction, clip_iqa, qwen_vl"):
        judges.get("nope")

    class Twin(judges.Judge):
        name, scores = "clip_iqa", ("x",)

    with pytest.raises(ValueError, match="registered twice"):
        judges.register(Twin)

    class Mute(judges.Judge):
        name = "mute"

    with pytest.raises(ValueError, match="declares no `scores`"):
        judges.register(Mute)
    assert {name for name, _ in judges.catalog()} == {"clip_direction", "clip_iqa", "qwen_vl"}


def test_judge_params_are_validated_and_key_the_scores():
    cls = judges.get("clip_direction")
    with pytest.raises(Exception, match="neutral"):
        cls({"neutral": "a photo"})
    a, b = cls.Params(), cls.Params(neutral_caption="an image.")
    assert cls.key(a) != cls.key(b) and cls.key(a) == cls.key(cls.Params()) and cls.key(a).startswith("clip_direction-")


@pytest.mark.parametrize("data, message", [
    ({"judge": {"judges": {"nope": {}}}}, "judge.judges: Value error, unknown judge 'nope'"),
    ({"judge": {"judges": {"qwen_vl": {"params": {"max_new_tokens": 1}}}}}, "qwen_vl.params: max_new_tokens"),
    ({"judge": {"judges": {"clip_iqa": {"params": {"prompt": "x"}}}}}, "clip_iqa.params: prompt: unknown key"),
    ({"judge": {"chunk_size": 0}}, "judge.chunk_size"),
    ({"sample": {"judge_thresholds": {"clip_direction": 0.1}}}, "a threshold key is '<judge>.<score>'"),
    ({"sample": {"judge_thresholds": {"clip_direction.direction": 0.1}}},
     "sample.judge_thresholds.clip_direction.direction: judge 'clip_direction' is not configured"),
    ({"judge": {"judges": {"clip_direction": {}}}, "sample": {"judge_thresholds": {"clip_direction.overall": 3}}},
     "judge 'clip_direction' writes no score 'overall' (its scores: direction, image_image)"),
])
def test_bad_judge_params_name_the_key(data, message):
    with pytest.raises(ParamsError) as err:
        validate_params(parse_params(data))
    assert message in str(err.value)


def test_default_params_configure_no_judge_and_thresholds_accept_configured_scores():
    assert parse_params({}).judge.judges == {} and parse_params({}).sample.judge_thresholds == {}
    params = parse_params({"judge": {"judges": {"qwen_vl": {"num_gpus": 1}}},
                           "sample": {"judge_thresholds": {"qwen_vl.overall": 4}}})
    validate_params(params)


# --- the VLM judge's prompt and parser -----------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    ('{"follows": 4, "preserves": 5}', (4, 5, 4)),
    ('```json\n{"follows": 5, "preserves": 3}\n```', (5, 3, 3)),
    ('Sure! Here is my rating:\n{"follows": "4/5", "preserves": "yes"}', (4, 5, 4)),
    ('{"follows": true, "preserves": false}', (5, 1, 1)),
    ('{"instruction_following": 4, "consistency": 2}', (4, 2, 2)),
    ('{"score": 3}', (3, 3, 3)),
    ("follows: 4, preserves: 2", (4, 2, 2)),
    ("Follows - 5\nPreserves - 3", (5, 3, 3)),
    ("Follows the instruction: yes. Unchanged: no.", (5, 1, 1)),
    ("follows: four; keeps: five", (4, 5, 4)),
    ("4", (4, 4, 4)),
    ("5.", (5, 5, 5)),
    ("Score: 4/5", (4, 4, 4)),
    ("Rating: 3 out of 5", (3, 3, 3)),
    ("I'd rate it 2 out of 5.", (2, 2, 2)),
    ("8/10", (4.2, 4.2, 4.2)),
    ("four", (4, 4, 4)),
    ("Yes, the edit does what was asked.", (5, 5, 5)),
    ("No.", (1, 1, 1)),
    ('{"follows": 5, "preserves": ', (5, None, None)),  # cut off: no overall
    ("follows: 4", (4, None, None)),
])
def test_parser_reads_many_answer_shapes(answer, expected):
    got = parse_judge_answer(answer)
    assert (got["follows"], got["preserves"], got["overall"]) == expected


@pytest.mark.parametrize("answer", [
    "", None, "I cannot tell.", "8pgI(& Ga/!4", "The rating is 2 and 4", '{"follows": 9, "preserves": 0}',
    "0.5", "{{{", '{"follows": [4], "preserves": {"a": 1}}', "follows: 7", "6", "0/5",
])
def test_parser_gives_none_when_the_answer_does_not_say(answer):
    assert parse_judge_answer(answer) == {"follows": None, "preserves": None, "overall": None}


def test_prompt_shows_both_images_then_the_instruction():
    prompt = judge_chat_prompt('make the  sky "red"\nplease')
    vision = "<|vision_start|><|image_pad|><|vision_end|>"
    assert prompt.count(vision) == 2 and prompt.index(vision) < prompt.index("make the sky 'red' please")
    assert prompt.endswith("<|im_start|>assistant\n") and '{"follows": <1-5>, "preserves": <1-5>}' in prompt


# --- CLIP judges on a tiny open_clip loaded from a models dir -----------------------------------

def test_directional_similarity_is_the_cosine_of_the_two_changes():
    e = np.eye(4, dtype=np.float32)
    src, edt = np.stack([e[0], e[0], e[0]]), np.stack([e[1], e[2], e[0]])
    text, neutral = np.stack([e[1], e[1], e[1]]), e[0]
    got = directional_similarity(src, edt, text, neutral)
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(0.5) and got[2] == 0.0  # no change: 0


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip saved where a user puts real weights (HF layout), and its params."""
    import open_clip
    from safetensors.torch import save_file

    import mining  # noqa: F401 (the torchvision fallback before open_clip)
    from mining.embed import OpenClipEmbedder

    root = tmp_path_factory.mktemp("tiny_clip")
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                           "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (root / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / f"{TINY_CLIP}.json")
    maker = OpenClipEmbedder(TINY_CLIP, "test")
    maker.load_random()
    folder = root / "models" / TINY_CLIP_REPO.replace("/", "--")
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in maker.model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return {"models_dir": str(root / "models"), "maker": maker,
            "params": {"model_name": TINY_CLIP, "pretrained": "test", "weights_repo": TINY_CLIP_REPO}}


def _pairs() -> list[EditPair]:
    photo = np.ascontiguousarray(data.astronaut()[::4, ::4])
    return [EditPair(photo, photo[:, ::-1].copy(), "flip it horizontally"),
            EditPair(photo, (255 - photo).astype(np.uint8), "invert the colours"),
            EditPair(photo, photo.copy(), "make it brighter")]


def test_clip_direction_loads_the_saved_weights_and_scores(tiny_clip, one_torch_thread):
    judge = judges.get("clip_direction")(tiny_clip["params"], models_dir=tiny_clip["models_dir"])
    assert judge.missing_weights() == []
    judge.load()
    pairs = _pairs()
    scores = judge.score(pairs)
    assert [set(s) for s in scores] == [{"direction", "image_image"}] * 3
    assert all(-1 <= s["direction"] <= 1 and -1 <= s["image_image"] <= 1.000001 for s in scores)
    assert scores[2] == {"direction": 0.0, "image_image": pytest.approx(1.0, abs=1e-5)}  # no change: no direction
    maker = tiny_clip["maker"]  # the weights on disk are the tiny model's: the same numbers by hand
    src, edt = maker.embed_images([p.source for p in pairs]), maker.embed_images([p.edited for p in pairs])
    text = maker.embed_texts([p.instruction for p in pairs])
    want = directional_similarity(src, edt, text, maker.embed_texts(["a photo."])[0])
    assert [s["direction"] for s in scores] == pytest.approx(want.tolist(), abs=1e-5)
    assert judge.score([]) == []


def test_clip_iqa_reuses_the_annotators_score(tiny_clip, one_torch_thread):
    from annotators.image_quality import clip_iqa_scores

    judge = judges.get("clip_iqa")(tiny_clip["params"], models_dir=tiny_clip["models_dir"])
    judge.load()
    pairs = _pairs()
    scores = judge.score(pairs)
    maker = tiny_clip["maker"]
    prompts = maker.embed_texts(["Good photo.", "Bad photo."])
    edited = clip_iqa_scores(maker.embed_images([p.edited for p in pairs]), prompts)
    for s, e in zip(scores, edited):
        assert 0 <= s["edited"] <= 1 and s["edited"] == pytest.approx(float(e), abs=1e-5)
        assert s["delta"] == pytest.approx(s["edited"] - s["source"], abs=1e-5)


def test_missing_weights_are_named_and_never_replaced_by_random_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    clip = judges.get("clip_direction")(models_dir=tmp_path)
    (err,) = clip.missing_weights()
    assert "timm/vit_large_patch14_clip_224.openai" in str(err)
    with pytest.raises(MissingWeightsError, match="timm/vit_large_patch14_clip_224.openai"):
        clip.load()
    qwen = judges.get("qwen_vl")({"repo_id": "Qwen/Qwen2.5-VL-3B-Instruct"}, models_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="Qwen/Qwen2.5-VL-3B-Instruct"):
        qwen.load()
    assert not hasattr(qwen, "_vlm") and clip._clip.model is None  # nothing loaded, nothing random

    from pipelines.stages.judge import check_judge_weights

    params = parse_params({"annotate": {"models_dir": str(tmp_path)},
                           "judge": {"judges": {"clip_direction": {}, "clip_iqa": {}, "qwen_vl": {}}}})
    with pytest.raises(WeightsMissing) as missing:
        check_judge_weights(params, "params.yaml")
    text = str(missing.value)
    assert "3 configured judge(s)" in text
    assert "clip_direction: timm/vit_large_patch14_clip_224.openai/open_clip_model.safetensors  (vicl models " \
           "fetch timm/vit_large_patch14_clip_224.openai)" in text
    assert "qwen_vl: Qwen/Qwen2.5-VL-7B-Instruct  (vicl models fetch Qwen/Qwen2.5-VL-7B-Instruct)" in text
    check_judge_weights(parse_params({}), "params.yaml")  # no judge: nothing to check


# --- a tiny random Qwen2.5-VL, saved and loaded like real weights --------------------------------

def test_qwen_judge_loads_from_a_models_dir_and_answers_every_pair(tmp_path, one_torch_thread):
    from annotators.grounding import QwenVL

    tiny = QwenVL.random("tiny", "cpu", **TINY_PIXELS)
    repo = tmp_path / "test--tiny-qwen-vl"
    tiny.model.save_pretrained(repo)
    tiny.processor.save_pretrained(repo)
    judge = judges.get("qwen_vl")({"repo_id": "test/tiny-qwen-vl", "max_new_tokens": 6, **TINY_PIXELS},
                                  models_dir=tmp_path)
    judge.load()
    pairs = _pairs()[:2]
    answers = judge.answers(pairs)
    assert len(answers) == 2 and all(isinstance(a, str) and a for a in answers)  # the random model did generate
    scores = judge.score(pairs)
    assert scores == [parse_judge_answer(a) for a in answers]  # greedy: the same answers again
    assert all(set(s) == {"follows", "preserves", "overall"} for s in scores)


# --- thresholds, pairs and the report, on tables written by hand ---------------------------------

def _pair_row(k: int, side: str = "") -> dict:
    return {f"pair_id{side}": f"p{k}", f"source_id{side}": f"s{k}", f"edited_id{side}": f"e{k}",
            f"instruction{side}": f"edit {k}", f"source_node{side}": "image", f"source_image{side}": f"s{k}",
            f"edited_node{side}": "image", f"edited_image{side}": f"e{k}"}


def test_every_labelled_pair_and_both_pairs_of_each_quadruplet_are_judged(tmp_path):
    from pipelines.stages.judge import judged_pairs
    from pipelines.store import NodeStore

    store = NodeStore(tmp_path)
    store.mined_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([_pair_row(3), _pair_row(1)]), store.labelled_pairs_path)
    quads = [{**_pair_row(5, "_a"), **_pair_row(6, "_b"), "cluster": 0}, {**_pair_row(6, "_a"), **_pair_row(7, "_b")}]
    pq.write_table(pa.Table.from_pylist(quads), store.quadruplets_path)
    pairs = judged_pairs(store)
    assert [p["pair_id"] for p in pairs] == ["p1", "p3", "p5", "p6", "p7"]
    assert pairs[0]["instruction"] == "edit 1" and len({p["pair_key"] for p in pairs}) == 5
    changed = pq.read_table(store.labelled_pairs_path).to_pylist()
    changed[0]["edited_id"] = "e3-new"  # the edited node recomputed: a new key, so it is scored again
    pq.write_table(pa.Table.from_pylist(changed), store.labelled_pairs_path)
    assert judged_pairs(store)[1]["pair_key"] != pairs[1]["pair_key"]
    assert judged_pairs(NodeStore(tmp_path / "empty")) == []


def _scores_table(store, values: dict[str, float | None]) -> None:
    from pipelines.stages.judge import SCORES_SCHEMA

    rows = [{"pair_id": p, "pair_key": p, "judge": "clip_direction", "judge_key": "k", "score": "direction",
             "value": v} for p, v in values.items()]
    store.judged_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCORES_SCHEMA), store.judge_scores_path)


def test_thresholds_drop_pairs_and_quadruplets_and_keep_the_rejects(tmp_path):
    from pipelines.judge_thresholds import apply_judge_thresholds
    from pipelines.stage import StageOrderError
    from pipelines.store import NodeStore

    store = NodeStore(tmp_path)
    _scores_table(store, {"p1": 0.3, "p2": 0.05, "p3": None, "p4": 0.2, "p5": 0.1})
    labelled = [{"pair_id": p} for p in ("p1", "p2", "p3")]
    mined = [{"pair_id_a": "p4", "pair_id_b": "p5"}, {"pair_id_a": "p4", "pair_id_b": "p2"}]
    params = parse_params({"judge": {"judges": {"clip_direction": {}}},
                           "sample": {"judge_thresholds": {"clip_direction.direction": 0.1}}})
    kept_mined, kept_labelled, rejects = apply_judge_thresholds(params, store, mined, labelled)
    assert kept_labelled == [{"pair_id": "p1"}] and kept_mined == [mined[0]]  # 0.1 >= 0.1 is kept
    assert rejects.to_pylist() == [
        {"pair_id": "p2", "judge": "clip_direction", "score": "direction", "value": 0.05, "threshold": 0.1},
        {"pair_id": "p3", "judge": "clip_direction", "score": "direction", "value": None, "threshold": 0.1}]
    none = parse_params({})  # no thresholds: everything kept, an empty table
    assert apply_judge_thresholds(none, store, mined, labelled)[:2] == (mined, labelled)
    with pytest.raises(StageOrderError, match="1 of 6 edit pairs have no 'clip_direction' score.*vicl judge"):
        apply_judge_thresholds(params, store, mined, labelled + [{"pair_id": "p9"}])


def test_report_draws_each_score_with_its_threshold(tmp_path):
    from pipelines.report_judges import collect_judges, judges_html
    from pipelines.store import NodeStore

    store = NodeStore(tmp_path / "store")
    assert collect_judges(parse_params({}), store, tmp_path / "report") == {"scores": {}, "rejected_pairs": None}
    _scores_table(store, {f"p{k}": k / 10 for k in range(10)} | {"px": None})
    params = parse_params({"judge": {"judges": {"clip_direction": {}}},
                           "sample": {"judge_thresholds": {"clip_direction.direction": 0.35}}})
    section = collect_judges(params, store, tmp_path / "report")
    entry = section["scores"]["clip_direction.direction"]
    assert entry["pairs"] == 11 and entry["missing"] == 1 and entry["below_threshold"] == 5
    assert entry["threshold"] == 0.35 and entry["median"] == 0.45
    assert (tmp_path / "report" / entry["file"]).is_file()
    page = judges_html(section)
    assert "<h2>Judges</h2>" in page and entry["file"] in page and "0.35" in page


# --- the stage through the CLI -------------------------------------------------------------------

def _last_summary(out: str, stage: str) -> dict:
    line = [ln for ln in out.splitlines() if ln.startswith(f"[{stage}] done")][-1]
    return json.loads(line.split(": ", 1)[1])


@pytest.mark.timeout(300)
def test_the_stage_scores_once_and_a_threshold_change_resamples_without_rescoring(tiny_clip, tmp_path, capsys,
                                                                                   one_torch_thread):
    from pipelines.cli import main
    from pipelines.report import write_report
    from pipelines.store import NodeStore

    judges_section = {"models_dir": tiny_clip["models_dir"], "device": "cpu",
                      "judges": {"clip_direction": {"params": tiny_clip["params"]},
                                 "clip_iqa": {"params": tiny_clip["params"]}}}
    params = small_params(tmp_path, count=12, annotators={"edit_flip": {}}, judge=judges_section,
                          sample={"samples_per_task": 6, "eval_fraction": 0.0})
    path = write_params(tmp_path, params)
    for stage in ("ingest", "annotate", "mine"):
        assert main([stage, "--params", path]) == 0
    assert main(["sample", "--params", path]) == 2
    assert "run `vicl judge` first" in capsys.readouterr().err
    assert main(["judge", "--params", path]) == 0
    first = _last_summary(capsys.readouterr().out, "judge")
    store = NodeStore(tmp_path / "store")
    labelled = pq.read_table(store.labelled_pairs_path)
    n = labelled.num_rows
    assert first["pairs"] == n >= 8
    assert first["judges"]["clip_direction"]["scored"] == first["judges"]["clip_iqa"]["scored"] == n
    scores = pq.read_table(store.judge_scores_path)
    assert scores.num_rows == n * (2 + 3)
    assert set(zip(scores["judge"].to_pylist(), scores["score"].to_pylist())) == {
        ("clip_direction", "direction"), ("clip_direction", "image_image"), ("clip_iqa", "edited"),
        ("clip_iqa", "source"), ("clip_iqa", "delta")}
    assert set(scores["pair_id"].to_pylist()) == set(labelled["pair_id"].to_pylist())
    stamp = store.judge_scores_path.stat().st_mtime_ns

    assert main(["judge", "--params", path]) == 0  # again: nothing new to score, nothing rewritten
    again = _last_summary(capsys.readouterr().out, "judge")
    assert {j["scored"] for j in again["judges"].values()} == {0}
    assert {j["reused"] for j in again["judges"].values()} == {n}
    assert store.judge_scores_path.stat().st_mtime_ns == stamp

    assert main(["sample", "--params", path]) == 0
    assert pq.read_table(store.judge_rejects_path).num_rows == 0  # no thresholds: no rejects
    values = {p: v for p, j, s, v in zip(*(scores[c].to_pylist() for c in ("pair_id", "judge", "score", "value")))
              if (j, s) == ("clip_direction", "direction")}
    threshold = float(np.median(list(values.values())))
    strict = params.model_copy(update={"sample": params.sample.model_copy(
        update={"judge_thresholds": {"clip_direction.direction": threshold}})})
    path = write_params(tmp_path, strict)
    capsys.readouterr()
    assert main(["sample", "--params", path]) == 0  # a threshold change: re-sampled, nothing re-scored
    assert "[sample] done" in capsys.readouterr().out
    assert store.judge_scores_path.stat().st_mtime_ns == stamp
    rejects = pq.read_table(store.judge_rejects_path).to_pylist()
    below = {p for p, v in values.items() if v < threshold}
    assert below and {r["pair_id"] for r in rejects} == below
    assert all(r["threshold"] == threshold and r["judge"] == "clip_direction" for r in rejects)
    used = set()
    for s in pq.read_table(store.samples_path).to_pylist():
        if s["task"] == "mined_edit":
            used |= set(json.loads(s["scores"])["pair_ids"])
    assert used and not used & below  # a rejected pair is in no quadruplet
    summary = json.loads(store.sample_inputs_path.read_text())["summary"]
    assert summary["judge_rejected_pairs"] == len(below)

    assert main(["status", "--params", path]) == 0
    assert f"judge:    clip_direction {n} pairs scored" in capsys.readouterr().out
    page = write_report(strict, store).read_text()
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())["judges"]
    assert report["scores"]["clip_direction.direction"]["threshold"] == threshold
    assert report["rejected_pairs"] == len(below) and "<h2>Judges</h2>" in page
    assert (tmp_path / "out" / "report" / "judges" / "clip_direction.direction.png").is_file()


def test_no_judges_write_an_empty_table_and_missing_weights_stop_the_stage(tmp_path, capsys, monkeypatch):
    from pipelines.cli import main
    from pipelines.stages.judge import run_judge
    from pipelines.store import NodeStore

    params = small_params(tmp_path, count=6, annotators={"grayscale": {}}, mine={"enabled": False})
    store = NodeStore(tmp_path / "store")
    assert run_judge(params, store) == {"pairs": 0, "judges": "none configured"}
    assert pq.read_table(store.judge_scores_path).num_rows == 0
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    missing = small_params(tmp_path, count=6, annotators={"grayscale": {}}, mine={"enabled": False},
                           annotate={"models_dir": str(tmp_path / "models")}, judge={"judges": {"qwen_vl": {}}})
    assert main(["judge", "--params", write_params(tmp_path, missing)]) == 2
    err = capsys.readouterr().err
    assert "qwen_vl: Qwen/Qwen2.5-VL-7B-Instruct  (vicl models fetch Qwen/Qwen2.5-VL-7B-Instruct)" in err
