"""Image embeddings and perceptual hashes as nodes: what splits, retrieval, mining and the leakage check read.

Computed by the annotate stage like any annotator (model ones as Ray actor pools on GPUs), so
no later stage embeds images on the driver. Vectors are stored as little-endian float32
(format "f32", width = dimension), L2-normalised; the hash as 8 raw bytes (format "u8").
  embed_colour_stats -> embedding_colour_stats   weight-free colour/gradient/DCT statistics
  embed_clip         -> embedding_clip           open_clip ViT-L/14 (weights from the models dir / HF cache)
  embed_dinov2       -> embedding_dinov2         DINOv2 through transformers (CLS token)
  image_dhash        -> image_dhash              64-bit difference hash (the leakage report's own check)
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources
from core.weights import WeightSpec
from annotators.registry import register


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ColourStatsParams(AnnotatorParams):
    image_size: int = Field(128, ge=32, le=1024)  # side the statistics are computed at


@register
class ColourStatsEmbedder(Annotator):
    name = "embed_colour_stats"
    produces = ("embedding_colour_stats",)
    Params = ColourStatsParams
    resources = Resources(batch_size=16)

    def load(self) -> None:
        from mining.embed import ColourGradientStats

        self.embedder = ColourGradientStats(self.params.image_size)

    def annotate(self, inputs, image_ids):
        vectors = _unit(self.embedder.embed_images([x["image"] for x in inputs]))
        return [{self.produces[0]: NodeOutput(v, {"embedder": self.embedder.key})} for v in vectors]


class ClipParams(AnnotatorParams):
    model_name: str = "ViT-L-14"
    pretrained: str = "openai"
    weights_repo: str | None = None  # a repo id holding open_clip_model.safetensors


class OpenClipAnnotator(Annotator):
    """Base of the annotators built on open_clip's towers (params: model_name, pretrained, weights_repo)."""

    def open_clip(self, random_size: str | None = None):
        """The towers with real weights (MissingWeightsError naming the repo when absent), or, for
        tests and benchmarks, random ones: `random_size` "tiny" (a small config) or "full"."""
        from mining.embed import OpenClipEmbedder

        p = self.params
        clip = OpenClipEmbedder(p.model_name, p.pretrained, models_dir=self.models_dir, device=self.device,
                                weights_repo=p.weights_repo)
        if random_size is None:
            clip.load()
        else:
            if random_size == "tiny":
                clip.model_name = _tiny_clip_config()
            clip.load_random()
        return clip


@register
class ClipEmbedder(OpenClipAnnotator):
    name = "embed_clip"
    produces = ("embedding_clip",)
    Params = ClipParams
    resources = Resources(batch_size=64, num_gpus=1.0)
    weights = (WeightSpec("timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
                          "open_clip ViT-L/14 image tower"),)

    def load(self) -> None:
        self.embedder = self.open_clip()

    def load_random(self, size: str = "tiny") -> None:
        self.embedder = self.open_clip(size)

    def annotate(self, inputs, image_ids):
        vectors = self.embedder.embed_images([x["image"] for x in inputs])
        return [{self.produces[0]: NodeOutput(v.astype(np.float32), {"embedder": self.embedder.key})}
                for v in vectors]


def _tiny_clip_config() -> str:
    """Register a tiny open_clip architecture (tests and CPU benchmarks) and return its name."""
    import json
    import tempfile
    from pathlib import Path

    import open_clip

    name = "vicl-tiny-clip"
    if name not in open_clip.list_models():
        cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
        path = Path(tempfile.mkdtemp(prefix="vicl-clip-")) / f"{name}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)
    return name


class DinoParams(AnnotatorParams):
    repo_id: str = "facebook/dinov2-base"
    image_size: int = Field(224, ge=14)


@register
class DinoV2Embedder(Annotator):
    name = "embed_dinov2"
    produces = ("embedding_dinov2",)
    Params = DinoParams
    resources = Resources(batch_size=64, num_gpus=1.0)
    weights = (WeightSpec("facebook/dinov2-base", None, "DINOv2 ViT-B/14 image embedder"),)

    def load(self) -> None:
        from transformers import Dinov2Model

        from core.weights import resolve

        path = resolve(WeightSpec(self.params.repo_id, None, "DINOv2 image embedder"), self.models_dir)
        self._set(Dinov2Model.from_pretrained(path))

    def load_random(self, size: str = "tiny") -> None:
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                              image_size=self.params.image_size, patch_size=14) if size == "tiny" else Dinov2Config()
        self._set(Dinov2Model(config))

    def _set(self, model) -> None:
        self.model = model.eval().to(self.device)

    def annotate(self, inputs, image_ids):
        import cv2
        import torch

        side = self.params.image_size
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        batch = np.stack([(cv2.resize(x["image"], (side, side), interpolation=cv2.INTER_AREA) / 255.0 - mean) / std
                          for x in inputs]).astype(np.float32)
        with torch.inference_mode():
            out = self.model(pixel_values=torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device))
        vectors = _unit(out.pooler_output.float().cpu().numpy())
        return [{self.produces[0]: NodeOutput(v, {"embedder": f"dinov2:{self.params.repo_id}"})} for v in vectors]


@register
class DHash(Annotator):
    """A 64-bit difference hash: a signal independent of every embedder, so the leakage report
    re-checks the near-duplicate split with something other than what built it."""

    name = "image_dhash"
    produces = ("image_dhash",)
    resources = Resources(batch_size=32)

    def annotate(self, inputs, image_ids):
        from core.perceptual_hash import dhash64

        return [{self.produces[0]: NodeOutput(np.frombuffer(dhash64(x["image"]), np.uint8).copy(), {})}
                for x in inputs]
