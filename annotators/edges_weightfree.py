"""Edge maps that need no weights. Model-backed edges (HED, PiDiNet, ...) live in their own module."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, resize_to
from annotators.registry import register


class CannyParams(AnnotatorParams):
    low_threshold: int = Field(100, ge=0, le=255)
    high_threshold: int = Field(200, ge=0, le=255)
    # Graph200K detects at 512 px on the short side; the map is resized back to the source size.
    resolution: int = Field(512, ge=64, le=4096)


@register
class Canny(Annotator):
    """Canny edges through controlnet_aux's CannyDetector; single-channel 8-bit PNG."""

    name = "canny"
    produces = ("canny",)
    Params = CannyParams
    resources = Resources(batch_size=32, concurrency=2)

    def load(self) -> None:
        from controlnet_aux.canny import CannyDetector

        self._detector = CannyDetector()

    def annotate(self, inputs, image_ids):
        p = self.params
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            edges = self._detector(image, low_threshold=p.low_threshold, high_threshold=p.high_threshold,
                                   detect_resolution=p.resolution, image_resolution=p.resolution, output_type="np")
            edges = resize_to(np.ascontiguousarray(edges[..., 0]), h, w)
            out.append({"canny": NodeOutput(edges)})
        return out
