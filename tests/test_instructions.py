"""The composed layout + task + content text reads as English for every template combination."""

import itertools
import re

import numpy as np
import pytest

from pipelines.instructions import build_instruction, compose_instruction, join_parts, join_steps, phrase_bank
from core.node_types import NODE_TYPES

CAPTIONS = ["", "a cat sitting on a red mat", "A harbour at dusk.", "two dogs, one asleep"]
MINED = ["", "Each row applies the same edit: make it sepia", "turn the sky pink!"]


def grammar_problems(text: str, cols: int | None = None, templated_task: bool = False) -> list[str]:
    """What is wrong at the joins of one instruction text (empty: nothing)."""
    problems = []
    if not text:
        return ["empty"]
    if not re.match(r"[A-Z0-9\[]", text):
        problems.append("does not start with a capital")
    if not text.endswith((".", "!", "?")):
        problems.append("no final punctuation")
    for bad in ("  ", " ,", " .", ",,", "..", ",.", ".,", ":.", ";.", "1 rows", "1 columns", "{", "}"):
        if bad in text:
            problems.append(f"contains {bad!r}")
    for m in re.finditer(r"[.!?] (\S)", text):
        if not re.match(r"[A-Z0-9\[]", m.group(1)):
            problems.append(f"lower-case sentence start at {m.start()}")
    if re.search(r"[,;:] (?!IMAGE)[A-Z][a-z]", text):
        problems.append("capitalised word after a comma")  # the bug: "grid of images, In each row"
    if templated_task and cols:
        for k in range(1, cols + 1):
            if text.count(f"[IMAGE{k}]") != 1:
                problems.append(f"[IMAGE{k}] not named once")
    return problems


def _picks(phrases: list[str]) -> list[str]:
    return [f"[IMAGE{k + 1}] {p}" for k, p in enumerate(phrases)]


def test_every_template_combination_is_grammatical():
    bank = phrase_bank()
    phrases = ["the photo", "Canny edges", "the depth map", "a relative depth estimate"]
    checked = 0
    for layout, task, rows, cols, keep_task, caption, mined in itertools.product(
            bank["layout"], bank["task"], (1, 2, 3), (2, 3, 4), (True, False), CAPTIONS, MINED):
        out = compose_instruction(layout, task, _picks(phrases[:cols]), rows, caption=caption, task_text=mined,
                                  keep_task=keep_task)
        problems = grammar_problems(out["text"], cols, templated_task=keep_task and not mined)
        assert not problems, (out["text"], problems)
        assert out["layout"] in out["text"]
        checked += 1
    assert checked == len(bank["layout"]) * len(bank["task"]) * 3 * 3 * 2 * len(CAPTIONS) * len(MINED)


def test_every_node_phrase_reads_in_every_task_template():
    bank = phrase_bank()
    phrases = sorted({p for options in bank["nodes"].values() for p in options}
                     | {t.format(name=n.removeprefix("edit_").replace("_", " "))
                        for n, node in NODE_TYPES.items() for t in bank["groups"].get(node.group, [])})
    for task, phrase in itertools.product(bank["task"], phrases):
        for picks in (_picks([phrase, "the photo"]), _picks(["the photo", phrase]), _picks([phrase] * 3)):
            out = compose_instruction(bank["layout"][0], task, picks, 2)
            assert not grammar_problems(out["text"], len(picks), True), out["text"]


def test_steps_are_an_english_list():
    assert join_steps(["A"]) == "A"
    assert join_steps(["A", "B"]) == "A and B"
    assert join_steps(["A", "B", "C"]) == "A, B and C"


def test_joins_capitalise_and_punctuate():
    assert join_parts(["A grid of 2 rows and 2 columns.", "", "a cat on a mat"]) == \
        "A grid of 2 rows and 2 columns. A cat on a mat."
    # a user's lead-in template runs on into the next part, lower-casing its first word only
    assert join_parts(["In this 2 by 2 grid of images,", "In each row, the task is clear."]) == \
        "In this 2 by 2 grid of images, in each row, the task is clear."
    assert join_parts(["In this grid,", "[IMAGE1] the photo comes first."]) == \
        "In this grid, [IMAGE1] the photo comes first."
    assert join_parts(["In this 2 by 2 grid of images,"]) == "In this 2 by 2 grid of images."
    assert join_parts(["Each row applies the same edit: make it sepia"]) == \
        "Each row applies the same edit: make it sepia."
    assert join_parts([]) == ""


def test_a_user_phrase_bank_with_a_lead_in_layout(tmp_path):
    extra = tmp_path / "phrases.yaml"
    extra.write_text('layout: ["In this {rows} by {cols} grid of images,"]\n'
                     'task: ["In each row, {steps} comes before {last}."]\n')
    texts = set()
    for seed in range(60):
        out = build_instruction(2, ["canny", "image"], np.random.default_rng(seed), caption="a cat",
                                drop_all=0.0, phrases_file=str(extra))
        assert not grammar_problems(out["text"]), out["text"]
        texts.add(out["text"].split(" [IMAGE1]")[0])
    assert "In this 2 by 2 grid of images, in each row," in texts  # the "images, In each row"
    assert "In this 2 by 2 grid of images. A cat." in texts or "In this 2 by 2 grid of images, a cat." in texts


@pytest.mark.parametrize("columns", [["canny", "image"], ["image", "depth", "normal"], ["gray", "edit_sepia"]])
def test_built_instructions_are_grammatical_and_seeded(columns):
    rng = np.random.default_rng(0)
    for _ in range(300):
        out = build_instruction(3, columns, rng, caption="a cat on a mat")
        if out["text"]:
            assert not grammar_problems(out["text"], len(columns), bool(out["task"])), out["text"]
    a = build_instruction(2, columns, np.random.default_rng(9))
    assert a == build_instruction(2, columns, np.random.default_rng(9))
