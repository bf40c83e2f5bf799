"""Image captions from Qwen2.5-VL -> node `caption` (JSON only; meta {text, model, prompt}).

The caption is the content part of a Graph200K instruction (the target's description) and the
text of any sample whose target is the photo itself.
"""

from __future__ import annotations

from pydantic import Field

from annotators.base import AnnotatorParams, NodeOutput
from annotators.grounding import QWEN_VL_DEFAULT, QwenVLAnnotator
from annotators.registry import register
from annotators.segmentation import DType

CAPTION_PROMPT = ("Describe this image in one or two sentences: the main subject, its appearance, "
                  "the setting and the style. Do not start with 'The image'.")


class CaptionParams(AnnotatorParams):
    repo_id: str = QWEN_VL_DEFAULT
    prompt: str = CAPTION_PROMPT
    max_new_tokens: int = Field(96, ge=4, le=1024)
    min_pixels: int = Field(256 * 28 * 28, ge=4 * 28 * 28)
    max_pixels: int = Field(1024 * 28 * 28, ge=4 * 28 * 28)
    dtype: DType = "auto"


def tidy_caption(text: str) -> str:
    """One line, no surrounding quotes or code fences."""
    text = " ".join((text or "").replace("```", " ").split())
    return text.strip("\"' ")


@register
class CaptionQwenVL(QwenVLAnnotator):
    """Greedy (deterministic) Qwen2.5-VL caption of each image, batched."""

    name = "caption_qwen_vl"
    produces = ("caption",)
    Params = CaptionParams

    def annotate(self, inputs, image_ids):
        p = self.params
        texts, _ = self._vlm.generate([item["image"] for item in inputs], p.prompt, p.max_new_tokens)
        return [{"caption": NodeOutput(None, {"text": tidy_caption(t), "model": p.repo_id, "prompt": p.prompt})}
                for t in texts]
