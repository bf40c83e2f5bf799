"""Open-vocabulary grounding: boxes and labels of the objects in an image.

Nodes (all from one detection list, so they always agree):
- `bbox_json` (JSON only): meta {boxes: [[x0, y0, x1, y1], ...] in source pixels clipped to the
  image, labels, scores, model}. Consumed by `sam_boxes` (requires ("image", "bbox_json")).
- `bbox` (Graph200K): box outlines on black, one distinct colour per box (meta: boxes, labels, colours).
- `detection_target` (VIRAL): filled white rectangles (255) on black around every box of ONE
  category, chosen with seed_for(image_id, "detection_target") among the labels present; meta
  {category, boxes}. With no detection all three maps are black and category is None (the
  sampler must skip such a target).

Annotators:
- `grounding_qwen_vl`: Qwen2.5-VL prompted to answer a JSON list of {"bbox_2d", "label"};
  answers are parsed leniently (code fences, prose around the JSON, truncated lists, alternative
  key names). Qwen2.5-VL answers in absolute pixels of its resized input, which are mapped back
  to the source (param `coordinates`; "relative_1000" for Qwen2-VL/Qwen3-VL style 0..1000 grids).
- `grounding_owlv2`: OWLv2 with a category list param (scores are real detection scores).

Model confidence (quality `low_confidence`, annotators/quality.py; all three nodes alike):
`bbox_json` meta["confidence"] holds OWLv2's `top_score` (its best box) or Qwen-VL's
`answer_confidence` (the geometric mean of the probabilities of the answer's tokens: Qwen-VL gives
no box score, so its boxes keep score 1.0), gated by `min_top_score` / `min_answer_confidence`.
"""

from __future__ import annotations

import json
import re
from typing import Literal

import numpy as np
from pydantic import Field

from annotators import render
from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, seed_for
from core.weights import WeightSpec
from annotators.quality import rounded, score_quality
from annotators.registry import register
from annotators.segmentation import DType, resolve_repo, torch_dtype

GROUNDING_NODES = ("bbox_json", "bbox", "detection_target")


# ----------------------------------------------------------------------------- rendering

def detection_nodes(height: int, width: int, boxes: list[list[float]], labels: list[str], scores: list[float],
                    image_id: str, model: str, confidence: dict | None = None,
                    minimums: dict[str, float] | None = None) -> dict[str, NodeOutput]:
    """The three grounding nodes of one image from its (already clipped) detections; with no box
    all three get quality `no_box` (stored for the report, never sampled), else `low_confidence`
    when a `confidence` score (stored in bbox_json's meta) is below its entry in `minimums`."""
    quality = score_quality(confidence or {}, minimums or {}) if boxes else "no_box"
    json_meta = {"boxes": boxes, "labels": labels, "scores": scores, "model": model}
    if confidence is not None:
        json_meta["confidence"] = confidence
    colours = render.distinct_colours(len(boxes))
    categories = sorted(set(labels))
    category = categories[seed_for(image_id, "detection_target") % len(categories)] if categories else None
    chosen = [b for b, lab in zip(boxes, labels) if lab == category]
    return {
        "bbox_json": NodeOutput(None, json_meta, quality),
        "bbox": NodeOutput(render.draw_boxes(height, width, boxes, colours),
                           {"boxes": boxes, "labels": labels, "colours": [list(c) for c in colours]}, quality),
        "detection_target": NodeOutput(render.filled_rectangles(height, width, chosen),
                                       {"category": category, "boxes": chosen}, quality),
    }


def tidy_detections(raw: list[tuple[list[float], str, float]], height: int, width: int,
                    max_boxes: int, min_side: float = 1.0) -> tuple[list[list[float]], list[str], list[float]]:
    """Clip to the image, drop degenerate and exact-duplicate boxes, keep the best `max_boxes`."""
    seen = set()
    kept = []
    for order, (box, label, score) in enumerate(raw):
        b = [round(v, 2) for v in render.clip_box(box, height, width)]
        key = (tuple(b), label)
        if b[2] - b[0] < min_side or b[3] - b[1] < min_side or key in seen:
            continue
        seen.add(key)
        kept.append((-float(score), order, b, label, float(score)))
    kept.sort(key=lambda k: (k[0], k[1]))
    kept = kept[:max_boxes]
    return [k[2] for k in kept], [k[3] for k in kept], [round(k[4], 4) for k in kept]


