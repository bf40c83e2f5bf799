"""Instruction-conflict check: opposite / different edits rejected, paraphrases kept, wired into mining."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pyarrow as pa
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mining  # noqa: F401,E402
from mining.config import ClusterCount, FilterParams, KMeansParams, MineParams, NeighbourParams  # noqa: E402
from mining.filters import DROP_REASONS, dual_filter  # noqa: E402
from mining.instruction_conflicts import (conflicts_between, explain, heldout_agreement,  # noqa: E402
                                          instruction_conflicts, load_heldout, mentions, signatures)
from mining.kmeans import l2_normalise  # noqa: E402
from mining.quadruplets import CANDIDATE_SCHEMA, mine  # noqa: E402


def _conflict(a: str, b: str, **kw) -> bool:
    return bool(instruction_conflicts([a, b], np.array([0]), np.array([1]), **kw)[0])


# ---- the rules ------------------------------------------------------------------------------

def test_flip_horizontal_vs_vertical_conflicts():
    assert _conflict("Flip the image horizontally.", "Flip the image vertically.")
    assert explain("Flip the image horizontally.", "Flip the image vertically.") == ["axis: horizontal vs vertical"]
    assert _conflict("flip it upside down", "mirror it from left to right")


@pytest.mark.parametrize("a, b", [
    ("Mirror the picture horizontally.", "Make a horizontal flip of the photo."),
    ("flip the photo upside down", "Flip the image vertically."),
    ("make the sky darker", "darken the sky"),
    ("make it less bright", "darken the photo"),
    ("reduce the brightness", "make it darker"),
    ("the photo is too dark", "brighten it"),
    ("turn up the brightness", "make it brighter"),
    ("make the photo brighter", "brightened photo, please"),
    ("remove the dog", "get rid of the dog"),
    ("take the hat off the man", "remove his hat"),
    ("rotate it anticlockwise", "turn the picture counter-clockwise"),
    ("convert it to black and white", "make it grayscale"),
    ("make the car red", "paint the reddish car a deeper red"),
    ("keep the centre sharp and blur the rest", "blur everything except the center"),
    ("brighten the dark sky", "make the sky brighter"),
    ("lower the contrast", "reduce the contrast"),
    ("move the sun higher", "raise the sun"),
    ("Rotate 15 degrees", "Rotate 20 degrees"),
    ("make it look more vintage", "make it look less modern"),  # modifiers on unknown words say nothing
    ("change the background to a beach", "put her in front of a beach"),
])
def test_paraphrases_never_conflict(a, b):
    assert not _conflict(a, b), explain(a, b)


@pytest.mark.parametrize("a, b, slot", [
    ("make the sky brighter", "make the sky darker", "brightness"),
    ("reduce the brightness", "brighten the photo", "brightness"),
    ("make it less warm", "make it warmer", "temperature"),
    ("rotate it clockwise", "rotate it anti-clockwise", "rotation"),
    ("add a hat", "take off his hat", "presence"),
    ("insert a car", "erase the car", "presence"),
    ("zoom in on the dog", "zoom out", "zoom"),
    ("enlarge the moon", "shrink the moon", "size"),
    ("make it day", "make it night", "time"),
    ("open the window", "shut the window", "state"),
    ("increase the saturation", "make it less saturated", "saturation"),
    ("more contrast", "less contrast", "contrast"),
    ("move the cat to the left", "move the cat to the right", "side"),
    ("put the cup on the top shelf", "put the cup on the bottom shelf", "height"),
    ("lower the contrast", "raise the contrast", "contrast"),
    ("blur the background", "blur the foreground", "depth"),
    ("make the car red", "make the car blue", "colour"),
    ("make it black and white", "make it sepia", "colour"),
])
def test_opposites_and_other_values_conflict_on_their_slot(a, b, slot):
    reasons = explain(a, b)
    assert _conflict(a, b) and any(r.startswith(f"{slot}:") for r in reasons), reasons


def test_word_forms_fold_onto_one_value():
    assert mentions("Flip the image horizontally.") == mentions("a horizontal flip") == {("axis", "horizontal")}
    bright = {("brightness", "bright")}
    assert mentions("brighter") == mentions("brighten it") == mentions("brightened") == mentions("lighten") == bright
    assert mentions("make it less dark") == bright  # a "less" flips the pole it qualifies
    assert mentions("adjust the brightness") == frozenset()  # the attribute alone says nothing
    assert mentions("make it bluish") == mentions("blue") == {("colour", "blue")}
    assert mentions("the lower left corner") == {("height", "down"), ("side", "left")}  # not "lower the ..."


def test_numbers_are_magnitudes_unless_asked():
    assert not _conflict("Rotate 15 degrees", "Rotate 20 degrees")  # default: the same task
    assert _conflict("Rotate 15 degrees", "Rotate 20 degrees", number_ratio=1.2)
    assert not _conflict("Rotate 15 degrees", "Rotate 20 degrees", number_ratio=1.5)
    assert not _conflict("Rotate 15 degrees", "Add sepia at 80%", number_ratio=1.0)  # different units
    assert _conflict("Zoom in 2x", "Zoom in 1.25x", number_ratio=1.5)


def test_vectorised_check_matches_pairwise_explanations_and_identity():
    texts = sorted({t for a, b, _ in load_heldout() for t in (a, b)})
    masks, nums = signatures(texts)
    ta, tb = (x.ravel() for x in np.meshgrid(np.arange(len(texts)), np.arange(len(texts))))
    fast = conflicts_between(masks, nums, ta, tb, chunk=1000)  # several chunks
    slow = np.array([bool(explain(texts[i], texts[j])) for i, j in zip(ta.tolist(), tb.tolist())])
    assert np.array_equal(fast, slow)
    assert not fast[ta == tb].any()  # a text never conflicts with itself
    assert np.array_equal(fast.reshape(len(texts), -1), fast.reshape(len(texts), -1).T)  # symmetric
    # pyarrow input (nulls count as "") gives the same answer as a list
    rows = np.array([0, 1, 2, 3]), np.array([1, 2, 3, 0])
    arr = pa.array(["flip it horizontally", "flip it vertically", None, "flip it vertically"])
    as_list = ["flip it horizontally", "flip it vertically", "", "flip it vertically"]
    assert instruction_conflicts(arr, *rows).tolist() == instruction_conflicts(as_list, *rows).tolist() == \
        [True, False, False, True]


def test_synthetic_families_same_transformation_never_conflicts():
    """Ground truth from annotators.synthetic_edits: every phrasing of one transformation agrees; where
    the transformation's meaning is a direction, colour or position, two meanings conflict."""
    from annotators.synthetic_edits import EDIT_FAMILIES, transform_key

    rng = np.random.default_rng(0)
    texts, keys, families = [], [], []
    for name, fam in EDIT_FAMILIES.items():
        for _ in range(12):
            params = fam.sample(rng, (128, 128))
            for phrasing in fam.phrasings:
                texts.append(phrasing.format(**fam.words(params)))
                keys.append(transform_key(name, params))
                families.append(name)
    a, b = (np.array(x) for x in zip(*itertools.combinations(range(len(texts)), 2)))
    conflict = instruction_conflicts(texts, a, b)
    keys, families = np.array(keys), np.array(families)
    same = keys[a] == keys[b]
    assert same.sum() > 1000 and not conflict[same].any(), \
        [(texts[i], texts[j]) for i, j in zip(a[same & conflict][:5], b[same & conflict][:5])]
    directional = ("flip", "temperature", "rotate", "zoom_crop", "blur_background")
    other = (families[a] == families[b]) & ~same & np.isin(families[a], directional)
    assert other.sum() > 100 and conflict[other].all()


