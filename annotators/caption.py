"""Image captions from Qwen2.5-VL -> node `caption` (JSON only; meta {text, model, prompt}).

The caption is the content part of a Graph200K instruction (the target's description) and the
text of any sample whose target is the photo itself.
"""

from __future__ import annotations

from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, WeightSpec
from annotators.grounding import QWEN_VL_DEFAULT, QwenVL
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
class CaptionQwenVL(Annotator):
    """Greedy (deterministic) Qwen2.5-VL caption of each image, batched."""

    name = "caption_qwen_vl"
    produces = ("caption",)
    Params = CaptionParams
    resources = Resources(batch_size=8, concurrency=1, num_gpus=1.0)
    weights = (WeightSpec(QWEN_VL_DEFAULT, None, "Qwen2.5-VL 7B Instruct (grounding and captions)"),)

    def load(self) -> None:
        p = self.params
        self._vlm = QwenVL.from_pretrained(p.repo_id, self.models_dir, self.device, p.dtype, p.min_pixels, p.max_pixels)

    def load_random(self, size: str = "tiny") -> None:
        p = self.params
        self._vlm = QwenVL.random(size, self.device, p.min_pixels, p.max_pixels)

    def annotate(self, inputs, image_ids):
        p = self.params
        texts, _ = self._vlm.generate([item["image"] for item in inputs], p.prompt, p.max_new_tokens)
        return [{"caption": NodeOutput(None, {"text": tidy_caption(t), "model": p.repo_id, "prompt": p.prompt})}
                for t in texts]
