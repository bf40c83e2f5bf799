"""Segment Anything (segment_anything package): automatic masks and box-prompted masks.

- `sam_auto`  -> `sam2_mask`: SamAutomaticMaskGenerator's masks, each in a distinct colour
  (Graph200K's automatic-mask condition; fixed colour order, largest mask painted first).
- `sam_boxes` requires ("image", "bbox_json") -> `mask` (Graph200K's open-world mask: one SAM
  mask per grounding box, coloured per object), `interactive_seg_source` (VIRAL: the image with a
  red box around one object) and `interactive_seg_mask` (that object's SAM mask, 0/255 grey).

Every node keeps SAM's own scores in meta (per mask: predicted_iou, and stability_score where
segment_anything computes it; meta["confidence"]: their area-weighted means, or the picked
object's) and is held back (quality `low_confidence`) below `min_predicted_iou` /
`min_stability_score`, SAM's own bar for a mask (its automatic generator's defaults).

Weights: the original SAM checkpoints (`sam_vit_h_4b8939.pth`, `sam_vit_l_0b3195.pth`,
`sam_vit_b_01ec64.pth`), looked up as a bare file in the models dir, then as a file of the HF repo
`ybelkada/segment-anything` (folder `checkpoints/`), which mirrors them.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from annotators import render
from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, seed_for
from core.weights import MissingWeightsError, WeightSpec
from annotators.quality import GateRegion, gate_view, mask_quality, rounded, score_quality
from annotators.registry import register

SAM_REPO = "ybelkada/segment-anything"
SAM_CHECKPOINTS = {
    "vit_h": "sam_vit_h_4b8939.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_b": "sam_vit_b_01ec64.pth",
}
SAM_WEIGHTS = tuple(
    WeightSpec(SAM_REPO, f"checkpoints/{fname}", f"Segment Anything {kind} checkpoint")
    for kind, fname in SAM_CHECKPOINTS.items()
)
ModelType = Literal["vit_h", "vit_l", "vit_b"]


def sam_checkpoint_path(model_type: str, models_dir: Path | None) -> Path:
    """The checkpoint file: `<models_dir>/<file>` first, then the HF repo mirror; else MissingWeightsError."""
    from core.weights import resolve

    fname = SAM_CHECKPOINTS[model_type]
    if models_dir is not None and (models_dir / fname).is_file():
        return models_dir / fname
    spec = WeightSpec(SAM_REPO, f"checkpoints/{fname}", f"Segment Anything {model_type} checkpoint")
    try:
        return resolve(spec, models_dir)
    except MissingWeightsError as e:
        searched = ([str(models_dir / fname)] if models_dir is not None else []) + [str(e)]
        raise MissingWeightsError(spec, searched) from None


def build_sam(model_type: str, checkpoint: Path | None, device: str):
    """The real architecture from segment_anything's registry, weights loaded on the CPU first."""
    import torch
    from segment_anything import sam_model_registry

    model = sam_model_registry[model_type](checkpoint=None)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.to(device).eval()


