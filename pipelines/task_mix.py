"""The task mix: how many samples each task gets in a split, and the edit budget.

PICO (anchors.md §1.2) finds that, for a fixed sample budget, many tasks with few shots each
generalise to unseen tasks better than few tasks with many shots. Edits are cheap to make in
bulk (every photo gives one per synthetic edit family, and mining grows with the corpus), so
left alone they crowd the graph tasks out (83 % of a real build). The budget keeps the bounded
families (default: mined and synthetic edits) to at most `max_share` of a split's samples, and
cuts the largest of their tasks first (water-filling), so as many edit tasks as possible keep a
sample: diversity before volume, inside the edits too.
"""

from __future__ import annotations

import json
from fractions import Fraction


def water_fill(desired: dict[str, int], total: int) -> dict[str, int]:
    """Counts <= desired that sum to min(total, sum(desired)), the largest cut first: every name
    gets min(desired, level) for the highest level that fits; the leftover goes one each to the
    names still wanting more, in name order (deterministic)."""
    total = max(0, int(total))
    if sum(desired.values()) <= total:
        return dict(desired)
    names = sorted(desired)
    lo, hi = 0, max(desired.values())
    while lo < hi:  # the highest level whose capped sum fits
        mid = (lo + hi + 1) // 2
        if sum(min(desired[n], mid) for n in names) <= total:
            lo = mid
        else:
            hi = mid - 1
    out = {n: min(desired[n], lo) for n in names}
    left = total - sum(out.values())
    for n in names:
        if left == 0:
            break
        if out[n] < desired[n]:
            out[n] += 1
            left -= 1
    return {n: out[n] for n in desired}


def bounded_total(bounded: int, others: int, max_share: float) -> int:
    """The most samples the bounded tasks may have next to `others` samples of the rest, so that
    they are at most `max_share` of the whole. With nothing else in the split there is nothing to
    crowd out, and the bounded tasks keep what they asked for."""
    if max_share >= 1.0 or others == 0:
        return bounded
    share = Fraction(max_share).limit_denominator(10**6)  # exact: 0.25 / 0.75 * 12 is 3.999... in floats
    return min(bounded, int(share / (1 - share) * others))


def apply_budget(desired: dict[str, int], bounded_names: set[str], max_share: float) -> dict[str, int]:
    """`desired` counts of one split with the bounded names cut to the budget."""
    bounded = {n: c for n, c in desired.items() if n in bounded_names}
    others = sum(c for n, c in desired.items() if n not in bounded_names)
    cut = water_fill(bounded, bounded_total(sum(bounded.values()), others, max_share))
    return {n: cut.get(n, c) for n, c in desired.items()}


def mix_summary(samples: list[dict]) -> dict:
    """Samples per split by family and by origin (graph task, synthetic edit, mined from a corpus,
    label-paired), and each family's share of its split: what `vicl report` shows."""
    by_family: dict[str, dict[str, int]] = {}
    by_origin: dict[str, dict[str, int]] = {}
    for s in samples:
        fam = by_family.setdefault(s["split"], {})
        fam[s["family"]] = fam.get(s["family"], 0) + 1
        org = by_origin.setdefault(s["split"], {})
        origin = sample_origin(s)
        org[origin] = org.get(origin, 0) + 1
    share = {split: {f: round(n / sum(c.values()), 4) for f, n in sorted(c.items())} for split, c in by_family.items()}
    return {"per_family": {k: dict(sorted(v.items())) for k, v in sorted(by_family.items())},
            "family_share": dict(sorted(share.items())),
            "per_origin": {k: dict(sorted(v.items())) for k, v in sorted(by_origin.items())}}


def sample_origin(sample: dict) -> str:
    """Where a sample's transformation comes from: `graph` (an annotator's node), or for the mined
    task the pairs' origin and how they were paired (`corpus/task_vector`, `synthetic_edit/label`...)."""
    if not sample.get("scores") or sample.get("context_mode") != "mined":
        return "graph"
    scores = json.loads(sample["scores"])
    return f"{'+'.join(sorted(set(scores.get('origins') or ['corpus'])))}/{scores.get('pairing', 'task_vector')}"