# ---- wired into the dual filter and mining ----------------------------------------------------

def test_conflict_reported_after_text_disagreement_and_switchable():
    src = l2_normalise(np.eye(4, dtype=np.float32) + 0.01)
    text = l2_normalise(np.array([[1, 0], [1, 0.01], [0, 1], [1, 0.02]], np.float32))
    instr = ["Flip the image horizontally.", "Flip the image vertically.", "Flip the image vertically.",
             "Mirror the picture horizontally."]
    a, b = np.array([0, 0, 0]), np.array([1, 2, 3])
    s = dual_filter(src, text, a, b, FilterParams(tau_text=0.9), instructions=instr)
    assert s.pass_instruction.tolist() == [False, False, True]
    assert s.reasons() == ["instructions_conflict", "text_disagrees", None]  # first failed check wins
    assert DROP_REASONS[-1] == "instructions_conflict" and DROP_REASONS[-2] == "text_disagrees"
    off = dual_filter(src, text, a, b, FilterParams(tau_text=0.9, drop_instruction_conflicts=False),
                      instructions=instr)
    assert off.pass_instruction.tolist() == [False, False, True]  # still computed and reported
    assert off.reasons() == [None, "text_disagrees", None]
    assert dual_filter(src, text, a, b, FilterParams(tau_text=0.9)).pass_instruction is None  # no texts: no check


