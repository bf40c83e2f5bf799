"""Does PICO's attention-pivot score pick better seeds? Selected vs random vs oracle, per task.

For every eval sample, N candidate seeds are probed (steps 0..max(probe_steps), attention
read in the chosen blocks) and then every candidate is also run to the end and scored with
the target's primary metric (training/metrics.py). Reported per task: the metric of the
pivot-selected seed, of a seeded random seed and of the best of the N (oracle), the
Spearman correlation of S_pivot with the metric across the N candidates (mean over the
task's samples), and the probe's extra cost in transformer calls.

    python benchmarks/seed_selection.py --shards data/out/shards/eval --adapter train_out/adapter \
        --seeds 10 --steps 28 --device cuda            # the real figure (GPU + trained adapter)
    python benchmarks/seed_selection.py --shards data/out/shards/eval --tiny --seeds 4 --steps 4 --limit 6
                                                       # CPU: a tiny random FLUX, proves the path only

With --tiny the model is a random-weight FLUX built from a config (training.models.tiny_*)
and the prompt embeddings are random: the numbers mean nothing beyond "the path runs".
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np

import training  # noqa: F401
from training import flow_matching as fm
from training import metrics as M
from training.evaluate import AdapterPredictions, _context, _layout_batches, read_eval_set
from training.seed_selection import candidate_seeds, pivot_scores, probe, random_pick


def tiny_predictor(mode: str):
    from training.backends import make_backend
    from training.config import TrainParams
    from training.infer import Predictor
    from training.models import BaseModels, tiny_flux_transformer, tiny_flux_vae
    from training.prompts import RandomPromptEncoder

    params = TrainParams(model={"backend": "flux", "mode": mode, "prompt_encoder": "random"}, mixed_precision="no")
    base = BaseModels(tiny_flux_transformer(fill=mode == "fill"), tiny_flux_vae(), RandomPromptEncoder(32, 32), "tiny")
    return Predictor(make_backend(params, base))


def spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    if len(set(np.round(a, 12))) < 2 or len(set(np.round(b, 12))) < 2:
        return None  # undefined for a constant list
    return float(spearmanr(a, b).statistic)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", nargs="+", required=True, help="eval shards (files, globs, folders)")
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--adapter", help="adapter folder written by `vicl train`")
    who.add_argument("--tiny", action="store_true", help="random tiny FLUX (CPU path check, no real figure)")
    ap.add_argument("--mode", choices=("clean_context", "fill"), default="clean_context", help="--tiny only")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--probe-steps", default="0,1,2")
    ap.add_argument("--blocks", default=None, help="comma list; default: PICO's 9,11,12 (scaled for other depths)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None, help="also write the per-task table here")
    args = ap.parse_args(argv)
    probe_steps = tuple(int(x) for x in args.probe_steps.split(","))
    blocks = tuple(int(x) for x in args.blocks.split(",")) if args.blocks else None

    if args.tiny:
        import torch

        torch.manual_seed(0)
        predictor = tiny_predictor(args.mode)
    else:
        from training.infer import Predictor

        predictor = Predictor.from_adapter(args.adapter, models_dir=args.models_dir, device=args.device)
    samples = read_eval_set(args.shards, args.limit)
    wrap = AdapterPredictions(predictor)  # only for its target-blanking GridSample conversion
    cands = candidate_seeds(args.seed, args.seeds)
    sigmas = fm.euler_sigmas(args.steps, 3.0)
    per_task: dict[str, list[dict]] = defaultdict(list)
    probe_calls = full_calls = 0
    t0 = time.perf_counter()
    for batch in _layout_batches(samples, args.batch_size):
        prep = predictor.prepare([wrap.grid_sample(s) for s in batch])
        d_br, d_vp, _ = probe(predictor, prep, cands, sigmas, probe_steps=probe_steps, blocks=blocks)
        probe_calls += (max(probe_steps) + 1) * len(cands)
        runs = [predictor.run(prep, seed, sigmas) for seed in cands]  # every candidate, for the oracle
        full_calls += args.steps * len(cands)
        for i, s in enumerate(batch):
            metric = M.PRIMARY[M.metric_kind(s.target_node)]
            vals = np.array([M.score(s.target_node, runs[j][i], s.target, context=_context(s)).get(metric, np.nan)
                             for j in range(len(cands))], dtype=np.float64)
            sign = 1.0 if M.HIGHER_IS_BETTER[metric] else -1.0
            sc = pivot_scores(d_br[i], d_vp[i])
            per_task[str(s.record.get("task", ""))].append({
                "metric": metric, "pivot": vals[int(np.argmax(sc))],
                "random": vals[cands.index(random_pick(cands, args.seed, s.key))],
                "oracle": vals[int(np.nanargmax(sign * vals))], "first": vals[0],
                "spearman": spearman(sc, sign * vals)})
    wall = time.perf_counter() - t0
    table = {}
    print(f"{len(samples)} samples, {len(per_task)} tasks, {len(cands)} candidates, {args.steps} steps, probe steps "
          f"{probe_steps}, blocks {blocks or 'default'}; probe cost {probe_calls} transformer calls "
          f"(+{probe_calls / max(1, args.steps * sum(1 for _ in _layout_batches(samples, args.batch_size))):.0%} "
          f"over one plain run per batch); wall {wall:.1f}s")
    print(f"{'task':<28} {'metric':<16} {'n':>3} {'pivot':>9} {'random':>9} {'first':>9} {'oracle':>9} {'spearman':>9}")
    for task in sorted(per_task):
        rows = per_task[task]
        mean = {k: float(np.nanmean([r[k] for r in rows])) for k in ("pivot", "random", "first", "oracle")}
        rho = [r["spearman"] for r in rows if r["spearman"] is not None]
        table[task] = {"metric": rows[0]["metric"], "n": len(rows), **mean,
                       "spearman": float(np.mean(rho)) if rho else None}
        t = table[task]
        print(f"{task:<28} {t['metric']:<16} {t['n']:>3} {t['pivot']:>9.4f} {t['random']:>9.4f} {t['first']:>9.4f} "
              f"{t['oracle']:>9.4f} {('%.3f' % t['spearman']) if t['spearman'] is not None else '-':>9}")
    if args.tiny:
        print("tiny random model: these numbers only show the path runs; the real figure needs a GPU and a trained adapter")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tasks": table, "probe_calls": probe_calls, "full_calls": full_calls}, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
