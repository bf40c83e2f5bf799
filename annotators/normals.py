"""Surface normals: NormalBae through controlnet_aux (`scannet.pt` from lllyasviel/Annotators).

Node `normal`: H x W x 3 uint8 at the source size, the unit normal n mapped per channel as
(n + 1) / 2 * 255 in NormalBae's camera frame (controlnet_aux's convention, as ControlNet's
normalbae condition). Graph200K's release used DSINE; NormalBae is the controlnet_aux model
with the same output format.
"""

from __future__ import annotations

import contextlib
import io
import types

import numpy as np
from pydantic import Field

from annotators.base import NodeOutput, resize_to
from core.weights import WeightSpec
from annotators.edges_models import ANNOTATORS_REPO, AuxDetectorAnnotator, AuxParams
from annotators.quality import constant_quality
from annotators.registry import register


def normalbae_args() -> types.SimpleNamespace:
    """The architecture arguments controlnet_aux builds NNET with for the scannet checkpoint."""
    return types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                 sampling_ratio=0.4, importance_ratio=0.7)


class NormalParams(AuxParams):
    # Quality `constant_map` (never sampled) when no channel's 1st-99th percentile range reaches
    # this (8-bit): one normal everywhere, the map of a blank photo.
    min_spread: float = Field(4.0, ge=0.0, le=255.0)


@register
class NormalBae(AuxDetectorAnnotator):
    """NormalBae (EfficientNet-B5 encoder + uncertainty-guided decoder)."""

    name = "normal_bae"
    produces = ("normal",)
    Params = NormalParams
    weights = (WeightSpec(ANNOTATORS_REPO, "scannet.pt", "NormalBae ScanNet"),)

    def _build(self, paths):
        from controlnet_aux.normalbae import NormalBaeDetector

        with contextlib.redirect_stdout(io.StringIO()):  # NNET prints progress lines while building
            return NormalBaeDetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        # One architecture (72M params, encoder fixed to tf_efficientnet_b5_ap); tests use a small resolution.
        from controlnet_aux.normalbae import NormalBaeDetector
        from controlnet_aux.normalbae.nets.NNET import NNET

        with contextlib.redirect_stdout(io.StringIO()):
            return NormalBaeDetector(NNET(normalbae_args()))

    def _detect(self, image):
        r = self.params.resolution
        return self._detector(image, detect_resolution=r, image_resolution=r, output_type="np")

    def _node_output(self, detected, image):
        h, w = image.shape[:2]
        arr = resize_to(np.ascontiguousarray(detected), h, w, kind="continuous")
        return {"normal": NodeOutput(arr, {"encoding": "(n+1)/2*255 rgb", "model": f"{ANNOTATORS_REPO}/scannet.pt"},
                                     constant_quality(arr, self.params.min_spread))}
