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

from pipelines.node_types import NODE_TYPES

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


def build_instruction(rows: int, columns: list[str], rng: np.random.Generator, *, caption: str = "",
                      task_keep: float = 0.8, content_keep: float = 0.8, drop_all: float = 0.1,
                      phrases_file: str | None = None, task_text: str = "") -> dict[str, str]:
    """{layout, task, content, text}. `task_text` replaces the templated task part (mined edits)."""
    bank = phrase_bank(phrases_file)
    cols = len(columns)
    # Draw every random choice whatever is kept, so the stream does not depend on the drops.
    layout_t = bank["layout"][rng.integers(len(bank["layout"]))]
    task_t = bank["task"][rng.integers(len(bank["task"]))]
    picks = []
    for k, node in enumerate(columns):
        options = node_phrases(node, bank)
        picks.append(f"[IMAGE{k + 1}] {options[rng.integers(len(options))]}")
    keep_task, keep_content, drop = rng.random() < task_keep, rng.random() < content_keep, rng.random() < drop_all
    layout = _singular(layout_t.format(rows=rows, cols=cols))
    steps = picks[0] if cols == 2 else ", ".join(picks[:-1])
    task = task_text or task_t.format(steps=steps, last=picks[-1])
    content = caption if caption and columns[-1] == "image" else ""
    if drop:
        return {"layout": "", "task": "", "content": "", "text": ""}
    task = task if keep_task else ""
    content = content if keep_content else ""
    text = " ".join(p for p in (layout, task, content) if p)
    return {"layout": layout, "task": task, "content": content, "text": text}