def class_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> list[int]:
    """Greedy per-class non-maximum suppression; indices kept, best score first (ties by index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        for j in kept:
            if labels[j] == labels[i] and box_iou(boxes[i], boxes[j]) > iou:
                break
        else:
            kept.append(i)
    return kept


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# ----------------------------------------------------------------------------- Qwen-VL answer parsing

_BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d", "coordinates")
_LABEL_KEYS = ("label", "name", "category", "object", "class")
_OBJECT_RE = re.compile(r"\{[^{}]*\}")
_FENCE_RE = re.compile(r"```(?:json)?", re.IGNORECASE)


def _object_to_detection(obj) -> tuple[list[float], str] | None:
    if not isinstance(obj, dict):
        return None
    box = next((obj[k] for k in _BOX_KEYS if k in obj), None)
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        box = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    if not all(np.isfinite(box)):
        return None
    label = next((obj[k] for k in _LABEL_KEYS if k in obj), "object")
    return box, " ".join(str(label).strip().lower().split()) or "object"


def parse_grounding_answer(text: str) -> list[tuple[list[float], str]]:
    """(box, label) pairs from a VLM answer; anything that does not parse is skipped, never raised.

    Tries the whole answer as JSON (a list, or a dict holding a list), then falls back to every
    flat {...} object in it, which also recovers the complete objects of a truncated list.
    """
    text = _FENCE_RE.sub("", text or "")
    candidates = []
    start, end = text.find("["), text.rfind("]")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    for blob in candidates:
        try:
            data = json.loads(blob)
        except ValueError:
            continue
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if isinstance(data, list):
            found = [d for d in (_object_to_detection(o) for o in data) if d is not None]
            if found:
                return found
    found = []
    for match in _OBJECT_RE.finditer(text):
        try:
            det = _object_to_detection(json.loads(match.group(0)))
        except ValueError:
            continue
        if det is not None:
            found.append(det)
    return found


def to_source_pixels(box: list[float], coordinates: str, model_hw: tuple[int, int],
                     source_hw: tuple[int, int]) -> list[float]:
    """Map a box from the model's coordinate frame to source pixels."""
    sh, sw = source_hw
    if coordinates == "relative_1000":
        sx, sy = sw / 1000.0, sh / 1000.0
    else:  # absolute pixels of the model's resized input
        sx, sy = sw / float(model_hw[1]), sh / float(model_hw[0])
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


# ----------------------------------------------------------------------------- Qwen2.5-VL runner

def char_tokenizer(specials: list[str], *, eos: str, pad: str, bos: str | None = None):
    """Tests/benchmarks: a one-token-per-printable-character fast tokenizer built in memory
    (real tokenizers come with the weights; none can be downloaded here)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=pad))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    core.add_special_tokens(specials)
    core.decoder = decoders.Fuse()
    if bos is not None:  # CLIP-style: <bos> text <eos>
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, pad_token=pad, bos_token=bos)


QWEN_VL_DEFAULT = "Qwen/Qwen2.5-VL-7B-Instruct"
QWEN_SYSTEM = "You are a helpful assistant."


def qwen_chat_prompt(instruction: str, system: str = QWEN_SYSTEM) -> str:
    """Qwen's chat format with one image before the instruction (what its chat template renders)."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|image_pad|><|vision_end|>{instruction}<|im_end|>\n<|im_start|>assistant\n")


