"""Colour-space nodes computed on the CPU: the greyscale image (colorization source, Graph200K's `gray`)."""

from __future__ import annotations

import cv2
from pydantic import Field

from annotators.base import Annotator, NodeOutput, Resources
from annotators.quality import GateParams, gate_view, no_op_quality
from annotators.registry import register


class GrayscaleParams(GateParams):
    # A grey photo's greyscale version is the photo itself: quality `no_op` when fewer than
    # `no_op_min_changed` of the pixels differ by more than `no_op_delta` (annotators/quality.py).
    no_op_min_changed: float = Field(0.001, ge=0.0, le=1.0)
    no_op_delta: float = Field(4.0, ge=0.0, le=255.0)


@register
class Grayscale(Annotator):
    """ITU-R BT.601 luma (OpenCV's RGB2GRAY), stored as single-channel 8-bit PNG.

    This is both VIRAL's colorization source (desaturated target) and Graph200K's `gray`
    degradation, so there is one producer of the `gray` node.
    """

    name = "grayscale"
    produces = ("gray",)
    Params = GrayscaleParams
    resources = Resources(batch_size=64, concurrency=2)

    def annotate(self, inputs, image_ids):
        p = self.params
        out = []
        for item in inputs:
            grey = cv2.cvtColor(item["image"], cv2.COLOR_RGB2GRAY)
            quality = no_op_quality(gate_view(item["image"], p.gate_region), gate_view(grey, p.gate_region),
                                    p.no_op_min_changed, p.no_op_delta)
            out.append({"gray": NodeOutput(grey, {}, quality)})
        return out
