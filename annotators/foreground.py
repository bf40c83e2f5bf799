"""Foreground / background split: Graph200K's `foreground` (= image x mask) and `background`
(= image x (1 - mask)), plus the binary `foreground_mask` (0/255 grey).

- `foreground` requires ("image", "mask"): the mask is the union (or the largest) of the
  open-world object masks that `sam_boxes` painted in distinct colours on black.
- `foreground_mediapipe`: mediapipe's selfie segmentation (weights bundled in mediapipe 0.10.21,
  runs offline) for photos of people.
Pixels outside the kept region are black in `foreground`; pixels inside it are black in `background`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators import render
from annotators.base import Annotator, NodeOutput, Resources, resize_to
from annotators.quality import GateParams, gate_view, mask_quality
from annotators.registry import register

FOREGROUND_NODES = ("foreground_mask", "foreground", "background")


def split_by_mask(image: np.ndarray, mask: np.ndarray, min_area: float = 0.0,
                  max_area: float = 1.0, gate_region: str = "full") -> dict[str, NodeOutput]:
    """The three nodes from a boolean H x W mask; meta records the foreground's area fraction.

    All three get quality `empty_mask` when the mask covers less than `min_area` of `gate_region`
    (a black foreground, a background that is the photo itself) and `full_mask` above `max_area`.
    """
    mask = np.asarray(mask, dtype=bool)
    keep = mask[..., None]
    meta = {"area_fraction": round(float(mask.mean()), 6)}
    quality = mask_quality(gate_view(mask, gate_region), min_area, max_area)
    return {
        "foreground_mask": NodeOutput(render.binary_mask_image(mask), meta, quality),
        "foreground": NodeOutput(np.where(keep, image, 0).astype(np.uint8), meta, quality),
        "background": NodeOutput(np.where(keep, 0, image).astype(np.uint8), meta, quality),
    }


class MaskAreaParams(GateParams):
    # Quality `empty_mask` below `min_area`, `full_mask` above `max_area` (fractions of
    # `gate_region`, default the centre square the exporter keeps): the split is degenerate and
    # none of the three nodes is sampled.
    min_area: float = Field(0.005, ge=0.0, le=1.0)
    max_area: float = Field(0.98, ge=0.0, le=1.0)


def object_masks_from_colours(mask_map: np.ndarray) -> list[np.ndarray]:
    """Split a coloured mask map (distinct colour per object on black) into one bool mask per colour."""
    if mask_map.ndim == 2:
        return [mask_map > 0] if np.any(mask_map) else []
    flat = mask_map.reshape(-1, 3)
    colours, inverse = np.unique(flat, axis=0, return_inverse=True)
    inverse = inverse.reshape(mask_map.shape[:2])
    return [inverse == i for i, c in enumerate(colours) if np.any(c)]


class ForegroundParams(MaskAreaParams):
    # union: every grounded object is foreground; largest: only the biggest object (Subjects200K-like
    # single-subject photos).
    select: Literal["union", "largest"] = "union"


@register
class ForegroundFromMask(Annotator):
    """Foreground/background from the open-world `mask` node (non-black pixels are objects)."""

    name = "foreground"
    produces = FOREGROUND_NODES
    requires = ("image", "mask")
    Params = ForegroundParams
    resources = Resources(batch_size=32, concurrency=1)

    def annotate(self, inputs, image_ids):
        out = []
        for item in inputs:
            image, mask_map = item["image"], item["mask"]
            h, w = image.shape[:2]
            mask_map = resize_to(mask_map, h, w, nearest=True)
            if self.params.select == "union":
                mask = mask_map.any(axis=2) if mask_map.ndim == 3 else mask_map > 0
            else:
                objects = object_masks_from_colours(mask_map)
                mask = max(objects, key=lambda m: int(m.sum())) if objects else np.zeros((h, w), bool)
            p = self.params
            out.append(split_by_mask(image, mask, p.min_area, p.max_area, p.gate_region))
        return out


class MediapipeForegroundParams(MaskAreaParams):
    # 0: general model (256 x 256 input), 1: landscape model (144 x 256), both bundled.
    model_selection: int = Field(0, ge=0, le=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)


@register
class ForegroundMediapipe(Annotator):
    """Person foreground from mediapipe's selfie segmentation (bundled real weights, CPU)."""

    name = "foreground_mediapipe"
    produces = FOREGROUND_NODES
    Params = MediapipeForegroundParams
    resources = Resources(batch_size=32, concurrency=2)
    version = "1"

    def load(self) -> None:
        import mediapipe as mp

        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=self.params.model_selection)

    def load_random(self, size: str = "tiny") -> None:
        self.load()  # the weights ship inside the mediapipe wheel: tests use the real model

    def person_probability(self, image: np.ndarray) -> np.ndarray:
        result = self._segmenter.process(np.ascontiguousarray(image))
        return np.asarray(result.segmentation_mask, dtype=np.float32)

    def annotate(self, inputs, image_ids):
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            prob = resize_to(self.person_probability(image), h, w)
            p = self.params
            out.append(split_by_mask(image, prob > p.threshold, p.min_area, p.max_area, p.gate_region))
        return out
