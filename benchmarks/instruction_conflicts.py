"""Cost of the instruction-conflict check against the text cosine it runs beside, per million candidates.

Pairs carry instructions drawn from a pool of distinct texts (real-corpus-like compositions of verbs,
objects and attributes, plus the held-out set); candidates are random (a, b) pair rows. Timed in one
process on the same candidates:
- cosine: mining.filters.rowwise_cosine on 384-d float32 text embeddings (MiniLM's width), what
  dual_filter computes for the text agreement;
- check, cold: mining.instruction_conflicts.instruction_conflicts from the pair texts (encode the
  distinct texts, a signature per distinct text, compare per candidate), caches emptied first;
- check, compare only: conflicts_between on signatures already computed (the per-candidate part).

    python benchmarks/instruction_conflicts.py [--candidates 1000000] [--pairs 200000] [--texts 50000]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pyarrow as pa

import mining  # noqa: F401
from mining.filters import rowwise_cosine
from mining.instruction_conflicts import (conflicts_between, encode_texts, instruction_conflicts, lemma,
                                          load_heldout, signatures, text_signature)
from mining.kmeans import l2_normalise

VERBS = ("make the {o} {a}", "turn the {o} {a}", "change the {o} to be {a}", "can you make the {o} look {a}",
         "{a} {o}, please", "add a {a} {o}", "remove the {a} {o}", "put a {o} on the {a} side",
         "let the {o} look {a} in the picture", "give the {o} a {a} look")
OBJECTS = ("sky", "dog", "cat", "car", "house", "tree", "man", "woman", "river", "mountain", "boat", "sofa",
           "wall", "road", "flowers", "horse", "bird", "cake", "lamp", "door", "window", "hat", "table",
           "building", "beach", "grass", "cup", "train", "bus", "girl", "boy", "child", "clouds", "sun",
           "moon", "bridge", "street", "field", "forest", "lake")
ATTRIBUTES = ("brighter", "darker", "red", "blue", "green", "bigger", "smaller", "older", "younger", "warmer",
              "cooler", "left", "right", "snowy", "rainy", "golden", "pink", "black and white", "sepia",
              "blurry", "sharper", "happy", "sad", "wider", "thinner", "longer", "shorter", "vintage", "wooden",
              "made of glass", "on fire", "underwater", "at night", "in winter", "like a cartoon",
              "like a Van Gogh painting", "upside down", "more colourful", "less saturated", "shiny", "rusty",
              "covered in moss", "futuristic", "medieval", "in the desert", "in space")


def text_pool(n: int) -> list[str]:
    """n distinct instruction texts (compositions first, then numbered variants), deterministic."""
    base = [v.format(o=o, a=a) for v, o, a in itertools.product(VERBS, OBJECTS, ATTRIBUTES)]
    base += sorted({t for a, b, _ in load_heldout() for t in (a, b)})
    out = list(dict.fromkeys(base))
    k = 2
    while len(out) < n:
        out.extend(f"{t} ({k})" for t in base[: n - len(out)])
        k += 1
    return out[:n]


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--pairs", type=int, default=200_000)
    ap.add_argument("--texts", type=int, default=50_000, help="distinct instruction texts among the pairs")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    pool = text_pool(args.texts)
    instructions = pa.array([pool[i] for i in rng.integers(0, len(pool), args.pairs)], type=pa.string())
    text_emb = l2_normalise(rng.standard_normal((args.pairs, args.dim)).astype(np.float32))
    a = rng.integers(0, args.pairs, args.candidates)
    b = rng.integers(0, args.pairs, args.candidates)
    per_m = 1e6 / args.candidates

    t_cos = _best(lambda: rowwise_cosine(text_emb, a, b))

    def cold():
        text_signature.cache_clear()
        lemma.cache_clear()
        return instruction_conflicts(instructions, a, b)

    t_cold = _best(cold, repeat=1)
    conflict = cold()
    texts, code = encode_texts(instructions)
    t_sig = _best(lambda: (text_signature.cache_clear(), lemma.cache_clear(), signatures(texts)), repeat=1)
    masks, nums = signatures(texts)
    ca, cb = code[a], code[b]
    t_cmp = _best(lambda: conflicts_between(masks, nums, ca, cb))
    shared_slot = float(np.mean([m.any() for m in masks]))

    print(f"{args.candidates:,} candidates over {args.pairs:,} pairs, {len(texts):,} distinct texts; "
          f"{conflict.mean():.1%} of candidates conflict, {shared_slot:.0%} of texts name a slot")
    print(f"text cosine ({args.dim}-d float32)          {t_cos * per_m:7.3f} s per million candidates")
    print(f"conflict check, cold (all included)    {t_cold * per_m:7.3f} s per million  "
          f"({t_cold / t_cos:.2f}x the cosine)")
    print(f"  of which signatures of distinct texts {t_sig:7.3f} s ({t_sig / len(texts) * 1e6:.0f} us per text, "
          "once per text)")
    print(f"conflict check, compare only           {t_cmp * per_m:7.3f} s per million  "
          f"({t_cmp / t_cos:.2f}x the cosine)")


if __name__ == "__main__":
    main()
