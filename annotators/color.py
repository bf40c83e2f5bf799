"""Colour-space nodes computed on the CPU: the greyscale image (colorization source, Graph200K's `gray`)."""

from __future__ import annotations

import cv2

from annotators.base import Annotator, NodeOutput, Resources
from annotators.registry import register


@register
class Grayscale(Annotator):
    """ITU-R BT.601 luma (OpenCV's RGB2GRAY), stored as single-channel 8-bit PNG.

    This is both VIRAL's colorization source (desaturated target) and Graph200K's `gray`
    degradation, so there is one producer of the `gray` node.
    """

    name = "grayscale"
    produces = ("gray",)
    resources = Resources(batch_size=64, concurrency=2)

    def annotate(self, inputs, image_ids):
        return [{"gray": NodeOutput(cv2.cvtColor(item["image"], cv2.COLOR_RGB2GRAY))} for item in inputs]
