"""Relative depth: Depth Anything V2 (transformers, default), MiDaS and ZoeDepth (controlnet_aux).

All three produce node `depth` with ONE encoding, so any producer can stand in for another:
  H x W, source size, single channel, near = bright, normalised per image.
  - 8-bit (default): 0..255. Depth Anything V2 and MiDaS predict relative inverse depth
    (disparity), mapped min..max -> 0..255. ZoeDepth predicts metric depth; controlnet_aux maps its
    2nd..85th percentile to 255..0 (inverted, so near is bright too) and clips.
  - Depth Anything V2 also offers `bits=16` (uint16 0..65535, same mapping) for consumers that
    need the precision; the sampler must then scale to 8 bits (`>> 8`) for display.
meta records {"encoding", "near", "bits", "model"}.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, resize_to
from core.weights import WeightSpec
from annotators.edges_models import ANNOTATORS_REPO, AuxDetectorAnnotator, AuxParams
from annotators.quality import constant_quality, relative_spread
from annotators.registry import register

DEPTH_ANYTHING_V2_REPOS = {
    "small": "depth-anything/Depth-Anything-V2-Small-hf",
    "base": "depth-anything/Depth-Anything-V2-Base-hf",
    "large": "depth-anything/Depth-Anything-V2-Large-hf",
}

# The published architectures (config.json of each repo): DINOv2 backbone + DPT head.
_DAV2_ARCH = {
    "small": dict(hidden=384, heads=6, layers=12, out=[3, 6, 9, 12], neck=[48, 96, 192, 384], fusion=64),
    "base": dict(hidden=768, heads=12, layers=12, out=[3, 6, 9, 12], neck=[96, 192, 384, 768], fusion=128),
    "large": dict(hidden=1024, heads=16, layers=24, out=[5, 12, 18, 24], neck=[256, 512, 1024, 1024], fusion=256),
    # tests only: same classes, a few thousand parameters
    "tiny": dict(hidden=32, heads=2, layers=4, out=[1, 2, 3, 4], neck=[8, 16, 32, 32], fusion=16),
}


def normalise_depth(pred: np.ndarray, bits: int = 8) -> np.ndarray:
    """Map a relative inverse-depth (disparity) prediction min..max to 0..2^bits-1 (near = bright).

    A constant prediction (no depth signal) maps to all zeros rather than dividing by zero.
    """
    pred = np.asarray(pred, dtype=np.float64)
    lo, hi = float(pred.min()), float(pred.max())
    top = (1 << bits) - 1
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        scaled = np.zeros_like(pred)
    else:
        scaled = (pred - lo) / (hi - lo) * top
    return np.rint(scaled).astype(np.uint16 if bits == 16 else np.uint8)


def depth_anything_config(arch: str):
    """A transformers DepthAnythingConfig of one published size (or "tiny" for tests)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    a = _DAV2_ARCH[arch]
    backbone = Dinov2Config(
        hidden_size=a["hidden"], num_attention_heads=a["heads"], num_hidden_layers=a["layers"],
        intermediate_size=4 * a["hidden"], image_size=518, patch_size=14, layerscale_value=1.0,
        out_indices=a["out"], reshape_hidden_states=False, apply_layernorm=True,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=a["hidden"],
        neck_hidden_sizes=a["neck"], fusion_hidden_size=a["fusion"], head_hidden_size=32,
        depth_estimation_type="relative",
    )