class QwenVL:
    """Qwen2.5-VL model + processor; greedy batched generation of one answer per image."""

    def __init__(self, model, processor, device: str):
        self.model = model.to(device).eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # decoder-only batched generation
        self.device = device

    @classmethod
    def from_pretrained(cls, repo_id: str, models_dir, device: str, dtype: str,
                        min_pixels: int, max_pixels: int) -> "QwenVL":
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

        path = resolve_repo(repo_id, models_dir)
        processor = AutoProcessor.from_pretrained(path, min_pixels=min_pixels, max_pixels=max_pixels)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=torch_dtype(device, dtype))
        return cls(model, processor, device)

    @classmethod
    def random(cls, size: str, device: str, min_pixels: int, max_pixels: int) -> "QwenVL":
        """Tests/benchmarks: tiny (or 7B-sized) random Qwen2.5-VL with a small in-memory tokenizer."""
        import torch
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLVideoProcessor,
        )

        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|image_pad|>", "<|video_pad|>"]
        tokenizer = char_tokenizer(specials, eos="<|im_end|>", pad="<|endoftext|>")
        vocab = tokenizer.get_vocab()
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
            tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor())
        if size == "tiny":
            text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
            vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                          window_size=56, fullatt_block_indexes=[1])
        else:  # Qwen2.5-VL-7B's shapes
            text = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})
            vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                          window_size=112, fullatt_block_indexes=[7, 15, 23, 31])
        ids = {t: vocab[t] for t in specials}
        text.update(vocab_size=len(vocab), max_position_embeddings=4096, bos_token_id=ids["<|endoftext|>"],
                    eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
        vision.update(patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                               video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                               vision_end_token_id=ids["<|vision_end|>"])
        torch.manual_seed(0)
        return cls(Qwen2_5_VLForConditionalGeneration(cfg), processor, device)

    def generate(self, images: list[np.ndarray], instruction: str, max_new_tokens: int
                 ) -> tuple[list[str], list[tuple[int, int]]]:
        """Answers, and each image's (height, width) as the model saw it (after smart resizing)."""
        texts, sizes, _ = self._generate(images, instruction, max_new_tokens, scored=False)
        return texts, sizes

    def generate_scored(self, images: list[np.ndarray], instruction: str, max_new_tokens: int
                        ) -> tuple[list[str], list[tuple[int, int]], list[float]]:
        """As `generate`, plus each answer's confidence: the geometric mean of the probabilities the
        model gave its own (greedy) tokens, up to and including the end of the answer."""
        return self._generate(images, instruction, max_new_tokens, scored=True)

    def _generate(self, images, instruction, max_new_tokens, scored: bool):
        import torch

        prompts = [qwen_chat_prompt(instruction)] * len(images)
        batch = self.processor(text=prompts, images=list(images), return_tensors="pt", padding=True)
        batch = batch.to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            generated = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                            output_scores=scored, return_dict_in_generate=True)
        new_tokens = generated.sequences[:, batch["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        patch = self.processor.image_processor.patch_size
        sizes = [(int(g[1]) * patch, int(g[2]) * patch) for g in batch["image_grid_thw"].tolist()]
        confidences = self._answer_confidences(generated, new_tokens) if scored else []
        return [t.strip() for t in texts], sizes, confidences

    def _answer_confidences(self, generated, new_tokens) -> list[float]:
        """exp(mean log-probability) of each answer's tokens; what follows its first end token is padding."""
        logprobs = self.model.compute_transition_scores(generated.sequences, generated.scores,
                                                        normalize_logits=True).float().cpu().numpy()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        out = []
        for tokens, row in zip(new_tokens.cpu().tolist(), logprobs):
            ends = [i for i, t in enumerate(tokens) if t in eos]
            n = ends[0] + 1 if ends else len(tokens)
            out.append(rounded(np.exp(np.mean(row[:n]))) if n else 0.0)
        return out


# ----------------------------------------------------------------------------- annotators

GROUNDING_PROMPT = (
    "Locate every distinct object in the image{categories}. Answer only with a JSON list, one item per "
    'object: {{"bbox_2d": [x1, y1, x2, y2], "label": "<short object name>"}}.'
)


class QwenGroundingParams(AnnotatorParams):
    repo_id: str = QWEN_VL_DEFAULT
    categories: list[str] = Field(default_factory=list)  # empty: open vocabulary
    prompt: str = GROUNDING_PROMPT  # `{categories}` is replaced by ": a, b, c" when categories are given
    coordinates: Literal["absolute", "relative_1000"] = "absolute"
    max_new_tokens: int = Field(512, ge=8, le=4096)
    max_boxes: int = Field(32, ge=1, le=256)
    min_pixels: int = Field(256 * 28 * 28, ge=4 * 28 * 28)
    max_pixels: int = Field(1024 * 28 * 28, ge=4 * 28 * 28)
    dtype: DType = "auto"
    # Quality `low_confidence` when the answer's geometric-mean token probability is below this. Not
    # measured here (no Qwen weights offline): a real JSON answer's syntax tokens sit near 1 and only
    # the last digits of coordinates are uncertain, so a confident answer scores well above 0.5;
    # under 0.5 the model was guessing its own answer (a random model scores ~0.01).
    min_answer_confidence: float = Field(0.5, ge=0.0, le=1.0)


class QwenVLAnnotator(Annotator):
    """Base of the annotators that prompt Qwen2.5-VL (grounding, captions): one model per actor.

    Params must carry repo_id, dtype, min_pixels and max_pixels."""

    resources = Resources(batch_size=8, concurrency=1, num_gpus=1.0)
    weights = (WeightSpec(QWEN_VL_DEFAULT, None, "Qwen2.5-VL 7B Instruct (grounding and captions)"),)

    def load(self) -> None:
        p = self.params
        self._vlm = QwenVL.from_pretrained(p.repo_id, self.models_dir, self.device, p.dtype, p.min_pixels, p.max_pixels)

    def load_random(self, size: str = "tiny") -> None:
        p = self.params
        self._vlm = QwenVL.random(size, self.device, p.min_pixels, p.max_pixels)


@register
class GroundingQwenVL(QwenVLAnnotator):
    """Qwen2.5-VL open-vocabulary grounding; see the module docstring for the nodes."""

    name = "grounding_qwen_vl"
    produces = GROUNDING_NODES
    Params = QwenGroundingParams
    version = "2"  # 2: answer_confidence in meta, quality low_confidence

    def instruction(self) -> str:
        cats = self.params.categories
        return self.params.prompt.replace("{categories}", f": {', '.join(cats)}" if cats else "")

    def detections_from_answer(self, answer: str, model_hw: tuple[int, int], source_hw: tuple[int, int],
                               image_id: str, answer_confidence: float | None = None) -> dict[str, NodeOutput]:
        """The nodes of one answer; gated on `answer_confidence` when it is known."""
        p = self.params
        h, w = source_hw
        raw = [(to_source_pixels(box, p.coordinates, model_hw, source_hw), label, 1.0)
               for box, label in parse_grounding_answer(answer)]
        if p.categories:  # a closed list: keep only what was asked for
            wanted = {c.strip().lower() for c in p.categories}
            raw = [r for r in raw if r[1] in wanted]
        boxes, labels, scores = tidy_detections(raw, h, w, p.max_boxes)
        known = answer_confidence is not None
        nodes = detection_nodes(h, w, boxes, labels, scores, image_id, p.repo_id,
                                {"answer_confidence": answer_confidence} if known else None,
                                {"answer_confidence": p.min_answer_confidence} if known else None)
        nodes["bbox_json"].meta["answer"] = answer
        return nodes

    def annotate(self, inputs, image_ids):
        images = [item["image"] for item in inputs]
        answers, model_sizes, confidences = self._vlm.generate_scored(images, self.instruction(),
                                                                      self.params.max_new_tokens)
        return [self.detections_from_answer(a, hw, im.shape[:2], iid, c)
                for a, hw, im, iid, c in zip(answers, model_sizes, images, image_ids, confidences)]


# ----------------------------------------------------------------------------- OWLv2

OWLV2_DEFAULT = "google/owlv2-base-patch16-ensemble"


class Owlv2Params(AnnotatorParams):
    repo_id: str = OWLV2_DEFAULT
    # OWLv2 is closed-set per call: it scores every box against these text queries.
    categories: list[str] = Field(default_factory=lambda: [
        "person", "dog", "cat", "car", "bicycle", "bird", "horse", "chair", "table", "cup", "bottle",
        "plant", "tree", "building", "flower", "book", "phone", "laptop", "bag", "hat"], min_length=1)
    text_template: str = "a photo of a {}"
    threshold: float = Field(0.2, ge=0.0, le=1.0)
    nms_iou: float = Field(0.5, gt=0.0, le=1.0)  # OWL boxes overlap heavily; per-class NMS
    max_boxes: int = Field(32, ge=1, le=256)
    dtype: DType = "auto"
    # Quality `low_confidence` when the image's best box scores below this: weaker boxes (from
    # `threshold`) are kept beside a confident one, but an image of weak boxes only is held back.
    # Not measured here (no OWLv2 weights offline): OWLv2's own examples show boxes from 0.1-0.2,
    # and its confident detections score well above 0.3.
    min_top_score: float = Field(0.3, ge=0.0, le=1.0)


@register
class GroundingOwlv2(Annotator):
    """OWLv2 open-vocabulary detection over a category list; same nodes as `grounding_qwen_vl`.

    OWLv2 pads each image to a square (bottom/right) before resizing, so boxes are mapped back
    with the padded side length and then clipped to the image.
    """

    name = "grounding_owlv2"
    produces = GROUNDING_NODES
    Params = Owlv2Params
    version = "2"  # 2: top_score in meta, quality low_confidence
    resources = Resources(batch_size=8, concurrency=1, num_gpus=0.25)
    weights = (WeightSpec(OWLV2_DEFAULT, None, "OWLv2 base patch16 ensemble"),)

    def load(self) -> None:
        from transformers import Owlv2ForObjectDetection, Owlv2Processor

        path = resolve_repo(self.params.repo_id, self.models_dir)
        processor = Owlv2Processor.from_pretrained(path)
        model = Owlv2ForObjectDetection.from_pretrained(path, dtype=torch_dtype(self.device, self.params.dtype))
        self._set(model, processor.image_processor, processor.tokenizer)

    def load_random(self, size: str = "tiny") -> None:
        import torch
        from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor

        # Id 0 is kept for padding queries: OWL treats a query whose first id is 0 as absent.
        tokenizer = char_tokenizer(["<unk>", "<pad>", "<|startoftext|>", "<|endoftext|>"], bos="<|startoftext|>",
                                   eos="<|endoftext|>", pad="<|endoftext|>")
        ids = tokenizer.get_vocab()
        if size == "tiny":
            text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
            vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          image_size=64, patch_size=16)
            projection, side = 32, 64
        else:  # owlv2-base-patch16 shapes at 960 px
            text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
            vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          image_size=960, patch_size=16)
            projection, side = 512, 960
        # One token per character in tests: 32 positions hold "a photo of a <category>" whole.
        text.update(vocab_size=len(ids), max_position_embeddings=32 if size == "tiny" else 16, bos_token_id=ids["<|startoftext|>"],
                    eos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"])
        torch.manual_seed(0)
        # A small init spread keeps random box heads from saturating into zero-size boxes.
        cfg = Owlv2Config(text_config=text, vision_config=vision, projection_dim=projection,
                          initializer_factor=0.1 if size == "tiny" else 1.0)
        model = Owlv2ForObjectDetection(cfg)
        self._set(model, Owlv2ImageProcessor(size={"height": side, "width": side}), tokenizer)

    def _set(self, model, image_processor, tokenizer) -> None:
        self._model = model.to(self.device).eval()
        self._image_processor = image_processor
        self._tokenizer = tokenizer
        self._max_text = int(model.config.text_config.max_position_embeddings)

    def detect(self, images: list[np.ndarray]) -> list[tuple[list[list[float]], list[str], list[float]]]:
        import torch

        p = self.params
        queries = [p.text_template.format(c) for c in p.categories]
        text = self._tokenizer(queries * len(images), padding="max_length", truncation=True,
                               max_length=self._max_text, return_tensors="pt")
        pixels = self._image_processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            outputs = self._model(input_ids=text["input_ids"].to(self.device),
                                  attention_mask=text["attention_mask"].to(self.device),
                                  pixel_values=pixels.to(self.device, dtype=self._model.dtype))
        outputs.logits = outputs.logits.float()
        outputs.pred_boxes = outputs.pred_boxes.float()
        sides = [(max(im.shape[:2]),) * 2 for im in images]
        results = self._image_processor.post_process_object_detection(outputs, threshold=p.threshold,
                                                                      target_sizes=sides)
        out = []
        for im, res in zip(images, results):
            boxes, scores, labels = (res[k].cpu().numpy() for k in ("boxes", "scores", "labels"))
            keep = class_nms(boxes, scores, labels, p.nms_iou)
            raw = [(boxes[i].tolist(), p.categories[int(labels[i])].strip().lower(), float(scores[i])) for i in keep]
            out.append(tidy_detections(raw, im.shape[0], im.shape[1], p.max_boxes))
        return out

    def annotate(self, inputs, image_ids):
        p = self.params
        images = [item["image"] for item in inputs]
        out = []
        for im, (boxes, labels, scores), image_id in zip(images, self.detect(images), image_ids):
            confidence = {"top_score": rounded(max(scores, default=0.0))}
            out.append(detection_nodes(im.shape[0], im.shape[1], boxes, labels, scores, image_id, p.repo_id,
                                       confidence, {"top_score": p.min_top_score}))
        return out
