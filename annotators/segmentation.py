"""Semantic and entity (panoptic) segmentation through transformers.

- `semantic_seg` -> `uniformer` (Graph200K's semantic-segmentation condition; the name is kept,
  the model is any `AutoModelForSemanticSegmentation`, SegFormer-B5 ADE20K by default). Classes
  are painted with `render.semantic_palette()`, fixed across images and runs (class k -> row k).
- `entity_seg` -> `entity_seg` (VIRAL's entity segmentation): Mask2Former panoptic segments, each
  entity in a random distinct colour drawn with seed_for(image_id, "entity_seg"); unassigned
  pixels are black. meta: entities [{colour, label, label_id, score, area}] and confidence
  {mean_score: the entities' area-weighted mean query score}, gated by `min_mean_score`
  (quality `low_confidence`, annotators/quality.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from annotators import render
from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, seed_for
from core.weights import WeightSpec
from annotators.quality import GateRegion, gate_view, mask_quality, rounded, score_quality
from annotators.registry import register

DType = Literal["auto", "float32", "bfloat16", "float16"]


def torch_dtype(device: str, name: str):
    """Half precision only on a GPU ("auto" = bf16 there); the CPU always computes in fp32."""
    import torch

    if not str(device).startswith("cuda"):
        return torch.float32
    return {"auto": torch.bfloat16, "float32": torch.float32, "bfloat16": torch.bfloat16,
            "float16": torch.float16}[name]


def resolve_repo(repo_id: str, models_dir):
    """Local folder of a whole HF repository (models dir, then HF cache) or MissingWeightsError."""
    from core.weights import resolve

    return resolve(WeightSpec(repo_id, None), models_dir)


# ----------------------------------------------------------------------------- semantic

SEMANTIC_DEFAULT = "nvidia/segformer-b5-finetuned-ade-640-640"


class SemanticParams(AnnotatorParams):
    repo_id: str = SEMANTIC_DEFAULT  # any AutoModelForSemanticSegmentation repo (UperNet, SegFormer, ...)
    dtype: DType = "auto"
    # Quality `constant_map` (never sampled) when one class covers more than this fraction of the
    # image: a single-colour label map teaches nothing about segmentation.
    max_class_fraction: float = Field(0.995, ge=0.0, le=1.0)


@register
class SemanticSegmentation(Annotator):
    """Per-pixel classes from a transformers semantic-segmentation model, fixed palette (node `uniformer`).

    The batch is stacked after the model's own image processor resizes every image to one
    size; logits are upsampled back to each source's size by the processor's post-processing.
    meta: repo_id, classes present [{label_id, label, colour, fraction}], largest first.
    """

    name = "semantic_seg"
    produces = ("uniformer",)
    Params = SemanticParams
    resources = Resources(batch_size=8, concurrency=1, num_gpus=0.25)
    weights = (WeightSpec(SEMANTIC_DEFAULT, None, "SegFormer-B5 fine-tuned on ADE20K (150 classes)"),)

    def load(self) -> None:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        path = resolve_repo(self.params.repo_id, self.models_dir)
        self._processor = AutoImageProcessor.from_pretrained(path)
        model = AutoModelForSemanticSegmentation.from_pretrained(
            path, dtype=torch_dtype(self.device, self.params.dtype))
        self._set(model, self._processor)

    def load_random(self, size: str = "tiny") -> None:
        import torch
        from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

        torch.manual_seed(0)
        if size == "tiny":
            cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                                  patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                                  mlp_ratios=[2, 2], decoder_hidden_size=16, num_labels=150)
            processor = SegformerImageProcessor(size={"height": 64, "width": 64})
        else:  # SegFormer-B5 at 640 px, as the default repo
            cfg = SegformerConfig(depths=[3, 6, 40, 3], hidden_sizes=[64, 128, 320, 512],
                                  decoder_hidden_size=768, num_labels=150)
            processor = SegformerImageProcessor(size={"height": 640, "width": 640})
        self._set(SegformerForSemanticSegmentation(cfg), processor)

    def _set(self, model, processor) -> None:
        self._model = model.to(self.device).eval()
        self._processor = processor
        self._labels = dict(getattr(model.config, "id2label", {}) or {})
        self._palette = render.semantic_palette(max(256, int(model.config.num_labels)))

    def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """H x W int class maps at each image's own size."""
        import torch

        batch = self._processor(images=images, return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            outputs = self._model(pixel_values=pixels)
        outputs.logits = outputs.logits.float()
        maps = self._processor.post_process_semantic_segmentation(
            outputs, target_sizes=[im.shape[:2] for im in images])
        return [m.cpu().numpy().astype(np.int64) for m in maps]

    def annotate(self, inputs, image_ids):
        images = [item["image"] for item in inputs]
        out = []
        for labels in self.predict(images):
            ids, counts = np.unique(labels, return_counts=True)
            order = np.argsort(-counts, kind="stable")
            classes = [{"label_id": int(ids[i]), "label": str(self._labels.get(int(ids[i]), int(ids[i]))),
                        "colour": [int(c) for c in self._palette[int(ids[i]) % len(self._palette)]],
                        "fraction": round(float(counts[i]) / labels.size, 6)} for i in order]
            top = classes[0]["fraction"] if classes else 1.0
            quality = "constant_map" if top > self.params.max_class_fraction else None
            out.append({"uniformer": NodeOutput(render.colour_labels(labels, self._palette),
                                                {"repo_id": self.params.repo_id, "classes": classes}, quality)})
        return out


# ----------------------------------------------------------------------------- entity / panoptic

ENTITY_DEFAULT = "facebook/mask2former-swin-large-coco-panoptic"


class EntityParams(AnnotatorParams):
    repo_id: str = ENTITY_DEFAULT  # a Mask2Former (or OneFormer-compatible) panoptic repo
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # query score kept as an entity
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)
    overlap_mask_area_threshold: float = Field(0.8, ge=0.0, le=1.0)
    dtype: DType = "auto"
    # Quality `empty_mask` (never sampled) when the entities together cover less than this fraction of
    # `gate_region` (default the centre square the exporter keeps; annotators/quality.py).
    min_area: float = Field(0.01, ge=0.0, le=1.0)
    gate_region: GateRegion = "centre_square"
    # Quality `low_confidence` when the entities' area-weighted mean query score is below this: the
    # model's own bar for one entity (Mask2Former's post-processing default, `threshold` above) held
    # for the map as a whole. At the default `threshold` every entity passes it already; with a lower
    # `threshold` (more entities) a map made mostly of doubtful segments is held back.
    # Not measured here (no Mask2Former weights offline).
    min_mean_score: float = Field(0.5, ge=0.0, le=1.0)


