"""Rule-based check that two edit instructions ask for opposite or different edits.

Sentence embedders score "Flip the image horizontally." against "Flip the image vertically."
at cos 0.95 (MiniLM): the words that decide the edit are a small part of the sentence. This
module reads those words.

Each instruction text gets a signature: for every *slot* (an axis of contrast: flip axis,
left/right, brighter/darker, add/remove, colour, time of day, ...) the set of values it
mentions, as a bit mask. Two instructions conflict when some slot is mentioned by both and
their value sets share nothing. Sharing one value is enough to agree, so an instruction
naming both poles ("brighten the dark sky", "keep the centre sharp and blur the rest") never
conflicts on that slot: the rule errs towards keeping paraphrases, never rejecting them.
What it does not see (target order: "turn day into night" vs "turn night into day"; objects:
"remove the dog" vs "remove the cat", which is a coherent analogy anyway) is left to the
cosine.

Word forms are folded onto a small lexicon (horizontally -> horizontal, brightened ->
brighten -> bright, bluish -> blue); modifiers fold onto the slot they qualify ("less bright"
and "reduce the brightness" are dark, "increase the size" is big, "lower the contrast" is
contrast: less). A modifier on anything else says nothing ("more vintage" and "less modern"
are one edit), and an attribute noun alone ("adjust the brightness") says nothing either.

Two texts that each name some slot (or a number's unit) but none in common ask for different
kinds of edit ("rotate 30 degrees clockwise" vs "flip horizontally", MiniLM cos 0.63; "turn the
hue 300 degrees" vs "warmer by 30%"): they conflict too (FilterParams.conflict_on_disjoint_slots).

Numbers with a unit (degrees, percent, "x"/times): two values of one unit conflict when the
larger exceeds FilterParams.conflict_number_ratio x the smaller (default 1.1): a hue turned by
180 and by 240 degrees gives another image (MiniLM cos 0.94), and a quadruplet shows the query
the exemplar's exact edit. "Rotate 15" vs "rotate 16 degrees" still agree; None turns it off.

Cost: signatures are computed once per distinct text (cached), and a candidate costs two
gathers of uint64 words; only candidates whose texts share a mentioned slot go on to a
per-slot comparison (see benchmarks/instruction_conflicts.py).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa

from mining.config import FilterParams, MineParams

# slot -> value -> the words (base forms) that name it. Slot and value order fix the bit layout.
SLOTS: dict[str, dict[str, str]] = {
    "axis": {"horizontal": "horizontal sideways", "vertical": "vertical"},
    "side": {"left": "left leftward leftwards leftmost", "right": "right rightward rightwards rightmost",
             "centre": "centre middle central centred"},
    "height": {"up": "up top upper above upward upwards topmost uppermost overhead",
               "down": "down bottom below beneath underneath downward downwards bottommost",
               "middle": "centre middle central centred"},
    # only the two nouns: "in front of" / "behind" place objects ("put her in front of a beach" is
    # "change the background to a beach")
    "depth": {"front": "foreground", "back": "background"},
    "rotation": {"clockwise": "clockwise cw", "counterclockwise": "counterclockwise anticlockwise ccw"},
    "presence": {"add": "add insert include put place wear worn give",
                 "remove": "remove removal delete deletion erase eliminate rid without"},
    "brightness": {"bright": "bright brighten lighten lighter illuminate illuminated",
                   "dark": "dark darken dim"},
    "temperature": {"warm": "warm hot", "cool": "cool cold chilly"},
    "saturation": {"vivid": "vivid vibrant saturated saturate colourful punchy",
                   "muted": "muted mute desaturate desaturated dull fade faded washed pale"},
    "sharpness": {"sharp": "sharp sharpen crisp infocus", "blur": "blur blurry bokeh defocus outoffocus"},
    "zoom": {"in": "zoomin magnify", "out": "zoomout"},
    "size": {"big": "big large huge giant enlarge grow grown", "small": "small tiny shrink shrunk shrank miniature"},
    "length": {"long": "long lengthen tall elongate", "short": "short shorten"},
    "width": {"wide": "wide widen thick fat broad chubby", "narrow": "narrow thin slim skinny slender"},
    "age": {"old": "old elderly senior", "young": "young youthful"},
    "state": {"open": "open", "closed": "close closed shut"},
    "power": {"on": "poweron", "off": "poweroff"},
    "time": {"day": "day daytime daylight midday noon morning",
             "dusk": "sunset sunrise dusk dawn twilight evening goldenhour",
             "night": "night nighttime midnight nocturnal"},
    "season": {"spring": "spring springtime", "summer": "summer summertime",
               "autumn": "autumn autumnal", "winter": "winter wintry wintery wintertime"},
    "weather": {"sun": "sun sunny sunshine", "rain": "rain rainy rainfall drizzle",
                "snow": "snow snowy snowfall blizzard", "fog": "fog foggy mist misty haze hazy",
                "cloud": "cloud cloudy overcast", "storm": "storm stormy thunderstorm lightning"},
    "emotion": {"happy": "happy smile laugh joyful cheerful grin", "sad": "sad frown cry unhappy upset tearful",
                "angry": "angry anger furious", "surprised": "surprised shocked astonished"},
    "colour": {"red": "red crimson scarlet maroon burgundy", "orange": "orange", "yellow": "yellow",
               "green": "green emerald", "blue": "blue navy azure cobalt", "cyan": "cyan teal turquoise aqua",
               "purple": "purple violet lilac lavender", "pink": "pink magenta fuchsia", "brown": "brown",
               "black": "black", "white": "white", "grey": "grey", "gold": "gold golden", "silver": "silver",
               "beige": "beige", "monochrome": "monochrome monochromatic greyscale colourless", "sepia": "sepia"},
    "shape": {"circle": "circle circular", "square": "square", "triangle": "triangle triangular", "star": "star",
              "heart": "heart", "rectangle": "rectangle rectangular", "oval": "oval ellipse"},
    "style": {"watercolour": "watercolour", "oil": "oil", "sketch": "sketch pencil charcoal",
              "cartoon": "cartoon cartoonize cartoonise cartoonify comic anime manga",
              "pixel": "pixel pixelate pixelated", "mosaic": "mosaic", "popart": "popart",
              "impressionist": "impressionist impressionism impressionistic", "cubist": "cubist cubism",
              "vangogh": "vangogh", "monet": "monet", "picasso": "picasso", "dali": "dali", "warhol": "warhol",
              "rembrandt": "rembrandt", "vermeer": "vermeer", "davinci": "davinci", "ukiyoe": "ukiyoe hokusai",
              "cyberpunk": "cyberpunk", "steampunk": "steampunk", "lego": "lego", "claymation": "claymation",
              "origami": "origami", "stainedglass": "stainedglass"},
    # reached only through a modifier on an attribute noun (ATTRIBUTES): "increase the contrast"
    **{slot: {"more": "", "less": ""} for slot in ("contrast", "noise", "detail", "opacity", "shadows",
                                                     "highlights", "intensity")},
}
# Slots whose two values are opposites: a "less"/"too" in front of one of them means the other.
FLIPPABLE = ("brightness", "temperature", "saturation", "sharpness", "size", "length", "width", "age", "zoom",
             "contrast", "noise", "detail", "opacity", "shadows", "highlights", "intensity")
# Attribute nouns: say nothing alone, fold a modifier onto a slot ("reduce the brightness" = dark). A
# modifier on anything else says nothing: "more vintage" and "less modern" are one edit.
ATTRIBUTES: dict[str, tuple[str, str]] = {
    "brightness": ("brightness", "bright"), "darkness": ("brightness", "dark"), "exposure": ("brightness", "bright"),
    "light": ("brightness", "bright"), "warmth": ("temperature", "warm"), "temperature": ("temperature", "warm"),
    "saturation": ("saturation", "vivid"), "vibrance": ("saturation", "vivid"), "colour": ("saturation", "vivid"),
    "colours": ("saturation", "vivid"), "sharpness": ("sharpness", "sharp"), "clarity": ("sharpness", "sharp"),
    "size": ("size", "big"), "length": ("length", "long"), "height": ("length", "long"), "width": ("width", "wide"),
    "zoom": ("zoom", "in"), "contrast": ("contrast", "more"), "noise": ("noise", "more"), "grain": ("noise", "more"),
    "detail": ("detail", "more"), "details": ("detail", "more"), "resolution": ("detail", "more"),
    "opacity": ("opacity", "more"), "transparency": ("opacity", "less"), "shadow": ("shadows", "more"),
    "shadows": ("shadows", "more"), "highlights": ("highlights", "more"), "intensity": ("intensity", "more"),
    "strength": ("intensity", "more"), "amount": ("intensity", "more"), "number": ("intensity", "more"),
    "level": ("intensity", "more"),
}
MORE = frozenset("more increase boost intensify heighten amplify strengthen greater stronger".split())
LESS = frozenset("less fewer decrease reduce lessen diminish weaken weaker minimise minimize".split())
# Direction words that are modifiers only in front of an attribute ("lower the contrast" vs "the lower half").
DIRECTIONAL_MODIFIERS = {"higher": ("more", ("height", "up")), "raise": ("more", ("height", "up")),
                         "lower": ("less", ("height", "down")), "high": ("more", None), "low": ("less", None)}
# Words skipped between a modifier and what it qualifies ("reduce the overall image brightness").
FILLERS = frozenset("the a an it its their his her this that some of overall image photo picture bit little "
                    "slightly much very lot way s".split())
UNIT_NAMES = ("degrees", "percent", "times")

# Multi-word names and idioms, rewritten to one token before the word lookup in one left-to-right pass
# (where two start at one word, the earlier in this list wins).
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"black and white|b and w", "monochrome"),
    (r"white balance", "whitebalance"),
    (r"red eyes?", "redeye"),
    (r"green screen", "greenscreen"),
    (r"golden hours?", "goldenhour"),
    (r"(?:counter|anti) clockwise", "counterclockwise"),
    (r"upside down|(?:from )?top to bottom|(?:from )?bottom to top|up and down", "vertical"),
    (r"(?:from )?left to right|(?:from )?right to left|side to side|left right", "horizontal"),
    (r"zoom(?:s|ed|ing)? (?:in(?:to)?|closer)|close ups?|closeups?", "zoomin"),
    (r"zoom(?:s|ed|ing)? out|pull(?:s|ed|ing)? back|wide angle|wide shot|wider (?:view|shot)", "zoomout"),
    (r"(?:get|got|getting) rid of|(?:take|takes|taken|taking|took) (?:\w+ ){0,3}?(?:away|out|off)|cut out|"
     r"crop out", "remove"),
    (r"(?:turn|switch)(?:s|ed|ing)? on|lights? on", "poweron"),
    (r"(?:turn|switch)(?:s|ed|ing)? off|lights? off", "poweroff"),
    (r"(?:turn|crank|pump)(?:s|ed|ing)? up", "more"),
    (r"(?:turn|tone)(?:s|d|ed|ing)? down", "less"),
    (r"(?:scale|blow)(?:s|d|ed|ing)? up", "enlarge"),
    (r"scale(?:s|d)? down", "shrink"),
    (r"light(?:s|ed|ing)? up|lit up", "brighten"),
    (r"out of focus", "outoffocus"),
    (r"in focus", "infocus"),
    (r"close to|closer to", "near"),
    (r"make ?up", "makeup"),
    (r"(?:pick|set|clean|fill|cheer|dress|speed|end|wake|line|tidy|sum|back|shut) up", "_"),
    (r"van gogh", "vangogh"),
    (r"da vinci", "davinci"),
    (r"pop art", "popart"),
    (r"ukiyo e", "ukiyoe"),
    (r"stained glass", "stainedglass"),
    (r"oil paint(?:ing|ed|s)?", "oil"),
)
# one alternation tried at word starts only (the text is words joined by single spaces): 3x faster than
# one pass per phrase
_PHRASE_RE = re.compile(r"(?:^|(?<= ))(?:" + "|".join(rf"(?P<p{i}>{p})" for i, (p, _) in enumerate(_PHRASES))
                        + r")(?= |$)")
_PHRASE_TOKEN = {f"p{i}": token for i, (_, token) in enumerate(_PHRASES)}
_SPELLING = {"color": "colour", "colors": "colours", "colored": "coloured", "colorful": "colourful",
             "colorless": "colourless", "colorize": "colourise", "gray": "grey", "grayscale": "greyscale",
             "grays": "greys", "grayish": "greyish", "center": "centre", "centered": "centred",
             "watercolor": "watercolour", "watercolors": "watercolours"}
# Inflected forms that are not the word they look like ("move it closer", "add shorts").
_NOT_FORMS = frozenset("closer closest closely shorts shutter lately lighting lights opener topping".split())
_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|[a-z]+|%|°")
_NUMBER_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(°|degrees?\b|deg\b|%|percent\b|per cent\b|x\b|times\b)")
_UNIT_OF = {"°": 0, "degree": 0, "degrees": 0, "deg": 0, "%": 1, "percent": 1, "per cent": 1, "x": 2, "times": 2}


def _build_lexicon() -> tuple[dict[str, tuple[tuple[str, str], ...]], dict[str, int], list[tuple[str, ...]]]:
    lexicon: dict[str, list[tuple[str, str]]] = {}
    for slot, values in SLOTS.items():
        for value, words in values.items():
            for w in words.split():
                lexicon.setdefault(w, []).append((slot, value))
    slot_index = {s: i for i, s in enumerate(SLOTS)}
    values = [tuple(v) for v in SLOTS.values()]
    return {w: tuple(v) for w, v in lexicon.items()}, slot_index, values


LEXICON, SLOT_INDEX, SLOT_VALUES = _build_lexicon()
SLOTS_LIST = list(SLOTS)
N_SLOTS = len(SLOTS)
assert N_SLOTS + 3 <= 64 and max(len(v) for v in SLOT_VALUES) <= 32  # one uint64 of slots and units, uint32 masks
_VOCAB = frozenset(LEXICON) | frozenset(ATTRIBUTES) | MORE | LESS | \
    frozenset(DIRECTIONAL_MODIFIERS) | {"too"}
_SUFFIXES = ("ly", "ish", "est", "er", "en", "ed", "ing", "es", "s", "y")


def _repairs(stem: str) -> list[str]:
    """Spellings a stripped stem may stand for: as is, +e (larg-er), undoubled (bigg-er), i->y (happi-er)."""
    out = [stem, stem + "e"]
    if len(stem) > 2 and stem[-1] == stem[-2]:
        out.append(stem[:-1])
    if stem.endswith("i"):
        out.append(stem[:-1] + "y")
    return out


@lru_cache(maxsize=1 << 16)
def lemma(word: str, depth: int = 2) -> str:
    """`word` folded onto a lexicon entry by stripping regular suffixes (at most `depth`), else itself."""
    if word in _VOCAB or word in _NOT_FORMS or depth == 0:
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            for stem in _repairs(word[:-len(suffix)]):
                found = lemma(stem, depth - 1)
                if found in _VOCAB:
                    return found
    return word


def tokens(text: str) -> list[str]:
    """Lower-cased words, spellings unified, multi-word names joined into one token, forms folded."""
    words = [_SPELLING.get(w, w) for w in _TOKEN_RE.findall(text.lower().replace("&", " and "))]
    joined = _PHRASE_RE.sub(lambda m: _PHRASE_TOKEN[m.lastgroup], " ".join(words))
    return [lemma(w) for w in joined.split()]


def _next_content(words: list[str], i: int, limit: int = 4) -> int | None:
    """Index of the first word after i that is not a filler (at most `limit` words on)."""
    for j in range(i + 1, min(len(words), i + 1 + limit)):
        if words[j] not in FILLERS:
            return j
    return None


def _flip(slot: str, value: str) -> str:
    a, b = SLOT_VALUES[SLOT_INDEX[slot]][:2]
    return b if value == a else a


def _modifier(word: str) -> tuple[str, tuple[str, str] | None] | None:
    """(sign, direction when it qualifies nothing) of a modifier word, else None."""
    if word in MORE:
        return "more", None
    if word in LESS:
        return "less", None
    if word == "too":  # "too dark": only ever flips the pole word that follows
        return "too", None
    return DIRECTIONAL_MODIFIERS.get(word)


def mentions(text: str) -> frozenset[tuple[str, str]]:
    """The (slot, value) pairs an instruction names."""
    words = tokens(text)
    found: set[tuple[str, str]] = set()
    skip: set[int] = set()
    for i, w in enumerate(words):
        if i in skip:
            continue
        mod = _modifier(w)
        if mod is None:
            found.update(LEXICON.get(w, ()))
            continue
        sign, direction = mod
        j = _next_content(words, i)
        target = words[j] if j is not None else None
        poles = [sv for sv in LEXICON.get(target, ()) if sv[0] in FLIPPABLE]
        if poles or (target in ATTRIBUTES and sign != "too"):
            # "less bright" / "reduce the brightness" -> dark, "more blurry" -> blur, "too dark" -> bright
            for s, v in poles or [ATTRIBUTES[target]]:
                found.add((s, v if sign == "more" else _flip(s, v)))
            skip.add(j)
        elif direction is not None:  # "move it higher", "the lower half"
            found.add(direction)
    return frozenset(found)


def numbers(text: str) -> tuple[float, ...]:
    """The first value of each unit in UNIT_NAMES (NaN when absent)."""
    out = [math.nan] * len(UNIT_NAMES)
    for value, unit in _NUMBER_RE.findall(text.lower()):
        k = _UNIT_OF[unit]
        if math.isnan(out[k]):
            out[k] = float(value)
    return tuple(out)


@lru_cache(maxsize=1 << 16)
def text_signature(text: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(one value mask per slot, numbers per unit) of an instruction: what pairs are compared on."""
    masks = [0] * N_SLOTS
    for slot, value in mentions(text):
        k = SLOT_INDEX[slot]
        masks[k] |= 1 << SLOT_VALUES[k].index(value)
    return tuple(masks), numbers(text)


