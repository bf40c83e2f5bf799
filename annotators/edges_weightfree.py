"""Edge maps that need no weights. Model-backed edges (HED, PiDiNet, ...) live in their own module."""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from annotators.base import Annotator, NodeOutput, Resources, resize_to
from annotators.quality import GateParams, edge_quality, gate_view
from annotators.registry import register


class CannyParams(GateParams):
    low_threshold: int = Field(100, ge=0, le=255)
    high_threshold: int = Field(200, ge=0, le=255)
    # Short side edges are detected at (rounded to a multiple of 64, as controlnet_aux does). Graph200K's
    # setting is 100/200 at 512 px (the default); None detects at the source's own size. A map
    # detected at another size is brought back to the source's size with the line-preserving
    # resize (max over each pixel's footprint; core/map_resize.py), so one-pixel edges survive.
    resolution: int | None = Field(512, ge=64, le=4096)
    # Quality `few_edges` (never sampled) when fewer than this fraction of the pixels of
    # `gate_region` (default the centre square the exporter keeps) are edges: a flat or smooth
    # photo. Photos have 2-10 % edge pixels at 100/200.
    min_edge_fraction: float = Field(0.001, ge=0.0, le=1.0)


def _at_resolution(image: np.ndarray, resolution: int) -> np.ndarray:
    """The image scaled so its short side is `resolution`, both sides rounded to a multiple of 64:
    the size ControlNet's annotators (controlnet_aux's CannyDetector) detect at, Lanczos up, area down."""
    h, w = image.shape[:2]
    k = resolution / min(h, w)
    size = (int(np.round(w * k / 64.0)) * 64, int(np.round(h * k / 64.0)) * 64)
    return cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4 if k > 1 else cv2.INTER_AREA)


@register
class Canny(Annotator):
    """Canny edges (OpenCV's operator) at ControlNet's detection size; single-channel 8-bit PNG.

    The same maps as controlnet_aux's CannyDetector, without importing that package (torch,
    torchvision, timm, mediapipe: 5 s of a small incremental run's start-up for two OpenCV calls)."""

    name = "canny"
    produces = ("canny",)
    version = "2"  # 2: line-preserving resize back to the source size, few_edges gate
    Params = CannyParams
    resources = Resources(batch_size=32, concurrency=2)

    def annotate(self, inputs, image_ids):
        p = self.params
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            detect = image if p.resolution is None else _at_resolution(image, p.resolution)
            edges = cv2.Canny(np.ascontiguousarray(detect), p.low_threshold, p.high_threshold)
            edges = resize_to(np.ascontiguousarray(edges), h, w, kind="lines")
            quality = edge_quality(gate_view(edges, p.gate_region), p.min_edge_fraction)
            out.append({"canny": NodeOutput(edges, {}, quality)})
        return out