def entities_confidence(entities: list[tuple[np.ndarray, dict]]) -> dict:
    """mean_score: the entities' query scores weighted by their area (0 without any entity)."""
    areas = [int(m.sum()) for m, _ in entities]
    total = float(sum(areas))
    mean = sum(float(info.get("score", 0.0)) * a for (_, info), a in zip(entities, areas)) / total if total else 0.0
    return {"mean_score": rounded(mean)}


def panoptic_entities(segmentation: np.ndarray, segments_info: list[dict]) -> list[tuple[np.ndarray, dict]]:
    """(mask, info) per segment id that actually owns pixels, in segment-id order."""
    out = []
    for info in sorted(segments_info, key=lambda s: int(s["id"])):
        mask = segmentation == int(info["id"])
        if mask.any():
            out.append((mask, info))
    return out


@register
class EntitySegmentation(Annotator):
    """Mask2Former panoptic segmentation; every entity (thing or stuff) in a seeded distinct colour.

    Images run one at a time: Mask2Former's processor pads a batch to its largest image and the
    post-processing does not undo the padding, which would misplace masks.
    """

    name = "entity_seg"
    produces = ("entity_seg",)
    Params = EntityParams
    version = "2"  # 2: meta["confidence"], quality low_confidence
    resources = Resources(batch_size=4, concurrency=1, num_gpus=0.5)
    weights = (WeightSpec(ENTITY_DEFAULT, None, "Mask2Former Swin-L, COCO panoptic (133 classes)"),)

    def load(self) -> None:
        from transformers import AutoImageProcessor, Mask2FormerForUniversalSegmentation

        path = resolve_repo(self.params.repo_id, self.models_dir)
        processor = AutoImageProcessor.from_pretrained(path)
        model = Mask2FormerForUniversalSegmentation.from_pretrained(
            path, dtype=torch_dtype(self.device, self.params.dtype))
        self._set(model, processor)

    def load_random(self, size: str = "tiny") -> None:
        import torch
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor, SwinConfig

        torch.manual_seed(0)
        stages = ["stage1", "stage2", "stage3", "stage4"]
        if size == "tiny":
            backbone = SwinConfig(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                  out_features=stages)
            # A larger init spread so random mask logits are not all ~0 (else nothing passes thresholds).
            cfg = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32,
                                    encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=1,
                                    decoder_layers=2, num_attention_heads=2, num_queries=10, num_labels=133,
                                    init_std=0.5)
            processor = Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}, ignore_index=255)
        else:  # Swin-L backbone as the default repo
            backbone = SwinConfig(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12,
                                  out_features=stages)
            cfg = Mask2FormerConfig(backbone_config=backbone, num_queries=200, num_labels=133)
            processor = Mask2FormerImageProcessor(size={"shortest_edge": 384, "longest_edge": 1333}, ignore_index=255)
        self._set(Mask2FormerForUniversalSegmentation(cfg), processor)

    def _set(self, model, processor) -> None:
        self._model = model.to(self.device).eval()
        self._processor = processor
        self._labels = dict(getattr(model.config, "id2label", {}) or {})

    def segments(self, image: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        import torch

        p = self.params
        batch = self._processor(images=[image], return_tensors="pt")
        pixels = batch["pixel_values"].to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            outputs = self._model(pixel_values=pixels)
        outputs.class_queries_logits = outputs.class_queries_logits.float()
        outputs.masks_queries_logits = outputs.masks_queries_logits.float()
        (result,) = self._processor.post_process_panoptic_segmentation(
            outputs, threshold=p.threshold, mask_threshold=p.mask_threshold,
            overlap_mask_area_threshold=p.overlap_mask_area_threshold, label_ids_to_fuse=set(),
            target_sizes=[image.shape[:2]])
        return result["segmentation"].cpu().numpy(), list(result["segments_info"])

    def annotate(self, inputs, image_ids):
        out = []
        for item, image_id in zip(inputs, image_ids):
            image = item["image"]
            h, w = image.shape[:2]
            entities = panoptic_entities(*self.segments(image))
            colours = render.distinct_colours(len(entities), seed=seed_for(image_id, "entity_seg"))
            rendered = render.colour_masks([m for m, _ in entities], colours, h, w)
            meta = {"repo_id": self.params.repo_id, "entities": [
                {"colour": list(c), "label_id": int(info["label_id"]),
                 "label": str(self._labels.get(int(info["label_id"]), int(info["label_id"]))),
                 "score": round(float(info.get("score", 0.0)), 4), "area": int(m.sum())}
                for (m, info), c in zip(entities, colours)], "confidence": entities_confidence(entities)}
            p = self.params
            quality = (mask_quality(gate_view(rendered, p.gate_region), p.min_area)
                       or score_quality(meta["confidence"], {"mean_score": p.min_mean_score}))
            out.append({"entity_seg": NodeOutput(rendered, meta, quality)})
        return out
