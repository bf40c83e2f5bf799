"""Annotate plugin for tests/test_generative_chain.py: `sam_boxes` on segment_anything's tiny build.

`annotators.sam`'s `load()` builds only the published checkpoint architectures (ViT-B/L/H from
segment_anything's registry), so a tiny SAM cannot come from a models dir, and a random ViT-B
costs about 17 s per image on one CPU core. This subclass keeps every line of `SamBoxes` (box
prompts, one colour per object, the interactive pair) and only swaps the weights for
`annotators.sam.build_tiny_sam` (seeded, so the masks are the same on every run). It is loaded
the way a user's own annotator is: `annotate.plugins`, importable on every Ray worker.
"""

from __future__ import annotations

from annotators.registry import register
from annotators.sam import SamBoxes


@register
class TinyRandomSamBoxes(SamBoxes):
    name = "sam_boxes_tiny_random"
    weights = ()  # nothing to fetch: the weights are built in memory

    def load(self) -> None:
        self.load_random("tiny")
