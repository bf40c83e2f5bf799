"""Labelled benchmark of quadruplet mining on synthetic edit pairs.

Pairs: deterministic crops of skimage.data photos (sources), each edited with one family
of `annotators.synthetic_edits` (the family is the pair's ground-truth task) and the
instruction text that family wrote. Mining runs on image embeddings (weight-free
colour_gradient_stats; CLIP too when its weights are on disk) and MiniLM texts.

Figures:
- precision: share of mined quadruplets whose two pairs share the family;
- recall: share of pairs (after SemDeDup) that appear in at least one correct quadruplet;
- both against a baseline in the same run: random pairing (precision = chance that two
  random pairs share a family) and the mining with the dual filter off (task vectors only).

    python benchmarks/mining_quality.py [--per-family 30] [--image-embedder colour_gradient_stats|open_clip]
        [--models-dir DIR] [--tau-text 0.5] [--tau-visual 0.95] [--top-k 1] [--sweep] [--through-cli]

`--through-cli` also writes the pairs as an edit corpus (Parquet, PNG bytes), runs `vicl run` on it
(ingest with `layout: edit_pairs` -> annotate -> mine -> sample -> export), reads the quadruplets back
from the exported shards and scores them; the in-process mining is re-run on the same pairs under
the ids ingest gives them (content ids), so both must give the same precision and recall.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import mining  # noqa: F401,E402
from annotators.synthetic_edits import EDIT_FAMILIES, apply_edit  # noqa: E402
from mining.config import ClusterCount, EmbedParams, FilterParams, KMeansParams, MineParams, NeighbourParams  # noqa: E402
from mining.embed import make_image_embedder, make_text_embedder  # noqa: E402
from mining.quadruplets import mine  # noqa: E402

CROP = 160


def _photos() -> list[np.ndarray]:
    from skimage import data

    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
             "colorwheel", "camera", "coins", "moon", "page", "text", "clock", "brick", "grass", "gravel", "cell"]
    out = []
    for name in names:
        im = np.asarray(getattr(data, name)())
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(im[..., :3]).astype(np.uint8))
    left, right = data.stereo_motorcycle()[:2]
    out += [left, right]
    return out


def source_crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """n distinct deterministic crops: photo in turn, side 30-85% of the short side, seeded position."""
    import cv2

    photos = _photos()
    crops = []
    i = 0
    while len(crops) < n:
        photo = photos[i % len(photos)]
        rng = np.random.default_rng([seed, i % len(photos), i // len(photos)])  # per (photo, level)
        h, w = photo.shape[:2]
        side = max(32, int(min(h, w) * rng.uniform(0.3, 0.85)))
        y = int(rng.integers(0, h - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crops.append(cv2.resize(photo[y:y + side, x:x + side], (CROP, CROP), interpolation=cv2.INTER_AREA))
        i += 1
    return crops


def build_pairs(per_family: int, families: list[str], seed: int = 0):
    n = per_family * len(families)
    crops = source_crops(n, seed)
    order = np.random.default_rng(seed).permutation(n)  # which crop each pair gets
    src, edited, texts, labels = [], [], [], []
    for k in range(n):
        family = families[k % len(families)]
        image = crops[order[k]]
        out, text, _ = apply_edit(family, image, seed=seed * 1_000_003 + k)
        src.append(image)
        edited.append(out)
        texts.append(text)
        labels.append(family)
    pairs = {"pair_id": [f"p{k:05d}" for k in range(n)], "source_id": [f"s{order[k]:05d}" for k in range(n)],
             "edited_id": [f"e{k:05d}" for k in range(n)], "instruction": texts}
    return pairs, src, edited, np.asarray(labels)


def score(result, pairs, labels) -> tuple[float, float, int]:
    fam = dict(zip(pairs["pair_id"], labels))
    q = result.quadruplets
    a, b = q["pair_id_a"].to_pylist(), q["pair_id_b"].to_pylist()
    correct = [fam[x] == fam[y] for x, y in zip(a, b)]
    precision = float(np.mean(correct)) if correct else float("nan")
    covered = {x for x, y, c in zip(a, b, correct) if c} | {y for x, y, c in zip(a, b, correct) if c}
    recall = len(covered) / max(result.stats["n_pairs_after_dedup"], 1)
    return precision, recall, len(a)


def make_params(args, **over) -> MineParams:
    p = MineParams(
        kmeans=KMeansParams(clusters=ClusterCount(c=args.c, k_min=2), nredo=args.nredo),
        neighbours=NeighbourParams(top_k=args.top_k, min_cos_delta=args.min_cos_delta),
        filters=FilterParams(tau_visual=args.tau_visual, tau_text=args.tau_text))
    for section, values in over.items():
        p = p.model_copy(update={section: getattr(p, section).model_copy(update=values)})
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=30)
    ap.add_argument("--image-embedder", default="colour_gradient_stats", choices=["colour_gradient_stats", "open_clip"])
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--tau-text", type=float, default=FilterParams().tau_text)
    ap.add_argument("--tau-visual", type=float, default=FilterParams().tau_visual)
    ap.add_argument("--top-k", type=int, default=NeighbourParams().top_k)
    ap.add_argument("--min-cos-delta", type=float, default=NeighbourParams().min_cos_delta)
    ap.add_argument("--c", type=float, default=ClusterCount().c)
    ap.add_argument("--nredo", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="crops and edit parameters (defaults were tuned on 0)")
    ap.add_argument("--sweep", action="store_true", help="also print a grid over tau_text x top_k")
    ap.add_argument("--through-cli", action="store_true", help="also mine the pairs through `vicl run` (see above)")
    args = ap.parse_args()

    families = sorted(EDIT_FAMILIES)
    t0 = time.perf_counter()
    pairs, src, edited, labels = build_pairs(args.per_family, families, args.seed)
    t_build = time.perf_counter() - t0
    embed_params = EmbedParams(image_embedder=args.image_embedder, models_dir=args.models_dir)
    img = make_image_embedder(embed_params)
    img.load()
    txt = make_text_embedder(embed_params, img)
    txt.load()
    t0 = time.perf_counter()
    e_src = np.concatenate([img.embed_images(src[s:s + 32]) for s in range(0, len(src), 32)])
    e_edit = np.concatenate([img.embed_images(edited[s:s + 32]) for s in range(0, len(edited), 32)])
    t_embed = time.perf_counter() - t0
    e_text = txt.embed_texts(pairs["instruction"])

    n = len(labels)
    counts = np.unique(labels, return_counts=True)[1]
    chance = float(((counts * (counts - 1)).sum()) / (n * (n - 1)))
    print(f"pairs: {n} ({len(families)} families x {args.per_family}), sources {CROP}px crops; "
          f"build {t_build:.1f}s, embed {img.key} {2 * n / t_embed:.0f} images/s")
    print("precision = share of mined quadruplets whose two pairs share the edit family")
    print("recall    = share of pairs (after SemDeDup) that appear in >= 1 correct quadruplet")
    print(f"seed {args.seed} (the defaults were tuned on seed 0 with 30 per family)")
    print(f"baseline: random pairing precision (chance) = {chance:.3f}")

    base_params = make_params(args)
    off = make_params(args, filters={"tau_visual": 1.0, "tau_text": -1.0}, neighbours={"min_cos_delta": -1.0})
    for label, params in (("task vectors only (no filters)", off), ("full (dual filter on)", base_params)):
        t0 = time.perf_counter()
        res = mine(pairs, e_src, e_edit.copy(), e_text, params)
        p, r, m = score(res, pairs, labels)
        print(f"{label:38s} precision {p:.3f} ({p / chance:.1f}x chance)  recall {r:.3f}  "
              f"quadruplets {m}  k={res.stats['k_tasks']}  mine {time.perf_counter() - t0:.2f}s")
    print(f"SemDeDup dropped {res.stats['n_sources_dropped']} of {res.stats['n_sources']} sources "
          f"(eps={base_params.dedup.eps}); candidates {res.stats['n_candidates']}, pass visual "
          f"{res.stats['n_pass_visual']}, pass text {res.stats['n_pass_text']}")
    print(f"params: tau_text={args.tau_text} tau_visual={args.tau_visual} top_k={args.top_k} c={args.c} "
          f"min_cos_delta={args.min_cos_delta} normalisation={base_params.task_vectors.normalisation}")

    if args.sweep:
        print("\nsweep (precision / recall):")
        taus = [0.4, 0.5, 0.6, 0.7]
        print("top_k \\ tau_text " + " ".join(f"{t:>12.2f}" for t in taus))
        for k in (1, 3, 5):
            cells = []
            for t in taus:
                res = mine(pairs, e_src, e_edit.copy(), e_text,
                           make_params(args, neighbours={"top_k": k}, filters={"tau_text": t}))
                p, r, _ = score(res, pairs, labels)
                cells.append(f"{p:.3f}/{r:.3f}")
            print(f"{k:>17d} " + " ".join(f"{c:>12s}" for c in cells))

    if args.through_cli:
        through_cli(args, src, edited, pairs["instruction"], labels, embed_params, base_params)


def through_cli(args, src, edited, texts, labels, embed_params: EmbedParams, params: MineParams) -> None:
    """The same pairs and params through `vicl run`, quadruplets read back from the shards."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from core.images import content_id, encode_png
    from core.sample_reader import iter_samples

    src_png, edt_png = [encode_png(x) for x in src], [encode_png(x) for x in edited]
    src_ids, edt_ids = [content_id(b) for b in src_png], [content_id(b) for b in edt_png]
    pair_ids = [content_id(f"{a}\n{b}\n{t}".encode()) for a, b, t in zip(src_ids, edt_ids, texts)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pq.write_table(pa.table({"source": src_png, "edited": edt_png, "instruction": list(texts)}),
                       root / "corpus.parquet")
        mine_section = {**params.model_dump(mode="json"), "embed": {**embed_params.model_dump(mode="json"),
                                                                     "backend": "ray"}}
        config = {"paths": {"store": str(root / "store"), "out": str(root / "out")},
                  # PNG and no resize: the store holds exactly the pixels the in-process run embeds
                  "ingest": {"sources": [{"kind": "parquet", "path": str(root / "corpus.parquet"),
                                          "layout": "edit_pairs"}], "image_format": "png", "max_side": 0},
                  "annotate": {"annotators": {}}, "mine": mine_section,
                  # every quadruplet a sample: each cluster is a sub-task capped at samples_per_task
                  "sample": {"eval_fraction": 0.0, "samples_per_task": 1_000_000}, "export": {"cell_size": 64}}
        (root / "params.yaml").write_text(yaml.safe_dump(config))
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--params", str(root / "params.yaml")],
                             capture_output=True, text=True, cwd=root)
        seconds = time.perf_counter() - t0
        if run.returncode != 0:
            raise SystemExit(f"vicl run failed ({run.returncode}):\n{run.stderr[-3000:]}")
        quads = []
        shards = sorted((root / "out").glob("shards/*/*.tar"))
        for sample in iter_samples(shards) if shards else ():
            if sample.record["task"] == "mined_edit":
                quads.append(sample.record["scores"]["pair_ids"])
        stats = json.loads((root / "store" / "mined" / "mined.json").read_text())
    family = dict(zip(pair_ids, labels))
    correct = [family[a] == family[b] for a, b in quads]
    covered = {i for (a, b), c in zip(quads, correct) if c for i in (a, b)}
    cli = (float(np.mean(correct)) if correct else float("nan"), len(covered) / max(stats["n_pairs_after_dedup"], 1),
           len(quads))
    # in-process, under the ids ingest gave the pairs (the stage mines in pair id order)
    img = make_image_embedder(embed_params)
    img.load()
    txt = make_text_embedder(embed_params, img)
    txt.load()
    order = np.argsort(pair_ids, kind="stable")
    pairs = {"pair_id": [pair_ids[k] for k in order], "source_id": [src_ids[k] for k in order],
             "edited_id": [edt_ids[k] for k in order], "instruction": [texts[k] for k in order]}
    e_src = np.concatenate([img.embed_images([src[k] for k in order[s:s + 32]]) for s in range(0, len(order), 32)])
    e_edit = np.concatenate([img.embed_images([edited[k] for k in order[s:s + 32]])
                             for s in range(0, len(order), 32)])
    res = mine(pairs, e_src, e_edit, txt.embed_texts(pairs["instruction"]), params)
    inproc = score(res, pairs, np.asarray([labels[k] for k in order]))
    print(f"\nthrough the CLI (`vicl run`, {seconds:.0f}s; quadruplets read back from the shards):")
    print(f"  in-process (content ids) precision {inproc[0]:.3f}  recall {inproc[1]:.3f}  quadruplets {inproc[2]}")
    print(f"  vicl run                 precision {cli[0]:.3f}  recall {cli[1]:.3f}  quadruplets {cli[2]}")
    print(f"  equal: {inproc == cli}")


if __name__ == "__main__":
    main()
