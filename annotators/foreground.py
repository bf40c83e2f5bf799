"""Foreground / background split: Graph200K's `foreground` (= image x mask) and `background`
(= image x (1 - mask)), plus the binary `foreground_mask` (0/255 grey).

- `foreground` requires ("image", "mask"): the mask is the union (or the largest) of the
  open-world object masks that `sam_boxes` painted in distinct colours on black.
- `foreground_mediapipe`: mediapipe's selfie segmentation (weights bundled in mediapipe 0.10.21,
  runs offline) for photos of people. The selfie model has no person score and cuts any salient
  subject (a butterfly, a dog, a palace) with the same confidence as a person, so the node is
  held back (`low_confidence`) unless BlazePose (annotators/pose.py) finds a person with its own
  person and presence scores, and unless the mask itself is confident. meta["confidence"] keeps
  the mask's mean probability and confident share and the person's scores.
Pixels outside the kept region are black in `foreground`; pixels inside it are black in `background`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators import render
from annotators.base import Annotator, NodeOutput, Resources, resize_to
from annotators.quality import GateParams, gate_view, mask_quality, rounded, score_quality
from annotators.registry import register

FOREGROUND_NODES = ("foreground_mask", "foreground", "background")


def split_by_mask(image: np.ndarray, mask: np.ndarray, min_area: float = 0.0,
                  max_area: float = 1.0, gate_region: str = "full", confidence: dict | None = None,
                  minimums: dict[str, float] | None = None) -> dict[str, NodeOutput]:
    """The three nodes from a boolean H x W mask; meta records the foreground's area fraction.

    All three get quality `empty_mask` when the mask covers less than `min_area` of `gate_region`
    (a black foreground, a background that is the photo itself) and `full_mask` above `max_area`;
    otherwise `low_confidence` when a `confidence` score is below its entry in `minimums`.
    """
    mask = np.asarray(mask, dtype=bool)
    keep = mask[..., None]
    meta = {"area_fraction": round(float(mask.mean()), 6)}
    if confidence is not None:
        meta["confidence"] = confidence
    quality = (mask_quality(gate_view(mask, gate_region), min_area, max_area)
               or score_quality(confidence or {}, minimums or {}))
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


# A mask pixel is "confident" at this person probability (the selfie model's own output).
CONFIDENT_PROBABILITY = 0.9


def mask_confidence(prob: np.ndarray, threshold: float) -> dict:
    """Confidence statistics of the mask `prob > threshold`: its mean probability and the share of
    its pixels at or above CONFIDENT_PROBABILITY (both 0 for an empty mask)."""
    inside = prob[prob > threshold]
    if inside.size == 0:
        return {"mask_mean_probability": 0.0, "mask_confident_share": 0.0}
    return {"mask_mean_probability": rounded(inside.mean()),
            "mask_confident_share": rounded((inside >= CONFIDENT_PROBABILITY).mean())}


class MediapipeForegroundParams(MaskAreaParams):
    # 0: general model (256 x 256 input), 1: landscape model (144 x 256), both bundled.
    model_selection: int = Field(0, ge=0, le=1)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    # Quality `low_confidence` below these (benchmarks/detector_gates.py, 40 labelled photos). The
    # mask alone cannot tell a person: on the 26 photos without one the selfie model kept 20 masks,
    # as confident as on people (a butterfly: mean probability 0.985). So BlazePose must find a
    # person, with the pose annotator's thresholds (annotators/pose.py MediapipePoseParams). And the
    # mask must be confident: at least half of its pixels >= 0.9 (people: >= 0.70; the one person
    # photo under it is a crowd of small distant players whose mask never reaches 0.9).
    # 0 disables a check (the person check then costs nothing when both are 0).
    min_person_score: float = Field(0.55, ge=0.0, le=1.0)
    min_presence: float = Field(0.9, ge=0.0, le=1.0)
    min_confident_share: float = Field(0.5, ge=0.0, le=1.0)


@register
class ForegroundMediapipe(Annotator):
    """Person foreground from mediapipe's selfie segmentation (bundled real weights, CPU), kept only
    where BlazePose confirms a person (see the module docstring)."""

    name = "foreground_mediapipe"
    produces = FOREGROUND_NODES
    Params = MediapipeForegroundParams
    resources = Resources(batch_size=32, concurrency=2)
    version = "2"  # 2: meta["confidence"], quality low_confidence

    def load(self) -> None:
        import mediapipe as mp

        from annotators.pose import mediapipe_pose_graph

        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=self.params.model_selection)
        self._person = mediapipe_pose_graph() if self._checks_person() else None

    def load_random(self, size: str = "tiny") -> None:
        self.load()  # the weights ship inside the mediapipe wheel: tests use the real model

    def _checks_person(self) -> bool:
        return self.params.min_person_score > 0 or self.params.min_presence > 0

    def person_probability(self, image: np.ndarray) -> np.ndarray:
        result = self._segmenter.process(np.ascontiguousarray(image))
        return np.asarray(result.segmentation_mask, dtype=np.float32)

    def person_scores(self, image: np.ndarray) -> dict:
        """BlazePose's person_score and presence_score (0 when it finds no person or is not run)."""
        if self._person is None:
            return {}
        from annotators.pose import mediapipe_pose

        return mediapipe_pose(self._person, image)[1]

    def annotate(self, inputs, image_ids):
        p = self.params
        minimums = {"person_score": p.min_person_score, "presence_score": p.min_presence,
                    "mask_confident_share": p.min_confident_share}
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            prob = resize_to(self.person_probability(image), h, w)
            confidence = {**mask_confidence(gate_view(prob, p.gate_region), p.threshold),
                          **self.person_scores(image)}
            out.append(split_by_mask(image, prob > p.threshold, p.min_area, p.max_area, p.gate_region,
                                     confidence, minimums))
        return out
