"""Decontamination (issue 25): store images near a benchmark image (`sample.exclude`) are in no split.

A benchmark photo is planted in the corpus as a 90 % centre crop, JPEG re-encodes, a resized and a
grey copy, and as the edited side of an edit pair; other photos are unrelated. After ingest ->
annotate -> sample, none of the copies (nor the pair's source) is in any sample or split, every
unrelated photo still is, and leakage.json counts them; without `exclude` the copies come back.
"""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.images import content_id
from pipelines.cli import run_stages
from pipelines.decontamination import (EXCLUDED, close_over_records, find_contaminated, rows_without,
                                       source_of)
from pipelines.params import ParamsError, parse_params
from pipelines.sources import _embedded_base
from pipelines.splits import sample_image_ids
from pipelines.stages.sample import run_sample
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params

UNRELATED = ("coffee", "rocket", "camera", "coins", "moon", "brick", "grass", "hubble_deep_field",
             "immunohistochemistry", "stereo_motorcycle", "gravel")


def photo(name: str, width: int = 128) -> np.ndarray:
    a = _embedded_base(name)
    return np.asarray(Image.fromarray(a).resize((width, max(16, round(a.shape[0] * width / a.shape[1]))),
                                            Image.LANCZOS))


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def centre_crop(a: np.ndarray, f: float) -> np.ndarray:
    h, w = a.shape[:2]
    dy, dx = int(h * (1 - f) / 2), int(w * (1 - f) / 2)
    return a[dy:h - dy, dx:w - dx]


