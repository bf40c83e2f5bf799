"""Scale benchmark: N synthetic 768-d pairs through SemDeDup, task vectors, K-Means, in-cluster
neighbours and the dual filter (steps 2-6 of mining; embedding is not part of it).

Synthetic data (seeded): sources scattered around `--scenes` scene centres (1% planted
near-duplicates), each pair edited along one of `--families` task directions plus noise,
instruction embeddings (384-d) near their family's text centre. Embeddings are stored in
float16 (--dtype) and the task vectors are written over the edited embeddings, which keeps
1M x 768 within a few GB.

Also times K-Means against scikit-learn at matched inertia, in the same run, on a
subsample of the task vectors (--sk-n points, --sk-k clusters; faiss trains on all of them):
faiss runs with growing iteration counts until its inertia is within 1% of sklearn's.

    python benchmarks/mining_scale.py --n 1000000      # full run (~minutes)
    python benchmarks/mining_scale.py --n 50000 --sk-n 20000
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

import mining  # noqa: F401
from mining.config import KMeansParams, MineParams
from mining.kmeans import assign, kmeans, l2_normalise
from mining.quadruplets import mine

_CHUNK = 50_000


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def synthesise(n: int, d: int, text_d: int, scenes: int, families: int, dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    scene_c = l2_normalise(rng.standard_normal((scenes, d), dtype=np.float32))
    fam_dir = l2_normalise(rng.standard_normal((families, d), dtype=np.float32))
    text_c = l2_normalise(rng.standard_normal((families, text_d), dtype=np.float32))
    scene = rng.integers(0, scenes, n)
    family = rng.integers(0, families, n)
    src = np.empty((n, d), dtype=dtype)
    edited = np.empty((n, d), dtype=dtype)
    text = np.empty((n, text_d), dtype=dtype)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        m = e - s
        x = l2_normalise(scene_c[scene[s:e]] + 0.04 * rng.standard_normal((m, d), dtype=np.float32))
        src[s:e] = x
        y = x + 0.5 * fam_dir[family[s:e]] + 0.02 * rng.standard_normal((m, d), dtype=np.float32)
        edited[s:e] = l2_normalise(y)
        text[s:e] = l2_normalise(text_c[family[s:e]] + 0.02 * rng.standard_normal((m, text_d), dtype=np.float32))
    dups = rng.choice(n, size=n // 100, replace=False)  # planted near-duplicate sources
    originals = rng.integers(0, n, len(dups))
    src[dups] = l2_normalise(src[originals].astype(np.float32)
                             + 0.001 * rng.standard_normal((len(dups), d), dtype=np.float32))
    return src, edited, text, family


def kmeans_vs_sklearn(x: np.ndarray, k: int, seed: int) -> None:
    from sklearn.cluster import KMeans

    t0, c0 = time.perf_counter(), time.process_time()
    sk = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(x)
    t_sk, c_sk = time.perf_counter() - t0, time.process_time() - c0
    _, d_sk = assign(x, sk.cluster_centers_.astype(np.float32), spherical=False)
    inertia_sk = float(d_sk.sum(dtype=np.float64))
    print(f"sklearn KMeans (lloyd, n_init=1, max_iter=300, tol=1e-4): wall {t_sk:.1f}s, CPU {c_sk:.1f}s, "
          f"{sk.n_iter_} iterations, "
          f"inertia {inertia_sk:.2f}")
    for niter in (5, 10, 20, 40, 80):
        params = KMeansParams(spherical=False, niter=niter, seed=seed, max_points_per_centroid=x.shape[0])
        t0, c0 = time.perf_counter(), time.process_time()
        res = kmeans(x, k, params)
        t_f, c_f = time.perf_counter() - t0, time.process_time() - c0
        ratio = res.inertia / inertia_sk
        print(f"  faiss niter={niter:3d}: wall {t_f:.2f}s, CPU {c_f:.2f}s, inertia {res.inertia:.2f} "
              f"({ratio:.4f} x sklearn)")
        if ratio <= 1.01:
            print(f"K-Means at matched inertia (within 1%): faiss vs sklearn: wall {t_f:.2f}s vs {t_sk:.1f}s -> "
                  f"{t_sk / t_f:.1f}x faster; CPU {c_f:.2f}s vs {c_sk:.1f}s -> {c_sk / c_f:.1f}x")
            return
    print("faiss did not reach sklearn's inertia within 1% at 80 iterations")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--text-d", type=int, default=384)
    ap.add_argument("--scenes", type=int, default=20_000)
    ap.add_argument("--families", type=int, default=2_000)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--sk-n", type=int, default=100_000, help="points of the sklearn comparison (0: skip)")
    ap.add_argument("--sk-k", type=int, default=100)
    args = ap.parse_args()

    t0 = time.perf_counter()
    src, edited, text, family = synthesise(args.n, args.d, args.text_d, args.scenes, args.families,
                                           np.dtype(args.dtype))
    print(f"synthesised {args.n} pairs ({args.d}-d {args.dtype}, text {args.text_d}-d) in "
          f"{time.perf_counter() - t0:.1f}s; peak RSS so far {peak_rss_gb():.2f} GB")
    pairs = {"pair_id": [f"p{i:09d}" for i in range(args.n)], "source_id": [f"s{i:09d}" for i in range(args.n)],
             "edited_id": [f"e{i:09d}" for i in range(args.n)], "instruction": [""] * args.n}

    params = MineParams(filters={"tau_visual": 0.95, "tau_text": 0.5})
    rss_before = peak_rss_gb()
    t0, c0 = time.perf_counter(), time.process_time()
    res = mine(pairs, src, edited, text, params, overwrite_edited=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = ", ".join(f"{k} {v:.1f}s" for k, v in res.seconds.items())
    print(f"mining (steps 2-6) of {args.n} pairs: wall {wall:.1f}s ({wall / 60:.2f} min), CPU time {cpu:.1f}s "
          f"(all threads; on an idle 2-core machine wall is about CPU/2 to CPU); per step (wall): {steps}")
    print(f"machine load average during the run: {os.getloadavg()}")
    print(f"peak RSS {peak_rss_gb():.2f} GB (inputs alone {rss_before:.2f} GB)")
    print("stats:", res.stats)
    q = res.quadruplets
    pos = {p: i for i, p in enumerate(pairs["pair_id"])} if args.n <= 2_000_000 else None
    a = np.fromiter((pos[p] for p in q["pair_id_a"].to_pylist()), dtype=np.int64, count=q.num_rows)
    b = np.fromiter((pos[p] for p in q["pair_id_b"].to_pylist()), dtype=np.int64, count=q.num_rows)
    if q.num_rows:
        print(f"precision on the planted families: {np.mean(family[a] == family[b]):.4f} "
              f"over {q.num_rows} quadruplets")

    if args.sk_n:
        m = min(args.sk_n, args.n)
        rows = np.sort(np.random.default_rng(1).choice(len(res.dedup), size=m, replace=False))
        rows = rows[rows < res.stats["n_pairs_after_dedup"]]
        sub = l2_normalise(edited[rows])  # edited now holds the task vectors of the kept pairs
        print(f"\nK-Means comparison on a subsample of {len(sub)} task vectors, k={args.sk_k}:")
        kmeans_vs_sklearn(sub, args.sk_k, seed=0)


if __name__ == "__main__":
    main()
