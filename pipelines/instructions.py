"""Three-part instructions (layout, task, content) from templates and phrase banks, seeded.

Graph200K's scheme (anchors.md §1.1): the layout part names the grid, the task part walks a
row's columns with a phrase per node type, the content part is the target's caption (only
when the target is the photo and a caption exists). Parts are dropped with the probabilities
in `sample.instructions`; every choice comes from the caller's RNG, so a seed fixes the text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from core.node_types import NODE_TYPES

PHRASES_FILE = Path(__file__).with_name("instruction_phrases.yaml")


@lru_cache(maxsize=8)
def phrase_bank(extra_file: str | None = None) -> dict:
    bank = yaml.safe_load(PHRASES_FILE.read_text())
    if extra_file:
        extra = yaml.safe_load(Path(extra_file).read_text()) or {}
        for key in ("layout", "task"):
            bank[key] = list(extra.get(key, bank[key]))
        for key in ("groups", "nodes"):
            bank[key] = {**bank[key], **extra.get(key, {})}
    return bank


def node_phrases(node: str, bank: dict) -> list[str]:
    if node in bank["nodes"]:
        return bank["nodes"][node]
    group = NODE_TYPES[node].group if node in NODE_TYPES else ""
    templates = bank["groups"].get(group, ["the {name} image"])
    spaced = node.removeprefix("edit_").replace("_", " ")
    return [t.format(name=spaced) for t in templates]


def _singular(text: str) -> str:
    """'1 rows' -> '1 row' (templates are written for plurals)."""
    return re.sub(r"\b1 (row|column)s\b", r"1 \1", text)


def join_steps(picks: list[str]) -> str:
    """The columns before the last as an English list: 'A', 'A and B', 'A, B and C'."""
    if len(picks) <= 2:
        return " and ".join(picks)
    return ", ".join(picks[:-1]) + " and " + picks[-1]


_LEAD_IN = (",", ":", ";")
_WORD = re.compile(r"^[A-Z][a-z]")  # a capitalised ordinary word (not [IMAGE1], not an acronym)


def join_parts(parts: list[str]) -> str:
    """Join instruction parts into one text whose joins read as English.

    Each part is a sentence: it starts with a capital (a caption "a cat" becomes "A cat") and
    ends with . ! or ? (one is added). A part that ends in a lead-in mark (a user template such
    as "In this grid,") runs on into the next part, whose first word is then lower-cased; at the
    end of the text the lead-in mark becomes a full stop.
    """
    parts = [p.strip() for p in parts if p and p.strip()]
    out: list[str] = []
    for k, part in enumerate(parts):
        runs_on = k > 0 and out[-1].endswith(_LEAD_IN)
        if runs_on and _WORD.match(part):
            part = part[0].lower() + part[1:]
        elif not runs_on and part[0].islower():
            part = part[0].upper() + part[1:]
        if k == len(parts) - 1 or not part.endswith(_LEAD_IN):
            part = part.rstrip(",:; ")
            if not part.endswith((".", "!", "?")):
                part += "."
        out.append(part)
    return " ".join(out)


def compose_instruction(layout_template: str, task_template: str, picks: list[str], rows: int, *,
                        caption: str = "", task_text: str = "", keep_task: bool = True,
                        keep_content: bool = True) -> dict[str, str]:
    """{layout, task, content, text} from chosen templates and one phrase per column (no randomness).

    `picks[k]` is "[IMAGE<k+1>] <phrase of column k>"; the task part names the columns before
    the last as an English list (`steps`) and the last (`last`); `task_text` replaces it.
    """
    layout = _singular(layout_template.format(rows=rows, cols=len(picks)))
    task = task_text or task_template.format(steps=join_steps(picks[:-1]), last=picks[-1], first=picks[0])
    task = task if keep_task else ""
    content = caption if keep_content else ""
    return {"layout": layout, "task": task, "content": content, "text": join_parts([layout, task, content])}


def build_instruction(rows: int, columns: list[str], rng: np.random.Generator, *, caption: str = "",
                      task_keep: float = 0.8, content_keep: float = 0.8, drop_all: float = 0.1,
                      phrases_file: str | None = None, task_text: str = "") -> dict[str, str]:
    """{layout, task, content, text}. `task_text` replaces the templated task part (mined edits)."""
    bank = phrase_bank(phrases_file)
    # Draw every random choice whatever is kept, so the stream does not depend on the drops.
    layout_t = bank["layout"][rng.integers(len(bank["layout"]))]
    task_t = bank["task"][rng.integers(len(bank["task"]))]
    picks = []
    for k, node in enumerate(columns):
        options = node_phrases(node, bank)
        picks.append(f"[IMAGE{k + 1}] {options[rng.integers(len(options))]}")
    keep_task, keep_content, drop = rng.random() < task_keep, rng.random() < content_keep, rng.random() < drop_all
    if drop:
        return {"layout": "", "task": "", "content": "", "text": ""}
    content = caption if caption and columns[-1] == "image" else ""
    return compose_instruction(layout_t, task_t, picks, rows, caption=content, task_text=task_text,
                               keep_task=keep_task, keep_content=keep_content)
