"""Source image quality without weights: is an ingested photo worth annotating and sampling?

Node `image_quality` (metadata only, JSON meta): scores measured on the photo brought to a fixed
working size (short side `working_side`, area interpolation), so they do not depend on the
input resolution:
  sharpness       variance of the Laplacian of the grey image (OpenCV), 8-bit units squared
  contrast        standard deviation of the grey image
  entropy         Shannon entropy of the grey histogram, bits (scikit-image)
  colourfulness   Hasler & Suesstrunk's M (std and mean of the rg / yb opponent channels)
  width, height   the stored photo's size
Quality `flat_image` (the photo and every node of it should not be sampled) when the short side
is below `min_side`, or the contrast, entropy or sharpness is below its threshold: a constant
or near-constant crop (noise of a level or two), a smooth gradient with no structure, a crop
that is almost all one value. A blank crop teaches no task, and its edge, pose and mask nodes
are empty. The defaults flag 4 of the demo's 240 embedded crops (two blurred `cell` crops, a
smooth `colorwheel` gradient, a nearly empty `horse` silhouette crop); the median crop has
sharpness 292, contrast 36, entropy 6.8.

Where weights exist, `image_quality_clip` adds CLIP-IQA (the softmax of a photo's CLIP similarity
to "Good photo." against "Bad photo.") as node `image_quality_clip`; with `min_score` set it is
a filter (quality `low_quality`).
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources
from core.weights import WeightSpec
from annotators.embeddings import OpenClipAnnotator
from annotators.registry import register

IMAGE_QUALITY_NODE = "image_quality"  # registered in core/node_types.py (metadata only)


class ImageQualityParams(AnnotatorParams):
    working_side: int = Field(256, ge=32, le=4096)
    min_side: int = Field(64, ge=1)
    min_contrast: float = Field(4.0, ge=0.0)  # grey std, 8-bit levels
    min_entropy: float = Field(1.0, ge=0.0, le=8.0)  # bits of the 256-bin grey histogram
    min_sharpness: float = Field(2.0, ge=0.0)  # Laplacian variance at the working size


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003): sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def quality_scores(rgb: np.ndarray, working_side: int) -> dict[str, float]:
    """The scores of one H x W x 3 uint8 photo (see the module docstring)."""
    from skimage.measure import shannon_entropy

    h, w = rgb.shape[:2]
    k = working_side / min(h, w)
    small = rgb
    if k < 1:  # shrink only: enlarging a tiny photo would invent no detail but smooth it
        small = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2GRAY)
    return {
        "sharpness": round(float(cv2.Laplacian(grey, cv2.CV_64F).var()), 4),
        "contrast": round(float(grey.std()), 4),
        "entropy": round(float(shannon_entropy(grey)), 4),
        "colourfulness": round(colourfulness(small), 4),
        "width": int(w), "height": int(h),
    }


def flat_reasons(scores: dict[str, float], p: ImageQualityParams) -> list[str]:
    """Which thresholds a photo fails (empty: usable)."""
    failed = []
    if min(scores["width"], scores["height"]) < p.min_side:
        failed.append("size")
    for key, limit in (("contrast", p.min_contrast), ("entropy", p.min_entropy), ("sharpness", p.min_sharpness)):
        if scores[key] < limit:
            failed.append(key)
    return failed


@register
class ImageQuality(Annotator):
    """Weight-free quality scores of each ingested photo; flat, near-constant or tiny photos get
    quality `flat_image`."""

    name = "image_quality"
    produces = (IMAGE_QUALITY_NODE,)
    Params = ImageQualityParams
    resources = Resources(batch_size=64, concurrency=2)

    def annotate(self, inputs, image_ids):
        out = []
        for item in inputs:
            scores = quality_scores(item["image"], self.params.working_side)
            failed = flat_reasons(scores, self.params)
            meta = {**scores, "failed": failed}
            out.append({IMAGE_QUALITY_NODE: NodeOutput(None, meta, "flat_image" if failed else None)})
        return out


# --- CLIP-IQA (where weights exist) ------------------------------------------------------------

IMAGE_QUALITY_CLIP_NODE = "image_quality_clip"  # registered in core/node_types.py (metadata only)
CLIP_IQA_PROMPTS = ("Good photo.", "Bad photo.")  # CLIP-IQA's antonym prompt pair (Wang et al., 2023)


class ClipIqaParams(AnnotatorParams):
    model_name: str = "ViT-L-14"  # any open_clip model; weights from annotate.models_dir or the HF cache
    pretrained: str = "openai"
    weights_repo: str | None = None  # HF repo of the weights (default: open_clip's for the pair above)
    prompts: tuple[str, str] = CLIP_IQA_PROMPTS  # (good, bad)
    # A filter by params: quality `low_quality` (never sampled) when the score is below this;
    # None keeps every image and only records the score.
    min_score: float | None = Field(None, ge=0.0, le=1.0)


def clip_iqa_scores(image_emb: np.ndarray, prompt_emb: np.ndarray, logit_scale: float = 100.0) -> np.ndarray:
    """P(good) of each image: softmax over its cosine to the (good, bad) prompts, CLIP's logit scale."""
    logits = logit_scale * (image_emb @ prompt_emb.T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p[:, 0] / p.sum(axis=1)


@register
class ImageQualityClip(OpenClipAnnotator):
    """CLIP-IQA score of each photo (open_clip towers, real weights only): node `image_quality_clip`
    with meta {score, model, prompts}; with `min_score`, quality `low_quality` below it."""

    name = "image_quality_clip"
    produces = (IMAGE_QUALITY_CLIP_NODE,)
    Params = ClipIqaParams
    resources = Resources(batch_size=32, concurrency=1, num_gpus=0.0)
    weights = (WeightSpec("timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
                          "open_clip ViT-L-14 (openai) for CLIP-IQA"),)

    def load(self) -> None:
        self._clip = self.open_clip()  # MissingWeightsError naming the repo when the weights are not on disk
        self._prompts = self._clip.embed_texts(list(self.params.prompts))

    def load_random(self, size: str = "tiny") -> None:
        self._clip = self.open_clip(size)
        self._prompts = self._clip.embed_texts(list(self.params.prompts))

    def annotate(self, inputs, image_ids):
        p = self.params
        scores = clip_iqa_scores(self._clip.embed_images([item["image"] for item in inputs]), self._prompts)
        out = []
        for score in scores.tolist():
            meta = {"score": round(float(score), 6), "model": f"{p.model_name}/{p.pretrained}",
                    "prompts": list(p.prompts)}
            low = p.min_score is not None and score < p.min_score
            out.append({IMAGE_QUALITY_CLIP_NODE: NodeOutput(None, meta, "low_quality" if low else None)})
        return out
