"""Model-backed edge maps through controlnet_aux: HED, PiDiNet, line art (standard, anime), MLSD, TEED.

Also home of `AuxDetectorAnnotator`, the shared wrapper for every annotator backed by one
controlnet_aux detector (depth, normals and pose reuse it). controlnet_aux detectors take one
image at a time, so `annotate` loops; each map is computed at `resolution` (short side,
rounded to a multiple of 64 by controlnet_aux) and resized back to the source size with the
line-preserving resize (max over each pixel's footprint, core/map_resize.py), so thin
edges keep their strength instead of averaging away. An edge map with fewer than
`min_edge_fraction` pixels at or above `edge_threshold` gets quality `few_edges`.

Every edge node is single-channel 8-bit (H x W), white edges on black, as controlnet_aux
draws them. Weights are the files ControlNet's annotators publish (`lllyasviel/Annotators`,
TEED from `fal-ai/teed`).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, resize_to
from core.weights import WeightSpec
from annotators.quality import GateRegion, edge_quality, gate_view
from annotators.registry import register

ANNOTATORS_REPO = "lllyasviel/Annotators"


class AuxParams(AnnotatorParams):
    # Short side the model sees; controlnet_aux rounds it to a multiple of 64.
    resolution: int = Field(512, ge=64, le=4096)
    # fp16 runs the fp32 detector under CUDA autocast (controlnet_aux feeds fp32 tensors);
    # ignored on CPU, where everything stays fp32.
    dtype: Literal["fp32", "fp16"] = "fp32"


class EdgeParams(AuxParams):
    # Quality `few_edges` (never sampled) when fewer than `min_edge_fraction` of the pixels reach
    # `edge_threshold` (8-bit): the map of a flat or near-constant photo.
    min_edge_fraction: float = Field(0.001, ge=0.0, le=1.0)
    edge_threshold: int = Field(128, ge=1, le=255)
    gate_region: GateRegion = "centre_square"  # where the gate looks (annotators/quality.py)


class AuxDetectorAnnotator(Annotator):
    """An annotator backed by one controlnet_aux detector object.

    Subclasses set `name`, `produces`, `weights` and implement `_build(paths)` (real weights:
    the resolved local paths of `weights`, in order), `_build_random(size)` (same classes,
    random init) and `_detect(image)` (one RGB uint8 image -> map at detect resolution).
    """

    Params: ClassVar[type[AuxParams]] = AuxParams
    resources = Resources(batch_size=8, concurrency=1, num_gpus=0.0)

    def _build(self, paths: list[Path]) -> Any:
        raise NotImplementedError

    def _build_random(self, size: str) -> Any:
        raise NotImplementedError

    def _detect(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _node_output(self, detected: np.ndarray, image: np.ndarray) -> dict[str, NodeOutput]:
        """Default (edge and line maps): one grey map (first channel) at the source size, lines kept."""
        h, w = image.shape[:2]
        grey = detected[..., 0] if detected.ndim == 3 else detected
        edges = resize_to(np.ascontiguousarray(grey), h, w, kind="lines")
        p = self.params
        quality = None
        if isinstance(p, EdgeParams):
            quality = edge_quality(gate_view(edges, p.gate_region), p.min_edge_fraction, p.edge_threshold)
        return {self.produces[0]: NodeOutput(edges, {}, quality)}

    def load(self) -> None:
        from core.weights import resolve

        paths = [resolve(spec, self.models_dir) for spec in self.weights]
        self._detector = self._build(paths)
        self._finish_load()

    def load_random(self, size: str = "tiny") -> None:
        import torch

        if size not in ("tiny", "full"):
            raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
        torch.manual_seed(0)  # the same random model in every process
        self._detector = self._build_random(size)
        self._finish_load()

    def _finish_load(self) -> None:
        for module in self._modules():
            module.eval()
            module.to(self.device)

    def _modules(self) -> list[Any]:
        """torch modules inside the detector (for eval/to); subclasses with odd layouts override."""
        det = self._detector
        found = []
        for attr in ("netNetwork", "model", "model_coarse"):
            m = getattr(det, attr, None)
            if m is not None and hasattr(m, "parameters"):
                found.append(m)
        return found

    def _autocast(self):
        import torch

        if self.device.startswith("cuda") and self.params.dtype == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def annotate(self, inputs, image_ids):
        import torch

        out = []
        with torch.inference_mode(), self._autocast():
            for item in inputs:
                image = item["image"]
                out.append(self._node_output(self._detect(image), image))
        return out


def _load_state(module, path: Path, *, key: str | None = None, strip_prefix: str = "module."):
    """Load a checkpoint into a controlnet_aux module (state dict, optionally under `key`)."""
    import torch

    state = torch.load(path, map_location="cpu")
    if key is not None:
        state = state[key]
    state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v for k, v in state.items()}
    module.load_state_dict(state)
    return module


# --- HED ---------------------------------------------------------------------------------


class HedParams(EdgeParams):
    safe: bool = False  # controlnet_aux's "safe" quantisation of the soft edges


@register
class Hed(AuxDetectorAnnotator):
    """HED soft edges (ControlNet's Apache-2 re-implementation, `ControlNetHED.pth`)."""

    name = "hed"
    produces = ("hed",)
    Params = HedParams
    weights = (WeightSpec(ANNOTATORS_REPO, "ControlNetHED.pth", "HED soft edges"),)

    def _build(self, paths):
        from controlnet_aux.hed import HEDdetector

        return HEDdetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        # HED has one fixed architecture (14.7M params); "tiny" differs only in input size.
        from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

        return HEDdetector(ControlNetHED_Apache2())

    def _detect(self, image):
        r = self.params.resolution
        return self._detector(image, detect_resolution=r, image_resolution=r, safe=self.params.safe, output_type="np")


# --- PiDiNet -----------------------------------------------------------------------------


class PidiParams(EdgeParams):
    safe: bool = False
    apply_filter: bool = False  # binarise at 0.5 (controlnet_aux option)


@register
class Pidinet(AuxDetectorAnnotator):
    """PiDiNet soft edges (`table5_pidinet.pth`)."""

    name = "pidinet"
    produces = ("pidinet",)
    Params = PidiParams
    weights = (WeightSpec(ANNOTATORS_REPO, "table5_pidinet.pth", "PiDiNet soft edges"),)

    def _build(self, paths):
        from controlnet_aux.pidi import PidiNetDetector

        return PidiNetDetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        from controlnet_aux.pidi import PidiNetDetector, pidinet

        return PidiNetDetector(pidinet())  # one architecture (0.7M params)

    def _detect(self, image):
        p = self.params
        return self._detector(image, detect_resolution=p.resolution, image_resolution=p.resolution, safe=p.safe,
                              apply_filter=p.apply_filter, output_type="np")


# --- Line art ----------------------------------------------------------------------------


class LineartParams(EdgeParams):
    coarse: bool = False  # the coarse model (sk_model2.pth) instead of the fine one


@register
class Lineart(AuxDetectorAnnotator):
    """Line art, standard model (`sk_model.pth`, coarse `sk_model2.pth`); white lines on black."""

    name = "lineart"
    produces = ("lineart",)
    Params = LineartParams
    weights = (
        WeightSpec(ANNOTATORS_REPO, "sk_model.pth", "line art (fine)"),
        WeightSpec(ANNOTATORS_REPO, "sk_model2.pth", "line art (coarse)"),
    )

    def _build(self, paths):
        # Built here rather than by from_pretrained: the two files may resolve to different folders.
        from controlnet_aux.lineart import Generator, LineartDetector

        fine = _load_state(Generator(3, 1, 3), paths[0])
        coarse = _load_state(Generator(3, 1, 3), paths[1])
        return LineartDetector(fine, coarse)

    def _build_random(self, size):
        from controlnet_aux.lineart import Generator, LineartDetector

        blocks = 3 if size == "full" else 1
        return LineartDetector(Generator(3, 1, blocks), Generator(3, 1, blocks))

    def _detect(self, image):
        p = self.params
        return self._detector(image, coarse=p.coarse, detect_resolution=p.resolution, image_resolution=p.resolution,
                              output_type="np")


@register
class LineartAnime(AuxDetectorAnnotator):
    """Line art, anime model (`netG.pth`, a U-Net); white lines on black."""

    name = "lineart_anime"
    produces = ("lineart_anime",)
    Params = EdgeParams
    weights = (WeightSpec(ANNOTATORS_REPO, "netG.pth", "anime line art U-Net"),)

    def _build(self, paths):
        from controlnet_aux.lineart_anime import LineartAnimeDetector

        return LineartAnimeDetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator
        import torch

        norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
        base_filters = 64 if size == "full" else 8  # 54M params full, 0.9M tiny
        return LineartAnimeDetector(UnetGenerator(3, 1, 8, base_filters, norm_layer=norm, use_dropout=False))

    def _detect(self, image):
        r = self.params.resolution
        return self._detector(image, detect_resolution=r, image_resolution=r, output_type="np")


# --- MLSD --------------------------------------------------------------------------------


class MlsdParams(EdgeParams):
    score_threshold: float = Field(0.1, ge=0.0, le=1.0)  # controlnet_aux thr_v
    distance_threshold: float = Field(0.1, ge=0.0)  # controlnet_aux thr_d (min line length)


@register
class Mlsd(AuxDetectorAnnotator):
    """M-LSD straight line segments, drawn 1 px white on black (`mlsd_large_512_fp32.pth`)."""

    name = "mlsd"
    produces = ("mlsd",)
    Params = MlsdParams
    weights = (WeightSpec(ANNOTATORS_REPO, "mlsd_large_512_fp32.pth", "M-LSD large"),)

    def _build(self, paths):
        from controlnet_aux.mlsd import MLSDdetector

        return MLSDdetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        from controlnet_aux.mlsd import MLSDdetector, MobileV2_MLSD_Large

        return MLSDdetector(MobileV2_MLSD_Large())  # one architecture (1.5M params)

    def _detect(self, image):
        p = self.params
        return self._detector(image, thr_v=p.score_threshold, thr_d=p.distance_threshold,
                              detect_resolution=p.resolution, image_resolution=p.resolution, output_type="np")


# --- TEED --------------------------------------------------------------------------------


class TeedParams(EdgeParams):
    safe_steps: int = Field(2, ge=0, le=8)  # controlnet_aux's quantisation steps (0: off)


@register
class Teed(AuxDetectorAnnotator):
    """TEED tiny efficient edge detector (`fal-ai/teed` `5_model.pth`, as controlnet_aux documents)."""

    name = "teed"
    produces = ("teed",)
    Params = TeedParams
    weights = (WeightSpec("fal-ai/teed", "5_model.pth", "TEED edges"),)

    def _build(self, paths):
        from controlnet_aux.teed import TEEDdetector

        return TEEDdetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        from controlnet_aux.teed import TEEDdetector
        from controlnet_aux.teed.ted import TED

        return TEEDdetector(TED())  # one architecture (58K params)

    def _detect(self, image):
        p = self.params
        return self._detector(image, detect_resolution=p.resolution, safe_steps=p.safe_steps, output_type="np")