def build(root):
    """The benchmark inputs, the corpus and {name: content id} of every corpus image."""
    astro, chelsea = photo("astronaut"), photo("chelsea")
    bench = root / "bench"
    bench.mkdir()
    (bench / "astronaut.png").write_bytes(encode(astro))
    (bench / "README.txt").write_text("not an image")  # skipped, counted
    tars = root / "bench_tars"
    tars.mkdir()
    with tarfile.open(tars / "b.tar", "w") as t:
        # a caption beside its image is no input; a lone json member is a skipped non-image
        for name, data in (("000.png", encode(chelsea)), ("000.txt", b"a caption"), ("001.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    files = {
        "astro_crop.png": encode(centre_crop(astro, 0.9)),  # embedding only (dHash moves > 6 bits)
        "astro_q50.jpg": encode(astro, "JPEG", quality=50),
        "astro_small.png": encode(np.asarray(Image.fromarray(astro).resize((96, 96), Image.BILINEAR))),
        "astro_grey.png": encode(np.asarray(Image.fromarray(astro).convert("L").convert("RGB"))),  # dHash only
        "chelsea_q60.jpg": encode(chelsea, "JPEG", quality=60),  # the tar's benchmark image
    }
    files.update({f"{n}.png": encode(photo(n)) for n in UNRELATED})
    photos = root / "photos"
    photos.mkdir()
    for name, data in files.items():
        (photos / name).write_bytes(data)
    pairs = root / "pairs"
    for pair, (source, edited, text) in {
            "p0": (encode(photo("horse")), encode(astro, "JPEG", quality=70), "turn the horse into an astronaut"),
            "p1": (encode(photo("page")), encode(255 - photo("page")), "invert it")}.items():
        (pairs / pair).mkdir(parents=True)
        (pairs / pair / "source.png").write_bytes(source)
        (pairs / pair / "edited.jpg" if pair == "p0" else pairs / pair / "edited.png").write_bytes(edited)
        (pairs / pair / "instruction.txt").write_text(text)
        files[f"{pair}_source"], files[f"{pair}_edited"] = source, edited
    ids = {name: content_id(data) for name, data in files.items()}
    return [str(bench), str(tars / "*.tar")], ids


def corpus_params(root, exclude, **sample):
    return small_params(root, annotators={"canny": {}},
                        sources=[{"kind": "folder", "path": str(root / "photos")},
                                 {"kind": "folder", "path": str(root / "pairs"), "layout": "edit_pairs"}],
                        ingest={"part_size": 64},
                        sample={"samples_per_task": 40, "eval_samples_per_task": 40, "eval_fraction": 0.3,
                                "exclude": exclude, **sample})


def read_set(store: NodeStore):
    samples = pq.read_table(store.samples_path).to_pylist()
    shown = {i for s in samples for i in sample_image_ids(s)}
    splits = pq.read_table(store.splits_path).to_pylist()
    leakage = json.loads(store.leakage_path.read_text())
    return samples, shown, splits, leakage


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("decontamination")
    exclude, ids = build(root)
    params = corpus_params(root, exclude)
    run_stages(("ingest", "annotate", "sample"), params, log=lambda *_: None)
    store = NodeStore(params.paths.store)
    first = read_set(store)
    excluded = pq.read_table(store.excluded_path).to_pylist()
    inputs = json.loads(store.sample_inputs_path.read_text())["summary"]
    again = run_sample(corpus_params(root, exclude, seed=1), store)  # another draw: benchmark vectors cached
    again_leakage = json.loads(store.leakage_path.read_text())
    run_sample(corpus_params(root, []), store)  # the same store, nothing excluded
    without = read_set(store)
    return {"root": root, "ids": ids, "exclude": exclude, "first": first, "excluded": excluded, "inputs": inputs,
            "again": again, "again_leakage": again_leakage, "without": without, "store": store}


PLANTED = ("astro_crop.png", "astro_q50.jpg", "astro_small.png", "astro_grey.png", "chelsea_q60.jpg", "p0_edited")


def test_planted_copies_and_their_record_are_excluded_with_their_reasons(built):
    ids = built["ids"]
    by_id = {r["image_id"]: r for r in built["excluded"]}
    want = {ids[n] for n in PLANTED} | {ids["p0_source"]}
    assert set(by_id) == want
    reason = {n: by_id[ids[n]]["reason"] for n in PLANTED + ("p0_source",)}
    assert reason["astro_crop.png"] == "embedding"  # a crop moves the dHash, not the colour statistics
    assert reason["astro_grey.png"] == "dhash"  # a grey copy moves the colour statistics, not the dHash
    assert reason["astro_q50.jpg"] == reason["chelsea_q60.jpg"] == "embedding+dhash"
    assert reason["p0_source"] == "record" and by_id[ids["p0_source"]]["via"] == ids["p0_edited"]
    assert by_id[ids["chelsea_q60.jpg"]]["benchmark"].endswith("b.tar#000.png")
    assert by_id[ids["astro_crop.png"]]["benchmark"].endswith("astronaut.png")
    crop, grey = by_id[ids["astro_crop.png"]], by_id[ids["astro_grey.png"]]
    assert crop["cosine"] >= 0.95 and crop["hamming"] > 6 and grey["cosine"] < 0.95 and grey["hamming"] <= 6
    assert by_id[ids["p0_source"]]["benchmark"] is None


def test_excluded_images_are_in_no_sample_and_no_split_and_the_others_still_are(built):
    ids = built["ids"]
    samples, shown, splits, _ = built["first"]
    excluded = {r["image_id"] for r in built["excluded"]}
    assert samples and not shown & excluded
    assert {s["split"] for s in samples} <= {"train", "eval"}
    assert not {r["image_id"] for r in splits} & excluded and EXCLUDED not in {r["split"] for r in splits}
    unrelated = {ids[f"{n}.png"] for n in UNRELATED} | {ids["p1_source"]}
    assert unrelated <= shown  # every photo that is not a copy still takes part
    assert unrelated | {ids["p1_edited"]} <= {r["image_id"] for r in splits}


def test_leakage_json_counts_the_excluded_images(built):
    _, _, _, leakage = built["first"]
    d = leakage["decontamination"]
    assert d["benchmark_images"] == 2 and d["benchmark_images_computed"] == 2
    assert d["excluded_images"] == len(PLANTED) + 1 == built["inputs"]["excluded_images"]
    assert d["by"] == {"embedding": 5, "dhash": 5, "record": 1}  # crop: embedding only, grey: dHash only
    assert [(s["kind"], s["images"], s["skipped"]) for s in d["sources"]] == [("folder", 1, 1), ("webdataset", 1, 1)]
    assert leakage["eval_samples_sharing_an_image_with_train"] == 0


def test_a_rerun_reads_the_benchmark_vectors_from_the_cache(built):
    d = built["again_leakage"]["decontamination"]
    assert d["benchmark_images_computed"] == 0 and d["excluded_images"] == len(PLANTED) + 1
    assert built["again"]["excluded_images"] == len(PLANTED) + 1


def test_without_exclude_the_copies_are_sampled(built):
    """The guard: the same store without `sample.exclude` samples the planted copies."""
    ids = built["ids"]
    _, shown, splits, leakage = built["without"]
    assert "decontamination" not in leakage
    assert {ids[n] for n in PLANTED if not n.startswith("p0")} <= shown
    assert ids["p0_source"] in shown
    assert not built["store"].excluded_path.exists()


def test_an_unreadable_benchmark_image_is_an_error_naming_it(built, tmp_path):
    root = built["root"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.png").write_bytes(encode(photo("retina")))
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ParamsError, match=r"sample\.exclude\.1: benchmark image .*broken\.png"):
        run_sample(corpus_params(root, [built["exclude"][0], str(bad)]), built["store"])
    with pytest.raises(ParamsError, match="no benchmark images"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("x")
        run_sample(corpus_params(root, [str(tmp_path / "empty")]), built["store"])
    with pytest.raises(ParamsError, match=r"sample\.exclude\.0: .*no such file"):
        run_sample(corpus_params(root, [str(tmp_path / "missing")]), built["store"])


# --- the pure core ------------------------------------------------------------------------------

def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_core_finds_embedding_and_hash_neighbours_on_synthetic_vectors():
    rng = np.random.default_rng(0)
    bench = _unit(rng.standard_normal((50, 32)))
    store = _unit(rng.standard_normal((1000, 32)))
    store[10] = _unit(bench[3:4] + 0.05 * rng.standard_normal((1, 32)))[0]  # cosine ~0.96+
    store[11] = _unit(bench[7:8] + 0.6 * rng.standard_normal((1, 32)))[0]  # far below 0.95
    codes = rng.integers(0, 256, (1000, 8), dtype=np.uint8)
    bench_codes = rng.integers(0, 256, (50, 8), dtype=np.uint8)
    codes[20] = bench_codes[5] ^ np.array([1, 2, 0, 0, 0, 0, 4, 0], np.uint8)  # 3 bits away
    codes[21] = bench_codes[6] ^ np.array([255, 0, 0, 0, 0, 0, 0, 0], np.uint8)  # 8 bits away
    has_emb, has_hash = np.ones(1000, bool), np.ones(1000, bool)
    has_emb[12], has_hash[20] = False, False  # without a hash, row 20 is judged by its embedding only
    store[12] = bench[0]  # ...and row 12, without an embedding, by its hash only
    m = find_contaminated(store, has_emb, codes, has_hash, bench, bench_codes, threshold=0.95, max_hamming=6)
    assert np.flatnonzero(m.by_embedding).tolist() == [10]
    assert m.embedding_nearest[10] == 3 and m.cosine[10] >= 0.95 and np.isnan(m.cosine[12])
    assert not m.by_dhash.any()
    has_hash[20] = True
    m = find_contaminated(store, has_emb, codes, has_hash, bench, bench_codes, threshold=0.95, max_hamming=6)
    assert np.flatnonzero(m.contaminated).tolist() == [10, 20]
    assert m.dhash_nearest[20] == 5 and m.hamming[20] == 3 and m.hamming[21] == -1
    # the inverted file (benchmarks above exact_max_n) finds the same planted neighbour
    big = _unit(np.concatenate([bench, rng.standard_normal((4000, 32))]))
    ivf = find_contaminated(store, has_emb, codes, has_hash, big, bench_codes, threshold=0.95, max_hamming=6,
                            exact_max_n=100, nprobe=8)
    assert np.flatnonzero(ivf.by_embedding).tolist() == [10]


def test_records_carry_the_exclusion_and_rows_with_excluded_images_are_dropped():
    mask = np.array([False, True, False, False, False])
    grown, via = close_over_records(mask, np.array([0, 3]), np.array([1, 4]))  # records {0, 1} and {3, 4}
    assert grown.tolist() == [True, True, False, False, False] and via.tolist() == [1, -1, -1, -1, -1]
    rows = [{"source_image_a": "x", "edited_image_a": "y", "source_image_b": "z", "pair_id": "bad"},
            {"source_image": "u", "edited_image": "v", "pair_id": "y"}]
    assert rows_without(rows, {"y"}) == [rows[1]]  # a pair id that equals an image id is not an image


def test_exclude_params_are_checked():
    assert source_of("data/bench/*.tar").kind == "webdataset" and source_of("data/bench").kind == "folder"
    assert parse_params({"sample": {"exclude": ["bench", "shards/*.tar"]}}).sample.exclude == ["bench", "shards/*.tar"]
    for bad in (["bench/*"], [""], ["https://example.com/bench.tar"]):
        with pytest.raises(ParamsError, match="sample.exclude"):
            parse_params({"sample": {"exclude": bad}})