def group_by_shape(tensors: list) -> dict[tuple, list[int]]:
    """Indices of same-shaped tensors, in first-seen order: each group is one batched forward."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(i)
    return groups


class DepthAnythingParams(AnnotatorParams):
    variant: Literal["small", "base", "large"] = "small"
    # Short side fed to the model (the processor keeps the aspect ratio, multiples of 14).
    resolution: int = Field(518, ge=28, le=2044)
    bits: Literal[8, 16] = 8
    # auto: bf16 on CUDA, fp32 on CPU.
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Quality `constant_map` (never sampled) when the raw prediction's 1st-99th percentile range is
    # below this fraction of its largest magnitude: no depth signal (a flat or blank photo), which
    # the min-max normalisation would otherwise stretch into full-range noise.
    min_relative_spread: float = Field(0.02, ge=0.0, le=1.0)


@register
class DepthAnythingV2(Annotator):
    """Depth Anything V2 through transformers' AutoModelForDepthEstimation; batched per input shape."""

    name = "depth_anything_v2"
    produces = ("depth",)
    Params = DepthAnythingParams
    resources = Resources(batch_size=16, concurrency=1, num_gpus=0.0)
    # Default (small) first; base/large are selected with params.variant.
    weights = tuple(WeightSpec(repo, None, f"Depth Anything V2 {v}") for v, repo in DEPTH_ANYTHING_V2_REPOS.items())

    @property
    def weight_spec(self) -> WeightSpec:
        return next(w for w in self.weights if w.repo_id == DEPTH_ANYTHING_V2_REPOS[self.params.variant])

    def required_weights(self) -> tuple[WeightSpec, ...]:
        return (self.weight_spec,)

    def _torch_dtype(self):
        import torch

        choice = self.params.dtype
        if choice == "auto":
            choice = "bf16" if self.device.startswith("cuda") else "fp32"
        if not self.device.startswith("cuda"):
            choice = "fp32"  # half precision on CPU is slow and inexact
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]

    def _make_processor(self):
        # The arguments of the published preprocessor_config.json, with our resolution.
        from transformers import DPTImageProcessor

        r = self.params.resolution
        return DPTImageProcessor(
            do_resize=True, size={"height": r, "width": r}, keep_aspect_ratio=True, ensure_multiple_of=14,
            resample=3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_pad=False,
        )

    def load(self) -> None:
        from transformers import AutoModelForDepthEstimation

        from core.weights import resolve

        path = resolve(self.weight_spec, self.models_dir)
        model = AutoModelForDepthEstimation.from_pretrained(path, dtype=self._torch_dtype())
        self._finish(model)

    def load_random(self, size: str = "tiny") -> None:
        import torch
        from transformers import AutoModelForDepthEstimation

        arch = {"tiny": "tiny", "full": self.params.variant}[size]
        torch.manual_seed(0)
        model = AutoModelForDepthEstimation.from_config(depth_anything_config(arch))
        self._finish(model.to(self._torch_dtype()))

    def _finish(self, model) -> None:
        self._model = model.eval().to(self.device)
        self._processor = self._make_processor()

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Float32 relative inverse depth per image, at the model's input resolution."""
        import torch

        pixels = [self._processor(images=im, return_tensors="pt")["pixel_values"][0] for im in images]
        preds: list[np.ndarray | None] = [None] * len(images)
        with torch.inference_mode():
            for shape, idx in group_by_shape(pixels).items():
                batch = torch.stack([pixels[i] for i in idx]).to(self.device, self._model.dtype)
                depth = self._model(pixel_values=batch).predicted_depth.float().cpu().numpy()
                for j, i in enumerate(idx):
                    preds[i] = depth[j]
        return preds

    def annotate(self, inputs, image_ids):
        images = [item["image"] for item in inputs]
        out = []
        for image, pred in zip(images, self.predict(images)):
            h, w = image.shape[:2]
            full = resize_to(pred, h, w)  # bilinear on float, then quantise once
            quality = "constant_map" if relative_spread(pred) < self.params.min_relative_spread else None
            out.append({"depth": NodeOutput(normalise_depth(full, self.params.bits), {
                "encoding": "relative_inverse_depth_minmax", "near": "bright", "bits": self.params.bits,
                "model": self.weight_spec.repo_id,
            }, quality)})
        return out


# --- controlnet_aux alternatives -----------------------------------------------------------


class AuxDepthParams(AuxParams):
    # Quality `constant_map` when the 8-bit map's 1st-99th percentile range is below this
    # (controlnet_aux normalises each map itself, so only a constant map is detectable here).
    min_spread: float = Field(2.0, ge=0.0, le=255.0)


class _AuxDepth(AuxDetectorAnnotator):
    """A controlnet_aux depth detector: its first channel, back at the image's size, 8-bit."""

    produces = ("depth",)
    Params = AuxDepthParams
    encoding = ""  # how the detector normalises depth (recorded in each output's meta)

    def _detect(self, image):
        r = self.params.resolution
        return self._detector(image, detect_resolution=r, image_resolution=r, output_type="np")

    def _node_output(self, detected, image):
        h, w = image.shape[:2]
        arr = resize_to(np.ascontiguousarray(detected[..., 0]), h, w)
        spec = self.weights[0]
        meta = {"encoding": self.encoding, "near": "bright", "bits": 8, "model": f"{spec.repo_id}/{spec.filename}"}
        return {"depth": NodeOutput(arr, meta, constant_quality(arr, self.params.min_spread))}


@register
class DepthMidas(_AuxDepth):
    """MiDaS DPT-Hybrid through controlnet_aux (`dpt_hybrid-midas-501f0c75.pt`)."""

    name = "depth_midas"
    encoding = "relative_inverse_depth_minmax"
    weights = (WeightSpec(ANNOTATORS_REPO, "dpt_hybrid-midas-501f0c75.pt", "MiDaS v3 DPT-Hybrid"),)

    def _build(self, paths):
        from controlnet_aux.midas import MidasDetector

        return MidasDetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        # The DPT-Hybrid network (123M params) has no smaller config; tests use a small resolution.
        from controlnet_aux.midas import MidasDetector
        from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

        return MidasDetector(DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True))


@register
class DepthZoe(_AuxDepth):
    """ZoeDepth (NYU+KITTI `ZoeD_M12_N.pt`, BEiT-L backbone) through controlnet_aux."""

    name = "depth_zoe"
    encoding = "metric_depth_percentile_2_85_inverted"
    weights = (WeightSpec(ANNOTATORS_REPO, "ZoeD_M12_N.pt", "ZoeDepth M12 N"),)

    def _build(self, paths):
        from controlnet_aux.zoe import ZoeDetector

        return ZoeDetector.from_pretrained(str(paths[0].parent), filename=paths[0].name)

    def _build_random(self, size):
        from controlnet_aux.zoe import ZoeDetector
        from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
        from controlnet_aux.zoe.zoedepth.utils.config import get_config

        conf = get_config("zoedepth", "infer")
        if size == "tiny":
            # A smaller MiDaS core (DPT-Hybrid) at 128 px instead of BEiT-L at 384x512.
            conf = dict(conf, midas_model_type="DPT_Hybrid", img_size=[128, 128], force_keep_ar=False)
        return ZoeDetector(ZoeDepth.build_from_config(conf))
