"""Near-duplicate grouping at scale: faiss IVF against exact range search, in the same run.

Synthetic unit embeddings (seeded): points scattered around n / 50 cluster centres (cosine
~0.6 inside a cluster, so clusters alone make no pairs), plus planted near-duplicate groups
(6 % of the points, 2-4 members) whose members sit at a known cosine, uniform in
[threshold - 0.02, 0.995], to their group's source. Each size runs in its own process, so
its peak RSS is its own.

Per size: exact pairs (IndexFlatIP, up to --exact-up-to), approximate pairs (IndexIVFFlat),
their recall (approximate pairs found / exact pairs), planted pairs recovered, and the time of
`near_duplicate_groups` on the IVF path (what the sample stage runs). Then the log-log growth
exponent of each time between consecutive sizes. Each time is printed as wall seconds (`_s`)
and as this process's CPU seconds over all threads (`_cpu_s`): on a shared machine the wall
time depends on the other load, the CPU time does not (wall on idle cores ~ cpu / threads).

    python benchmarks/near_duplicates.py                  # N = 10^4, 10^5 (exact and IVF)
    python benchmarks/near_duplicates.py --n 1000000      # IVF only (exact above --exact-up-to)
    python benchmarks/near_duplicates.py --n 1000000 --measure leakage   # the leakage report at N images

`--measure leakage` times `leakage_report` instead: N images with random dHash64 codes, 10 %
of them eval, N / 2 two-image samples drawn within their split (so nothing leaks and every
eval image is searched against every train code).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import resource
import time

import numpy as np

from pipelines.splits import ivf_nlist, leakage_report, near_duplicate_groups, near_duplicate_pairs, unit_rows

_CHUNK = 100_000


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def synthesise(n: int, d: int, threshold: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings (n, d) float32, planted pairs (source, member) with cosine >= threshold,
    the cosine of every planted pair)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((max(1, n // 50), d), dtype=np.float32))
    x = np.empty((n, d), np.float32)
    for s in range(0, n, _CHUNK):
        m = min(n, s + _CHUNK) - s
        noise = rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        x[s:s + m] = unit_rows(centres[rng.integers(0, len(centres), m)] + 0.8 * noise)
    n_groups = int(0.06 * n / 3)
    members = rng.choice(n, size=4 * n_groups, replace=False).reshape(n_groups, 4)
    size = rng.integers(2, 5, n_groups)
    sources, planted, cosines = [], [], []
    for k in range(1, 4):  # member k of each group big enough, at cosine c to the group's source
        rows = np.flatnonzero(size > k)
        src, dst = members[rows, 0], members[rows, k]
        c = rng.uniform(threshold - 0.02, 0.995, len(rows)).astype(np.float32)
        u = rng.standard_normal((len(rows), d), dtype=np.float32)
        u -= np.sum(u * x[src], axis=1, keepdims=True) * x[src]  # orthogonal to the source
        x[dst] = unit_rows(c[:, None] * x[src] + np.sqrt(1 - c ** 2)[:, None] * unit_rows(u))
        sources.append(np.stack([src, dst], 1))
        planted.append(c)
    pairs = np.concatenate(sources)
    cosines = np.concatenate(planted)
    keep = cosines >= threshold + 1e-4  # planted pairs that must be found (margin for float32 rounding)
    return x, np.sort(pairs[keep], axis=1), cosines


class _Clock:
    """Wall and process CPU seconds of a block, written into `out` as key_s and key_cpu_s."""

    def __init__(self, out: dict, key: str):
        self.out, self.key = out, key

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.out[f"{self.key}_s"] = round(time.perf_counter() - self.wall, 2)
        self.out[f"{self.key}_cpu_s"] = round(time.process_time() - self.cpu, 2)


def _keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    return a.astype(np.int64) * n + b


def measure(n: int, args) -> dict:
    import faiss

    import scipy.sparse.csgraph  # noqa: F401  (imported before the clocks start)

    faiss.omp_set_num_threads(args.threads)
    t = time.perf_counter()
    x, planted, _ = synthesise(n, args.d, args.threshold, args.seed)
    out = {"n": n, "d": args.d, "nlist": ivf_nlist(n), "nprobe": args.nprobe, "threads": args.threads,
           "synthesise_s": round(time.perf_counter() - t, 2), "planted_pairs": len(planted)}
    ids = np.char.add("img", np.char.zfill(np.arange(n).astype(str), 8))  # sorted by construction
    with _Clock(out, "ivf_groups"):
        group = near_duplicate_groups(ids, x, args.threshold, exact=False, nprobe=args.nprobe, seed=args.seed)
    out["groups"] = int(len(np.unique(group)))
    out["planted_pairs_grouped"] = round(float(np.mean(group[planted[:, 0]] == group[planted[:, 1]])), 5)
    out["rss_after_groups_gb"] = round(peak_rss_gb(), 3)
    if n <= args.exact_up_to:
        with _Clock(out, "ivf_pairs"):
            approx = _keys(*near_duplicate_pairs(x, args.threshold, exact=False, nprobe=args.nprobe, seed=args.seed), n)
        with _Clock(out, "exact_pairs"):
            ea, eb = near_duplicate_pairs(x, args.threshold, exact=True)
        exact = _keys(ea, eb, n)
        out["exact_pairs"], out["ivf_pairs"] = len(exact), len(approx)
        out["pair_recall"] = round(float(np.isin(exact, approx).mean()) if len(exact) else 1.0, 5)
        out["ivf_pairs_not_exact"] = int((~np.isin(approx, exact)).sum())  # must be 0: verified cosines
        exact_group = near_duplicate_groups(ids, x, args.threshold, exact=True)
        out["images_in_a_different_group"] = int((exact_group != group).sum())
        planted_keys = _keys(planted[:, 0], planted[:, 1], n)
        out["planted_pairs_found_exact"] = round(float(np.isin(planted_keys, exact).mean()), 5)
    out["peak_rss_gb"] = round(peak_rss_gb(), 3)
    return out


def measure_leakage(n: int, args) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    ids = np.char.add("img", np.char.zfill(np.arange(n).astype(str), 8))
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    eval_image = rng.random(n) < 0.1
    n_samples = n // 2
    split = np.where(rng.random(n_samples) < 0.1, "eval", "train")
    pools = {s: np.flatnonzero(eval_image == (s == "eval")) for s in ("train", "eval")}
    rows = np.empty((n_samples, 2), np.int64)
    for s, pool in pools.items():
        mine = split == s
        rows[mine] = pool[rng.integers(0, len(pool), (int(mine.sum()), 2))]
    images = ids[rows].tolist()
    keys = [f"{s}_{k:09d}" for k, s in enumerate(split)]
    out = {"n": n, "samples": n_samples, "threads": args.threads, "rss_before_gb": round(peak_rss_gb(), 3)}
    with _Clock(out, "leakage_report"):
        report = leakage_report(split, images, keys, ids, codes, grouping="synthetic")
    out["eval_samples_checked"] = report["eval_samples_checked"]
    out["leaking"] = (report["eval_samples_sharing_an_image_with_train"]
                      + report["eval_samples_with_near_duplicate_in_train"])
    out["peak_rss_gb"] = round(peak_rss_gb(), 3)
    return out


def _child(n, args, queue):
    queue.put(measure_leakage(n, args) if args.measure == "leakage" else measure(n, args))


def growth(rows: list[dict], key: str) -> list[float]:
    """log-log slope of `key` between consecutive sizes that both measured it."""
    have = [r for r in rows if key in r and r[key] > 0]
    return [round(math.log(b[key] / a[key]) / math.log(b["n"] / a["n"]), 3) for a, b in zip(have, have[1:])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--exact-up-to", type=int, default=100_000, help="largest N also searched exactly")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure", choices=["grouping", "leakage"], default="grouping")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")  # a fresh process per size: its own peak RSS
    rows = []
    for n in sorted(args.n):
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(n, args, queue))
        t = time.perf_counter()
        proc.start()
        row = queue.get()
        proc.join()
        row["process_s"] = round(time.perf_counter() - t, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    for key in ("ivf_groups_s", "ivf_groups_cpu_s", "ivf_pairs_s", "ivf_pairs_cpu_s", "exact_pairs_s",
                "exact_pairs_cpu_s", "leakage_report_s", "leakage_report_cpu_s"):
        slopes = growth(rows, key)
        if slopes:
            print(f"growth exponent of {key}: {slopes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