def signatures(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Masks (n x N_SLOTS uint32) and numbers (n x len(UNIT_NAMES) float64) of distinct texts."""
    sig = [text_signature(t) for t in texts]
    masks = np.array([s[0] for s in sig], dtype=np.uint32).reshape(len(sig), N_SLOTS)
    nums = np.array([s[1] for s in sig], dtype=np.float64).reshape(len(sig), len(UNIT_NAMES))
    return masks, nums


def slot_bits(masks: np.ndarray) -> np.ndarray:
    """One uint64 per text: bit k set when the text names slot k."""
    weights = np.left_shift(np.uint64(1), np.arange(N_SLOTS, dtype=np.uint64))
    return np.bitwise_or.reduce(np.where(masks != 0, weights, np.uint64(0)), axis=1) if len(masks) else \
        np.zeros(0, np.uint64)


def conflicts_between(masks: np.ndarray, nums: np.ndarray, ta: np.ndarray, tb: np.ndarray,
                      number_ratio: float | None = None, disjoint: bool = False, chunk: int = 65536) -> np.ndarray:
    """conflict[i]: texts ta[i] and tb[i] (rows of `signatures`) name one slot with no value in common,
    or (number_ratio set) one unit with values more than number_ratio apart, or (disjoint) each names
    some slot and none in common."""
    ta, tb = np.asarray(ta, np.int64), np.asarray(tb, np.int64)
    out = np.zeros(len(ta), dtype=bool)
    bits = slot_bits(masks)
    units = np.left_shift((~np.isnan(nums)).astype(np.uint64), np.arange(N_SLOTS, N_SLOTS + len(UNIT_NAMES),
                                                                         dtype=np.uint64)).sum(axis=1, dtype=np.uint64) \
        if len(nums) else np.zeros(0, np.uint64)
    for s in range(0, len(ta), chunk):
        a, b = ta[s:s + chunk], tb[s:s + chunk]
        shared = bits[a] & bits[b]
        if disjoint:  # a number's unit counts as a named attribute: "hue 300 degrees" vs "warmer by 30%"
            na, nb = bits[a] | units[a], bits[b] | units[b]
            out[s:s + chunk] = (na != 0) & (nb != 0) & ((na & nb) == 0)
        rows = np.flatnonzero(shared)  # texts that share no slot cannot disagree on one: skip them
        ma, mb = masks[a[rows]], masks[b[rows]]
        out[s + rows] = ((ma != 0) & (mb != 0) & ((ma & mb) == 0)).any(axis=1)
        if number_ratio is not None:
            na, nb = nums[a], nums[b]
            far = np.maximum(na, nb) > number_ratio * np.minimum(na, nb)  # False where either is NaN (absent)
            out[s:s + chunk] |= far.any(axis=1)
    return out


def encode_texts(instructions: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """(distinct texts in order of first appearance, code of each input row); null counts as ""."""
    arr = instructions if isinstance(instructions, (pa.Array, pa.ChunkedArray)) else \
        pa.array(list(instructions), type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = arr.cast(pa.string()).fill_null("").dictionary_encode()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def instruction_conflicts(instructions: Sequence[str] | pa.Array, a: np.ndarray, b: np.ndarray,
                          number_ratio: float | None = None, disjoint: bool = False) -> np.ndarray:
    """conflict[i] for candidates (a[i], b[i]), rows of `instructions` (one text per pair)."""
    texts, code = encode_texts(instructions)
    masks, nums = signatures(texts)
    return conflicts_between(masks, nums, code[np.asarray(a, np.int64)], code[np.asarray(b, np.int64)],
                             number_ratio, disjoint)


def explain(text_a: str, text_b: str, number_ratio: float | None = None, disjoint: bool = False) -> list[str]:
    """Human-readable reasons two texts conflict ([] when they do not), for reports and debugging."""
    (ma, na), (mb, nb) = text_signature(text_a), text_signature(text_b)
    out = []
    names = SLOTS_LIST + list(UNIT_NAMES)
    named_a = {k for k, m in enumerate(ma) if m} | {N_SLOTS + k for k, x in enumerate(na) if not math.isnan(x)}
    named_b = {k for k, m in enumerate(mb) if m} | {N_SLOTS + k for k, x in enumerate(nb) if not math.isnan(x)}
    if disjoint and named_a and named_b and not named_a & named_b:
        out.append(f"different attributes: {', '.join(names[k] for k in sorted(named_a))} vs "
                   f"{', '.join(names[k] for k in sorted(named_b))}")
    for k, slot in enumerate(SLOTS):
        if ma[k] and mb[k] and not ma[k] & mb[k]:
            names = [", ".join(v for i, v in enumerate(SLOT_VALUES[k]) if m >> i & 1) for m in (ma[k], mb[k])]
            out.append(f"{slot}: {names[0]} vs {names[1]}")
    if number_ratio is not None:
        for unit, x, y in zip(UNIT_NAMES, na, nb):
            if not (math.isnan(x) or math.isnan(y)) and max(x, y) > number_ratio * min(x, y):
                out.append(f"{unit}: {x:g} vs {y:g}")
    return out


# ---- held-out evaluation --------------------------------------------------------------------

HELDOUT_PATH = Path(__file__).with_name("instruction_pairs_heldout.yaml")


def load_heldout(path: str | Path = HELDOUT_PATH, section: str = "pairs") -> list[tuple[str, str, str]]:
    """(instruction a, instruction b, label "same" | "different") of one section of the held-out set."""
    import yaml

    rows = yaml.safe_load(Path(path).read_text()).get(section) or []
    out = [(str(r["a"]), str(r["b"]), str(r["label"])) for r in rows]
    bad = sorted({lab for _, _, lab in out} - {"same", "different"})
    if bad:
        raise ValueError(f"{path}: labels must be same|different, got {bad}")
    return out


def _keep_metrics(keep: np.ndarray, same: np.ndarray) -> dict:
    kept, kept_same = int(keep.sum()), int((keep & same).sum())
    return {"kept": kept, "kept_same": kept_same, "kept_different": kept - kept_same,
            "precision": round(kept_same / kept, 4) if kept else None,
            "recall": round(kept_same / int(same.sum()), 4) if same.any() else None}


def _text_filter(pairs: list[tuple[str, str, str]], embed_texts: Callable[[list[str]], np.ndarray],
                 params: FilterParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cosine keeps, conflict, same label) of each pair."""
    texts = sorted({t for a, b, _ in pairs for t in (a, b)})
    index = {t: i for i, t in enumerate(texts)}
    emb = np.asarray(embed_texts(texts), dtype=np.float64).reshape(len(texts), -1)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    ia = np.array([index[a] for a, _, _ in pairs], dtype=np.int64)
    ib = np.array([index[b] for _, b, _ in pairs], dtype=np.int64)
    cos = np.round(np.einsum("ij,ij->i", emb[ia], emb[ib]), 6)  # a 1e-6 grid: BLAS noise never flips a pair
    conflict = instruction_conflicts(texts, ia, ib, params.conflict_number_ratio, params.conflict_on_disjoint_slots)
    return cos >= params.tau_text, conflict, np.array([lab == "same" for _, _, lab in pairs], dtype=bool)


def heldout_agreement(embed_texts: Callable[[list[str]], np.ndarray], params: FilterParams | MineParams, *,
                      path: str | Path = HELDOUT_PATH) -> dict:
    """Score the held-out instruction pairs with the text filter of `params` (FilterParams or MineParams).

    kept = cos(T(a), T(b)) >= tau_text, and no conflict when the check is on. `filter` and
    `cosine_only` (the same without the check) give precision (share of kept pairs labelled
    "same") and recall (share of "same" pairs kept); `different_kept_by_cosine` counts the
    "different" pairs the cosine alone lets through, `different_caught_by_conflict` those the
    check then drops, `same_rejected_by_conflict` the paraphrases the check flags whatever their
    cosine (0 by design). `out_of_scope`: "different" pairs the check does not claim to see
    (another object), and how many of them each filter keeps.
    """
    params = params.filters if isinstance(params, MineParams) else params
    pairs = load_heldout(path)
    cos_keep, conflict, same = _text_filter(pairs, embed_texts, params)
    check = bool(params.drop_instruction_conflicts)
    keep = cos_keep & ~conflict if check else cos_keep
    result = {
        "n_pairs": len(pairs), "n_same": int(same.sum()), "n_different": int((~same).sum()),
        "tau_text": float(params.tau_text), "conflict_check": check,
        "filter": _keep_metrics(keep, same), "cosine_only": _keep_metrics(cos_keep, same),
        "different_kept_by_cosine": int((cos_keep & ~same).sum()),
        "different_caught_by_conflict": int((cos_keep & ~same & conflict).sum()),
        "same_rejected_by_conflict": int((same & conflict).sum()),
    }
    extra = load_heldout(path, "out_of_scope")
    if extra:
        cos_x, conflict_x, _ = _text_filter(extra, embed_texts, params)
        kept_x = cos_x & ~conflict_x if check else cos_x
        result["out_of_scope"] = {"n_pairs": len(extra), "kept_by_filter": int(kept_x.sum()),
                                  "kept_by_cosine": int(cos_x.sum())}
    return result