def _flip_corpus(per_axis: int = 10, d: int = 32, seed: int = 0):
    """Pairs of one visual edit (same task vector, near-identical instruction embeddings) whose texts
    say "horizontally" for half of them and "vertically" for the other half, plus a second family."""
    rng = np.random.default_rng(seed)
    n = 4 * per_axis
    family = np.repeat([0, 1], 2 * per_axis)
    directions = l2_normalise(rng.standard_normal((2, d)).astype(np.float32)) * 1.5
    src = l2_normalise(rng.standard_normal((n, d)).astype(np.float32))
    edited = l2_normalise(src + directions[family] + 0.05 * rng.standard_normal((n, d)).astype(np.float32))
    text_base = l2_normalise(rng.standard_normal((2, 16)).astype(np.float32))
    text = l2_normalise(text_base[family] + 0.01 * rng.standard_normal((n, 16)).astype(np.float32))
    instruction = [("Flip the image horizontally." if i % 2 == 0 else "Flip the image vertically.") if f == 0
                   else "Blur the whole picture." for i, f in enumerate(family)]
    pairs = {"pair_id": [f"p{i:03d}" for i in range(n)], "source_id": [f"s{i:03d}" for i in range(n)],
             "edited_id": [f"e{i:03d}" for i in range(n)], "instruction": instruction}
    return pairs, src, edited, text


def _mine_params(**filters) -> MineParams:
    return MineParams(kmeans=KMeansParams(clusters=ClusterCount(c=0.4, k_min=2), nredo=3),
                      neighbours=NeighbourParams(top_k=4),
                      filters=FilterParams(tau_visual=0.9, tau_text=0.5, **filters))


def test_mine_drops_horizontal_vs_vertical_candidates_with_their_reason():
    pairs, src, edited, text = _flip_corpus()
    res = mine(pairs, src, edited, text, _mine_params())
    assert res.candidates.schema == CANDIDATE_SCHEMA
    cand = res.candidates.to_pylist()
    mixed = [c for c in cand if {c["instruction_a"], c["instruction_b"]} ==
             {"Flip the image horizontally.", "Flip the image vertically."}]
    assert mixed and all(c["cos_text"] > 0.95 and c["pass_text"] for c in mixed)  # the cosine cannot tell
    assert all(c["reason"] == "instructions_conflict" and not c["pass_instruction"] for c in mixed)
    assert all(c["pass_instruction"] for c in cand if c["instruction_a"] == c["instruction_b"])
    assert res.stats["n_dropped_instructions_conflict"] == len(mixed)
    kept = res.quadruplets.to_pylist()
    assert kept and all(q["instruction_a"] == q["instruction_b"] for q in kept)
    # the switch off: the same candidates are kept, their flag still written
    off = mine(pairs, src, edited, text, _mine_params(drop_instruction_conflicts=False))
    assert off.stats["n_dropped_instructions_conflict"] == 0
    assert off.quadruplets.num_rows == res.quadruplets.num_rows + len(mixed)
    assert off.candidates.drop_columns(["reason"]).equals(res.candidates.drop_columns(["reason"]))


# ---- held-out set with the real text embedder ---------------------------------------------------

def test_heldout_set_shape():
    pairs = load_heldout()
    labels = [lab for _, _, lab in pairs]
    assert len(pairs) >= 60 and labels.count("same") >= 30 and labels.count("different") >= 30
    assert len({(a, b) for a, b, _ in pairs}) == len(pairs)


@pytest.fixture(scope="module")
def minilm():
    from mining.embed import MiniLMTextEmbedder

    emb = MiniLMTextEmbedder()
    emb.load()
    return emb


def test_heldout_precision_with_minilm_needs_the_conflict_check(minilm):
    res = heldout_agreement(minilm.embed_texts, FilterParams(tau_text=0.6))
    assert res["filter"]["precision"] >= 0.95, res
    assert res["cosine_only"]["precision"] < 0.95, res  # the cosine alone does not get there
    assert res["same_rejected_by_conflict"] == 0  # the check never costs a paraphrase
    assert res["filter"]["recall"] == res["cosine_only"]["recall"]
    assert res["different_kept_by_cosine"] - res["different_caught_by_conflict"] == res["filter"]["kept_different"]
    off = heldout_agreement(minilm.embed_texts, MineParams(filters={"drop_instruction_conflicts": False}))
    assert off["filter"] == off["cosine_only"] == res["cosine_only"]
