"""Precision and recall of each edit-pair judge (annotators/judges.py) against known edit families.

Pairs are those of benchmarks/mining_quality.py: deterministic crops of scikit-image photos, each
edited by one family of `annotators.synthetic_edits` with the instruction that family wrote (a
"good" pair). Each pair is also shown with the instruction of the next pair, which belongs to
another family (a "bad" pair: same images, wrong instruction), so half the pairs are good. A judge
keeps a pair when its score is >= a threshold; for each score, over a sweep of thresholds (the
scores' quantiles):
  precision = good pairs kept / pairs kept      (chance: 0.5)
  recall    = good pairs kept / good pairs
with the average precision (area under the precision-recall curve), the best F1 and its
threshold, precision at recall >= 0.9, and each family's recall at the best-F1 threshold.
Scores that do not read the instruction (clip_iqa, clip_direction.image_image) see the same
images in good and bad pairs and stay at chance: what they measure is image quality and change.

    python benchmarks/judges.py [--per-family 12] [--judges clip_direction,clip_iqa,qwen_vl]
        [--models-dir models] [--device cpu|cuda] [--batch-size 8] [--qwen-repo REPO]
    python benchmarks/judges.py --tiny --per-family 3   # tiny random models: proves the path only

The judges need real weights (open_clip ViT-L-14, Qwen2.5-VL-7B-Instruct) from --models-dir or the
HF cache; nothing is downloaded: a judge whose weights are missing is named with the command that
fetches them and skipped, and the weight-free parts (the pairs, the mismatches, the sweep) still
run. With --tiny every judge runs the same classes with tiny random weights: numbers near chance.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # a sibling script, not a package

import numpy as np  # noqa: E402

import mining  # noqa: F401,E402
from annotators import judges  # noqa: E402
from annotators.judges import EditPair  # noqa: E402
from annotators.synthetic_edits import EDIT_FAMILIES  # noqa: E402
from mining_quality import build_pairs  # noqa: E402


def sweep(values: list[float | None], good: np.ndarray, steps: int = 41) -> dict:
    """Precision and recall of `value >= t` over thresholds t at the values' quantiles (None never kept)."""
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    known = v[np.isfinite(v)]
    if not len(known):
        return {"points": [], "average_precision": float("nan")}
    points = []
    for t in np.unique(np.quantile(known, np.linspace(0, 1, steps))):
        kept = np.isfinite(v) & (v >= t)
        tp = int((kept & good).sum())
        points.append({"threshold": float(t), "kept": int(kept.sum()), "precision": tp / max(int(kept.sum()), 1),
                       "recall": tp / max(int(good.sum()), 1)})
    # average precision: precision at every good pair's rank (ties broken against the judge)
    order = np.lexsort((good.astype(int), -np.nan_to_num(v, nan=-np.inf)))
    hits = good[order]
    ap = float((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits].mean()) if hits.any() else float("nan")
    return {"points": points, "average_precision": ap}


def summarise(result: dict) -> dict:
    points = result["points"]
    if not points:
        return {"average_precision": float("nan")}
    f1 = [2 * p["precision"] * p["recall"] / max(p["precision"] + p["recall"], 1e-12) for p in points]
    best = points[int(np.argmax(f1))]
    high = [p["precision"] for p in points if p["recall"] >= 0.9]
    return {"average_precision": result["average_precision"], "best_f1": max(f1), "at": best,
            "precision_at_recall_0.9": max(high) if high else float("nan")}


def build_judge(name: str, args):
    params = {}
    if name == "qwen_vl":
        params = {"repo_id": args.qwen_repo, "max_new_tokens": 6 if args.tiny else 32}
        if args.tiny:
            params.update(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    judge = judges.get(name)(params, device=args.device, models_dir=args.models_dir)
    if args.tiny:
        judge.load_random("tiny")
        return judge, []
    missing = judge.missing_weights()
    if not missing:
        judge.load()
    return judge, missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-family", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judges", default="clip_direction,clip_iqa,qwen_vl")
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--qwen-repo", default=judges.get("qwen_vl").Params().repo_id)
    ap.add_argument("--tiny", action="store_true", help="tiny random models (the path only; numbers near chance)")
    args = ap.parse_args()

    families = sorted(EDIT_FAMILIES)
    t0 = time.perf_counter()
    pairs, src, edited, labels = build_pairs(args.per_family, families, args.seed)
    n = len(labels)
    texts = pairs["instruction"]
    swapped = [texts[(k + 1) % n] for k in range(n)]  # the next pair's: families alternate, so another family's
    assert all(labels[k] != labels[(k + 1) % n] for k in range(n))
    items = [EditPair(s, e, t) for s, e, t in zip(src, edited, texts)] + \
            [EditPair(s, e, t) for s, e, t in zip(src, edited, swapped)]
    good = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    family = np.r_[labels, labels]
    print(f"pairs: {n} good ({len(families)} families x {args.per_family}) + {n} with another family's instruction; "
          f"built in {time.perf_counter() - t0:.1f}s; chance precision 0.500")
    missing_all = []
    for name in [j.strip() for j in args.judges.split(",") if j.strip()]:
        judge, missing = build_judge(name, args)
        if missing:
            missing_all += [(name, e) for e in missing]
            for e in missing:
                spec = e.spec
                print(f"{name}: skipped, missing weights {spec.repo_id}{'/' + spec.filename if spec.filename else ''}"
                      f" (fetch with `vicl models fetch {spec.repo_id}` into {args.models_dir}, or set HF_HOME)")
            continue
        t0 = time.perf_counter()
        scores = []
        for k in range(0, len(items), args.batch_size):
            scores += judge.score(items[k:k + args.batch_size])
        seconds = time.perf_counter() - t0
        print(f"\n{name}{' (tiny random weights)' if args.tiny else ''}: {len(items) / seconds:.1f} pairs/s")
        for score in judge.scores:
            values = [s[score] for s in scores]
            result = summarise(sweep(values, good))
            if "at" not in result:
                print(f"  {name}.{score}: no value for any pair")
                continue
            at = result["at"]
            kept = np.asarray([v is not None and v >= at["threshold"] for v in values])
            per_family = {f: float(kept[(family == f) & good].mean()) for f in families}
            worst = sorted(per_family.items(), key=lambda kv: kv[1])[:3]
            unknown = sum(v is None for v in values)
            print(f"  {name}.{score}: average precision {result['average_precision']:.3f}; best F1 "
                  f"{result['best_f1']:.3f} at >= {at['threshold']:.4g} (precision {at['precision']:.3f}, recall "
                  f"{at['recall']:.3f}); precision at recall >= 0.9: {result['precision_at_recall_0.9']:.3f}"
                  + (f"; no value for {unknown} pairs" if unknown else ""))
            print("    recall per family at that threshold, lowest: "
                  + ", ".join(f"{f} {r:.2f}" for f, r in worst))
    if missing_all:
        print(f"\n{len({n for n, _ in missing_all})} judge(s) skipped for missing weights (nothing is downloaded); "
              "`--tiny` runs them with tiny random weights")
    # the weight-free check of the sweep itself: a perfect score, and one that ignores the instruction
    assert summarise(sweep(list(good.astype(float)), good))["average_precision"] == 1.0
    flat = summarise(sweep([0.5] * len(good), good))
    assert abs(flat["at"]["precision"] - 0.5) < 1e-9
    print("\nsweep self-check: a perfect score has average precision 1.000; a constant one precision 0.500")


if __name__ == "__main__":
    main()