def build_tiny_sam(device: str = "cpu"):
    """Tests only: segment_anything's own classes at image size 256, embed dim 64, depth 2."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    image_size, patch, prompt_dim = 256, 16, 32
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=64, img_size=image_size, mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=4, out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model.to(device).eval()


# SAM's own bar for a mask: SamAutomaticMaskGenerator's defaults (pred_iou_thresh 0.88,
# stability_score_thresh 0.95). Not measured here (no SAM weights offline). At the default generator
# thresholds every automatic mask already passes, so the node gate only acts when the generator's
# thresholds are lowered (more masks) or for box prompts, which SAM does not filter at all.
SAM_MIN_PREDICTED_IOU = 0.88
SAM_MIN_STABILITY = 0.95


def area_weighted(values: list[float], areas: list[int]) -> float:
    """Mean of per-mask scores weighted by mask area (what the node shows); 0 without any area."""
    total = float(sum(areas))
    return rounded(sum(v * a for v, a in zip(values, areas)) / total) if total > 0 else 0.0


def masks_confidence(records: list[dict], keys: tuple[str, ...]) -> dict:
    """meta["confidence"] of a set of masks: the area-weighted mean of each score in `keys`."""
    areas = [int(r["area"]) for r in records]
    return {k: area_weighted([float(r[k]) for r in records], areas) for k in keys}


class _SamBase(Annotator):
    weights = SAM_WEIGHTS
    resources = Resources(batch_size=4, concurrency=1, num_gpus=0.5)

    def load(self) -> None:
        ckpt = sam_checkpoint_path(self.params.model_type, self.models_dir)
        self._set_model(build_sam(self.params.model_type, ckpt, self.device))

    def missing_weights(self) -> list[MissingWeightsError]:
        if not self.weights:  # a subclass that builds its model without weights
            return []
        try:  # the one checkpoint of the configured model type, found the way load() finds it
            sam_checkpoint_path(self.params.model_type, self.models_dir)
            return []
        except MissingWeightsError as e:
            return [e]

    def load_random(self, size: str = "tiny") -> None:
        if size == "tiny":
            self._set_model(build_tiny_sam(self.device))
        else:
            self._set_model(build_sam(self.params.model_type, None, self.device))

    def _set_model(self, model) -> None:
        self._model = model


# ----------------------------------------------------------------------------- automatic masks

class SamAutoParams(AnnotatorParams):
    model_type: ModelType = "vit_h"
    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    crop_n_layers: int = Field(0, ge=0, le=3)
    min_mask_region_area: int = Field(0, ge=0)  # >0 removes small holes/islands (OpenCV)
    max_masks: int = Field(255, ge=1, le=4096)  # keep the largest ones
    # Quality `empty_mask` (never sampled) when the masks together cover less than this fraction of
    # `gate_region` (default the centre square the exporter keeps; annotators/quality.py).
    min_area: float = Field(0.01, ge=0.0, le=1.0)
    gate_region: GateRegion = "centre_square"
    # Quality `low_confidence` when the masks' area-weighted mean predicted IoU / stability score is
    # below SAM's own bar (SAM_MIN_PREDICTED_IOU, SAM_MIN_STABILITY above).
    min_predicted_iou: float = Field(SAM_MIN_PREDICTED_IOU, ge=0.0, le=1.0)
    min_stability_score: float = Field(SAM_MIN_STABILITY, ge=0.0, le=1.0)


def automatic_masks(generator, image: np.ndarray, max_masks: int) -> list[dict]:
    """Run the generator; keep the `max_masks` largest, in a stable (area, then box) order."""
    records = generator.generate(image)
    records.sort(key=lambda r: (-int(r["area"]), tuple(float(v) for v in r["bbox"])))
    return records[:max_masks]


@register
class SamAuto(_SamBase):
    """SAM automatic masks, each a distinct colour, largest painted first (node `sam2_mask`).

    Colours follow the mask order by area (fixed palette, no seed), so a re-run gives the same map.
    meta: n_masks, for each mask its colour, area, XYWH box, predicted IoU and stability score, and
    confidence (their area-weighted means).
    """

    name = "sam_auto"
    produces = ("sam2_mask",)
    Params = SamAutoParams
    version = "2"  # 2: stability_score and meta["confidence"], quality low_confidence

    def _quality(self, rendered: np.ndarray, confidence: dict) -> str | None:
        p = self.params
        return (mask_quality(gate_view(rendered, p.gate_region), p.min_area)
                or score_quality(confidence, {"predicted_iou": p.min_predicted_iou,
                                              "stability_score": p.min_stability_score}))

    def _set_model(self, model) -> None:
        from segment_anything import SamAutomaticMaskGenerator

        p = self.params
        self._model = model
        self._generator = SamAutomaticMaskGenerator(
            model, points_per_side=p.points_per_side, points_per_batch=p.points_per_batch,
            pred_iou_thresh=p.pred_iou_thresh, stability_score_thresh=p.stability_score_thresh,
            box_nms_thresh=p.box_nms_thresh, crop_n_layers=p.crop_n_layers,
            min_mask_region_area=p.min_mask_region_area, output_mode="binary_mask",
        )

    def annotate(self, inputs, image_ids):
        import torch

        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            with torch.inference_mode():
                records = automatic_masks(self._generator, image, self.params.max_masks)
            colours = render.distinct_colours(len(records))
            rendered = render.colour_masks([r["segmentation"] for r in records], colours, h, w)
            confidence = masks_confidence(records, ("predicted_iou", "stability_score"))
            meta = {
                "n_masks": len(records),
                "masks": [
                    {"colour": list(c), "area": int(r["area"]), "bbox_xywh": [float(v) for v in r["bbox"]],
                     "predicted_iou": rounded(r["predicted_iou"]), "stability_score": rounded(r["stability_score"])}
                    for r, c in zip(records, colours)
                ],
                "confidence": confidence,
            }
            out.append({"sam2_mask": NodeOutput(rendered, meta, self._quality(rendered, confidence))})
        return out


# ----------------------------------------------------------------------------- box prompts

class SamBoxesParams(AnnotatorParams):
    model_type: ModelType = "vit_h"
    max_objects: int = Field(32, ge=1, le=256)  # highest-scoring grounding boxes kept
    # The interactive-segmentation object is drawn among boxes covering this fraction of the image,
    # so the red box is neither a speck nor the whole frame (falls back to all boxes).
    interactive_min_area: float = Field(0.01, ge=0.0, le=1.0)
    interactive_max_area: float = Field(0.8, ge=0.0, le=1.0)
    # Quality `low_confidence` below SAM's own bar for a mask (SAM_MIN_PREDICTED_IOU, SAM_MIN_STABILITY):
    # `mask` by its objects' area-weighted means, the interactive pair by its object's scores.
    min_predicted_iou: float = Field(SAM_MIN_PREDICTED_IOU, ge=0.0, le=1.0)
    min_stability_score: float = Field(SAM_MIN_STABILITY, ge=0.0, le=1.0)


def boxes_from_meta(meta: dict, height: int, width: int, max_objects: int) -> tuple[list[list[float]], list[str]]:
    """Valid (non-empty, clipped) boxes and their labels from a `bbox_json` meta, best score first."""
    boxes = meta.get("boxes") or []
    labels = meta.get("labels") or [""] * len(boxes)
    scores = meta.get("scores") or [1.0] * len(boxes)
    kept = []
    for i, (box, label, score) in enumerate(zip(boxes, labels, scores)):
        b = render.clip_box(box, height, width)
        if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
            kept.append((-float(score), i, b, str(label)))
    kept.sort(key=lambda t: (t[0], t[1]))
    kept = kept[:max_objects]
    return [k[2] for k in kept], [k[3] for k in kept]


def choose_interactive(boxes: list[list[float]], height: int, width: int, seed: int,
                       min_area: float, max_area: float) -> int:
    """Index of the object for the interactive pair: seeded pick among reasonably sized boxes."""
    area = float(height * width)
    fitting = [i for i, b in enumerate(boxes) if min_area <= (b[2] - b[0]) * (b[3] - b[1]) / area <= max_area]
    pool = fitting or list(range(len(boxes)))
    return pool[seed % len(pool)]


@register
class SamBoxes(_SamBase):
    """SAM masks prompted by the grounding boxes of `bbox_json`.

    `mask`: every object's mask in its own distinct colour on black, largest painted first;
    meta {boxes, names, colours} (colours[i] is the colour of boxes[i]/names[i]).
    `interactive_seg_source`: the image with a red box around one object chosen with
    seed_for(image_id, "interactive_seg_source"); `interactive_seg_mask`: that object's mask (0/255).
    An image with no valid box gets the three nodes with quality `no_box` (black mask, the photo
    without a box, black object mask): stored so the report shows them, never sampled.
    meta of `mask` adds each object's predicted_iou and stability_score and confidence (their
    area-weighted means); the interactive pair's meta adds its object's two scores.
    """

    name = "sam_boxes"
    produces = ("mask", "interactive_seg_source", "interactive_seg_mask")
    requires = ("image", "bbox_json")
    Params = SamBoxesParams
    version = "2"  # 2: SAM's scores in meta, quality low_confidence

    def _set_model(self, model) -> None:
        from segment_anything import SamPredictor

        self._model = model
        self._predictor = SamPredictor(model)

    def box_masks(self, image: np.ndarray, boxes: list[list[float]]) -> tuple[list[np.ndarray], list[dict]]:
        """One binary mask per box (single-mask output), all boxes of an image in one decoder batch,
        and SAM's scores of each: predicted_iou and stability_score (computed on the logits as
        SamAutomaticMaskGenerator does; 0 for a mask that is empty at every threshold)."""
        import torch
        from segment_anything.utils.amg import calculate_stability_score

        predictor = self._predictor
        with torch.inference_mode():
            predictor.set_image(image)
            box_t = torch.as_tensor(boxes, dtype=torch.float32, device=predictor.device)
            box_t = predictor.transform.apply_boxes_torch(box_t, image.shape[:2])
            logits, ious, _ = predictor.predict_torch(None, None, boxes=box_t, multimask_output=False,
                                                      return_logits=True)
            predictor.reset_image()
            threshold = self._model.mask_threshold
            stability = torch.nan_to_num(calculate_stability_score(logits[:, 0], threshold, 1.0), nan=0.0)
            masks = (logits[:, 0] > threshold).cpu().numpy()
        scores = [{"predicted_iou": rounded(i), "stability_score": rounded(s)}
                  for i, s in zip(ious[:, 0].cpu().tolist(), stability.cpu().tolist())]
        return list(masks), scores

    def annotate(self, inputs, image_ids):
        p = self.params
        out = []
        for item, image_id in zip(inputs, image_ids):
            image = item["image"]
            h, w = image.shape[:2]
            boxes, names = boxes_from_meta(item.get("bbox_json.meta") or {}, h, w, p.max_objects)
            if not boxes:
                black = np.zeros((h, w, 3), np.uint8)
                meta = {"boxes": [], "names": [], "colours": []}
                out.append({"mask": NodeOutput(black, meta, "no_box"),
                            "interactive_seg_source": NodeOutput(image, {"box": None}, "no_box"),
                            "interactive_seg_mask": NodeOutput(black[..., 0], {"box": None}, "no_box")})
                continue
            masks, scores = self.box_masks(image, boxes)
            colours = render.distinct_colours(len(boxes))
            mask_map = render.colour_masks(masks, colours, h, w)
            pick = choose_interactive(boxes, h, w, seed_for(image_id, "interactive_seg_source"),
                                      p.interactive_min_area, p.interactive_max_area)
            minimums = {"predicted_iou": p.min_predicted_iou, "stability_score": p.min_stability_score}
            confidence = masks_confidence([{**s, "area": int(m.sum())} for m, s in zip(masks, scores)],
                                          ("predicted_iou", "stability_score"))
            picked = {"box": boxes[pick], "name": names[pick], "index": pick, **scores[pick]}
            picked_quality = score_quality(scores[pick], minimums)
            out.append({
                "mask": NodeOutput(mask_map, {"boxes": boxes, "names": names, "colours": [list(c) for c in colours],
                                              "predicted_iou": [s["predicted_iou"] for s in scores],
                                              "stability_score": [s["stability_score"] for s in scores],
                                              "confidence": confidence}, score_quality(confidence, minimums)),
                "interactive_seg_source": NodeOutput(render.draw_red_box(image, boxes[pick]), dict(picked),
                                                     picked_quality),
                "interactive_seg_mask": NodeOutput(render.binary_mask_image(masks[pick]), dict(picked),
                                                   picked_quality),
            })
        return out


# ----------------------------------------------------------------------------- SAM masks as entities

@register
class SamEntities(SamAuto):
    """VIRAL's entity segmentation from SAM automatic masks (an alternative to Mask2Former's
    `entity_seg` annotator): same masks as `sam_auto`, each in a random distinct colour drawn
    with seed_for(image_id, "entity_seg"). meta: n_masks, per-entity colour, area, box, predicted IoU
    and stability score, and confidence (their area-weighted means)."""

    name = "entity_seg_sam"
    produces = ("entity_seg",)

    def annotate(self, inputs, image_ids):
        import torch

        out = []
        for item, image_id in zip(inputs, image_ids):
            image = item["image"]
            h, w = image.shape[:2]
            with torch.inference_mode():
                records = automatic_masks(self._generator, image, self.params.max_masks)
            colours = render.distinct_colours(len(records), seed=seed_for(image_id, "entity_seg"))
            rendered = render.colour_masks([r["segmentation"] for r in records], colours, h, w)
            confidence = masks_confidence(records, ("predicted_iou", "stability_score"))
            meta = {"n_masks": len(records), "entities": [
                {"colour": list(c), "area": int(r["area"]), "bbox_xywh": [float(v) for v in r["bbox"]],
                 "predicted_iou": rounded(r["predicted_iou"]), "stability_score": rounded(r["stability_score"])}
                for r, c in zip(records, colours)], "confidence": confidence}
            out.append({"entity_seg": NodeOutput(rendered, meta, self._quality(rendered, confidence))})
        return out


# ----------------------------------------------------------------------------- SAM 2 (transformers)

SAM2_DEFAULT = "facebook/sam2.1-hiera-large"


class Sam2AutoParams(AnnotatorParams):
    repo_id: str = SAM2_DEFAULT  # any transformers Sam2Model repo
    points_per_side: int = Field(32, ge=1, le=128)
    points_per_batch: int = Field(64, ge=1, le=1024)
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0)
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0)
    crops_nms_thresh: float = Field(0.7, ge=0.0, le=1.0)
    max_masks: int = Field(255, ge=1, le=4096)
    # Quality `empty_mask` (never sampled) when the masks together cover less than this fraction of
    # `gate_region` (default the centre square the exporter keeps; annotators/quality.py).
    min_area: float = Field(0.01, ge=0.0, le=1.0)
    gate_region: GateRegion = "centre_square"
    # Quality `low_confidence` when the masks' area-weighted mean predicted IoU is below SAM's own bar
    # (SAM_MIN_PREDICTED_IOU; transformers' mask-generation pipeline returns no stability score).
    min_predicted_iou: float = Field(SAM_MIN_PREDICTED_IOU, ge=0.0, le=1.0)


def build_tiny_sam2():
    """Tests only: a transformers Sam2Model (Hiera backbone) at 256 px with random weights."""
    import torch
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2ImageProcessor, Sam2Model, Sam2VisionConfig

    # The global-attention block must not be a stage's first (query-pooling) block.
    backbone = Sam2HieraDetConfig(hidden_size=16, num_attention_heads=1, image_size=[256, 256],
                                  blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                                  num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 4],
                                  global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4])
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=[128, 64, 32, 16],
                              backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]], fpn_hidden_size=32)
    cfg = Sam2Config(vision_config=vision,
                     prompt_encoder_config=dict(hidden_size=32, image_size=256, patch_size=16, mask_input_channels=4),
                     mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32))
    torch.manual_seed(0)
    processor = Sam2ImageProcessor(size={"height": 256, "width": 256}, mask_size={"height": 64, "width": 64})
    return Sam2Model(cfg), processor


@register
class Sam2Auto(Annotator):
    """SAM 2 automatic masks through transformers' mask-generation pipeline -> `sam2_mask`.

    Rendered exactly like `sam_auto` (distinct colours by area order, largest painted first); an
    alternative producer of Graph200K's `sam2_mask` with the model Graph200K names. fp32 only.
    """

    name = "sam2_auto"
    produces = ("sam2_mask",)
    Params = Sam2AutoParams
    version = "2"  # 2: meta["confidence"], quality low_confidence
    resources = Resources(batch_size=4, concurrency=1, num_gpus=0.5)
    weights = (WeightSpec(SAM2_DEFAULT, None, "SAM 2.1 Hiera-L (transformers format)"),)

    def load(self) -> None:
        from transformers import AutoImageProcessor, Sam2Model

        from annotators.segmentation import resolve_repo

        path = resolve_repo(self.params.repo_id, self.models_dir)
        self._set(Sam2Model.from_pretrained(path), AutoImageProcessor.from_pretrained(path))

    def load_random(self, size: str = "tiny") -> None:
        if size != "tiny":
            raise NotImplementedError("sam2_auto builds only the tiny random model")
        self._set(*build_tiny_sam2())

    def _set(self, model, processor) -> None:
        from transformers import pipeline

        self._model = model.to(self.device).eval()
        self._processor = processor
        self._generator = pipeline("mask-generation", model=self._model, image_processor=processor,
                                   device=self.device)

    def annotate(self, inputs, image_ids):
        from PIL import Image

        p = self.params
        out = []
        for item in inputs:
            image = item["image"]
            h, w = image.shape[:2]
            result = self._generator(Image.fromarray(image), points_per_crop=p.points_per_side,
                                     points_per_batch=p.points_per_batch, pred_iou_thresh=p.pred_iou_thresh,
                                     stability_score_thresh=p.stability_score_thresh,
                                     crops_nms_thresh=p.crops_nms_thresh)
            masks = [np.asarray(m.cpu().numpy() if hasattr(m, "cpu") else m, dtype=bool) for m in result["masks"]]
            scores = [float(s) for s in result["scores"]]
            order = sorted(range(len(masks)), key=lambda i: (-int(masks[i].sum()), -scores[i], i))[:p.max_masks]
            masks, scores = [masks[i] for i in order], [scores[i] for i in order]
            colours = render.distinct_colours(len(masks))
            records = [{"area": int(m.sum()), "predicted_iou": s} for m, s in zip(masks, scores)]
            confidence = masks_confidence(records, ("predicted_iou",))
            meta = {"n_masks": len(masks), "masks": [
                {"colour": list(c), "area": r["area"], "predicted_iou": rounded(r["predicted_iou"])}
                for r, c in zip(records, colours)], "confidence": confidence}
            rendered = render.colour_masks(masks, colours, h, w)
            quality = (mask_quality(gate_view(rendered, p.gate_region), p.min_area)
                       or score_quality(confidence, {"predicted_iou": p.min_predicted_iou}))
            out.append({"sam2_mask": NodeOutput(rendered, meta, quality)})
        return out
