"""Judges: models that score an edit pair (source image, edited image, instruction), like annotators
score images. The judge stage (pipelines/stages/judge.py) stores every score per pair; the sample
stage applies thresholds (`sample.judge_thresholds`), so a threshold changes without re-scoring.

A judge declares its name, version, `Params` (pydantic; unknown keys are errors), the `scores` it
writes, its Ray resources and the weights it reads; `load()` resolves them (MissingWeightsError
naming the repository, never random weights), `load_random()` builds the same classes with random
weights for tests and benchmarks, and `score(pairs)` gives one {score name: value} per pair (value
None: the judge could not tell, e.g. an answer it could not parse). Registered with `@register`:

  clip_direction  CLIP directional similarity (InstructPix2Pix, AnyEdit): cos(E_img(edited) -
                  E_img(source), E_txt(instruction) - E_txt(neutral caption)) as `direction`, and the
                  image-image cosine cos(E_img(source), E_img(edited)) as `image_image`
  clip_iqa        CLIP-IQA of both images (annotators/image_quality.py's own code): `edited`,
                  `source` (P("Good photo.") against "Bad photo.") and `delta` = edited - source
  qwen_vl         Qwen2.5-VL shown both images and the instruction (JUDGE_PROMPT), answering two 1-5
                  ratings; `follows` (the edit does what the instruction says), `preserves` (the
                  rest is unchanged) and `overall` = min of the two (parse_judge_answer)

Judges live in `annotators/` because they reuse annotator code (the CLIP-IQA score, the Qwen2.5-VL
runner); their registry is their own.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from annotators.base import ConfiguredModel, Resources
from core.weights import MissingWeightsError, WeightSpec


@dataclass
class EditPair:
    """One pair to judge: decoded H x W x 3 uint8 images and the instruction text."""

    source: np.ndarray
    edited: np.ndarray
    instruction: str


class JudgeParams(BaseModel):
    """Base for a judge's params: unknown keys are an error that names the key."""

    model_config = ConfigDict(extra="forbid")


class Judge(ConfiguredModel):
    """Subclass, set the class attributes, implement `load`, `load_random` and `score`, `@register` it."""

    version: ClassVar[str] = "1"
    Params: ClassVar[type[BaseModel]] = JudgeParams
    models_dir_key: ClassVar[str] = "judge.models_dir"
    scores: ClassVar[tuple[str, ...]]  # the score names `score` writes for every pair
    resources: ClassVar[Resources] = Resources(batch_size=16, concurrency=1, num_gpus=0.0, num_cpus=1.0)

    def load(self) -> None:
        raise NotImplementedError

    def score(self, pairs: list[EditPair]) -> list[dict[str, float | None]]:
        raise NotImplementedError

    @classmethod
    def key(cls, params: BaseModel) -> str:
        """`<name>-<12 hex>` of (name, version, params): the scores cache is keyed by it, so changed
        params or a new version re-score."""
        blob = json.dumps({"name": cls.name, "version": cls.version, "params": params.model_dump(mode="json")},
                          sort_keys=True)
        return f"{cls.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# --- registry ------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Judge]] = {}


def register(cls: type[Judge]) -> type[Judge]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"judge {cls.name!r} registered twice ({_REGISTRY[cls.name].__module__} and {cls.__module__})")
    if not getattr(cls, "scores", None):
        raise ValueError(f"judge {cls.name!r} declares no `scores`")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Judge]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown judge {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, params_json: str, *, device: str = "cpu", models_dir: str | None = None) -> Judge:
    """A judge from its name and params (JSON: plain data that travels to a Ray actor); not loaded."""
    cls = get(name)
    return cls(cls.Params.model_validate_json(params_json), device=device, models_dir=models_dir)


def catalog() -> list[tuple[str, WeightSpec]]:
    """(judge name, weight spec) of every registered judge with default params (`vicl models`)."""
    return [(name, spec) for name in names() for spec in get(name)().required_weights()]


# --- CLIP ----------------------------------------------------------------------------------------

class ClipParams(JudgeParams):
    model_name: str = "ViT-L-14"  # any open_clip model; weights from judge.models_dir or the HF cache
    pretrained: str = "openai"
    weights_repo: str | None = None  # HF repo of the weights (default: open_clip's for the pair above)


class ClipJudge(Judge):
    """Base of the judges on open_clip's towers (mining/embed.py's OpenClipEmbedder)."""

    resources = Resources(batch_size=32, concurrency=1, num_gpus=0.0, num_cpus=1.0)

    def _embedder(self):
        from mining.embed import OpenClipEmbedder

        p = self.params
        return OpenClipEmbedder(p.model_name, p.pretrained, models_dir=self.models_dir, device=self.device,
                                weights_repo=p.weights_repo)

    def required_weights(self) -> tuple[WeightSpec, ...]:
        return (self._embedder().weight_spec(),)

    def missing_weights(self) -> list[MissingWeightsError]:
        try:
            self._embedder().find_weights()  # the lookup load() does (models dir layouts, then the HF cache)
        except MissingWeightsError as e:
            return [e]
        return []

    def load(self) -> None:
        self._clip = self._embedder()
        self._clip.load()  # MissingWeightsError naming the repo when the weights are not on disk
        self._prepare()

    def load_random(self, size: str = "tiny") -> None:
        from annotators.embeddings import _tiny_clip_config

        self._clip = self._embedder()
        if size == "tiny":
            self._clip.model_name = _tiny_clip_config()
        self._clip.load_random()
        self._prepare()

    def _prepare(self) -> None:
        """Text embeddings computed once per load."""

    def _embed_pairs(self, pairs: list[EditPair]) -> tuple[np.ndarray, np.ndarray]:
        return (self._clip.embed_images([p.source for p in pairs]), self._clip.embed_images([p.edited for p in pairs]))


class ClipDirectionParams(ClipParams):
    # the text direction is E_txt(template with the instruction) - E_txt(neutral caption)
    neutral_caption: str = "a photo."
    template: str = "{instruction}"


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def directional_similarity(src: np.ndarray, edt: np.ndarray, text: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """cos(edt - src, text - neutral) per row; every input is L2-normalised embeddings (rows). An edit that
    changes nothing (edt == src) has no direction: 0."""
    d_img = edt - src
    d_txt = text - neutral[None, :]
    norm = np.linalg.norm(d_img, axis=1)
    out = (_unit_rows(d_img) * _unit_rows(d_txt)).sum(axis=1)
    return np.where(norm > 1e-6, out, 0.0)


@register
class ClipDirection(ClipJudge):
    """CLIP directional similarity of the image change and the text change, and the image-image cosine."""

    name = "clip_direction"
    Params = ClipDirectionParams
    scores = ("direction", "image_image")

    def _prepare(self) -> None:
        self._neutral = self._clip.embed_texts([self.params.neutral_caption])[0]

    def score(self, pairs):
        if not pairs:
            return []
        src, edt = self._embed_pairs(pairs)
        text = self._clip.embed_texts([self.params.template.format(instruction=p.instruction) for p in pairs])
        direction = directional_similarity(src, edt, text, self._neutral)
        image_image = (src * edt).sum(axis=1)
        return [{"direction": round(float(d), 6), "image_image": round(float(c), 6)}
                for d, c in zip(direction, image_image)]


class ClipIqaJudgeParams(ClipParams):
    prompts: tuple[str, str] = ("Good photo.", "Bad photo.")  # (good, bad): CLIP-IQA's antonym pair


@register
class ClipIqa(ClipJudge):
    """CLIP-IQA of the edited and the source image (annotators/image_quality.py's score)."""

    name = "clip_iqa"
    Params = ClipIqaJudgeParams
    scores = ("edited", "source", "delta")

    def _prepare(self) -> None:
        self._prompts = self._clip.embed_texts(list(self.params.prompts))

    def score(self, pairs):
        from annotators.image_quality import clip_iqa_scores

        if not pairs:
            return []
        src, edt = self._embed_pairs(pairs)
        q_src, q_edt = clip_iqa_scores(src, self._prompts), clip_iqa_scores(edt, self._prompts)
        return [{"edited": round(float(e), 6), "source": round(float(s), 6), "delta": round(float(e - s), 6)}
                for e, s in zip(q_edt, q_src)]


# --- Qwen2.5-VL: the prompt and the parser, in one place -------------------------------------------

JUDGE_PROMPT = (
    "The first image is a photo. The second image is the same photo after an edit whose instruction was: "
    "\"{instruction}\".\n"
    "Rate from 1 (not at all) to 5 (completely):\n"
    "follows: does the second image carry out the instruction?\n"
    "preserves: is everything the instruction does not ask to change left as it was?\n"
    "Answer only with JSON: {{\"follows\": <1-5>, \"preserves\": <1-5>}}"
)
QWEN_JUDGE_SYSTEM = "You are a careful judge of image edits."
VISION = "<|vision_start|><|image_pad|><|vision_end|>"


def judge_chat_prompt(instruction: str, template: str = JUDGE_PROMPT, system: str = QWEN_JUDGE_SYSTEM) -> str:
    """Qwen's chat format with the two images (source, edited) before the question."""
    text = template.format(instruction=" ".join(instruction.split()).replace('"', "'"))
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{VISION}{VISION}{text}<|im_end|>\n"
            "<|im_start|>assistant\n")


_FENCE = re.compile(r"```(?:json)?", re.IGNORECASE)
_NUMBER = r"(\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(\d+))?"  # a rating, and the scale it is out of
_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_FOLLOWS = r"follows?|following|instruction(?:[ _-]following)?|edit[ _-]?accuracy|compliance"
_PRESERVES = r"preserves?|preservation|preserved|keeps?|kept|unchanged|consistency|fidelity"
_KEYED = re.compile(rf"\b({_FOLLOWS}|{_PRESERVES})\b[\"']?\s*(?:[:=]|is|-)?\s*[\"']?\s*(?:{_NUMBER}|(yes|no)\b)",
                    re.IGNORECASE)
# a rating with its scale ("4/5", "8 out of 10"), and one after a cue word ("Score: 4", "rate it 3")
_SCALED = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*(?:/|out of)\s*(\d+)(?![\w.])", re.IGNORECASE)
_CUED = re.compile(rf"\b(?:score|rating|rated?|overall|give it)\b\W{{0,3}}(?:(?:it|a|an)\s+)?{_NUMBER}", re.IGNORECASE)


def _rating(value: str, scale: str | None = None) -> float | None:
    """A rating on the 1-5 scale ("8/10" and "80 out of 100" mapped linearly onto it), or None."""
    try:
        v = float(value)
    except ValueError:
        return None
    if scale is not None:
        top = float(scale)
        if top <= 0 or not 0 <= v <= top:
            return None
        if top != 5:
            v = 1 + 4 * v / top
    return round(v, 3) if 1 <= v <= 5 else None


def _yes_no(word: str) -> float:
    return 5.0 if word.lower() == "yes" else 1.0


def _kind(key: str) -> str | None:
    if re.fullmatch(rf"(?:{_FOLLOWS})", key, re.IGNORECASE):
        return "follows"
    if re.fullmatch(rf"(?:{_PRESERVES})", key, re.IGNORECASE):
        return "preserves"
    return "any" if re.fullmatch(r"score|rating|overall", key, re.IGNORECASE) else None


def _json_ratings(text: str) -> dict[str, float | None]:
    """The ratings of the JSON object in the answer (first and last brace), by key."""
    start, end = text.find("{"), text.rfind("}")
    try:
        data = json.loads(text[start:end + 1]) if 0 <= start < end else None
    except ValueError:
        return {}
    out: dict[str, float | None] = {}
    for key, value in (data.items() if isinstance(data, dict) else ()):
        kind = _kind(str(key))
        if isinstance(value, bool):
            value = "yes" if value else "no"
        if kind is None or not isinstance(value, (str, int, float)):
            continue
        value = str(value).strip()
        m = re.fullmatch(_NUMBER, value)
        out.setdefault(kind, _rating(m.group(1), m.group(2)) if m else
                       _yes_no(value) if value.lower() in ("yes", "no") else None)
    return out


def _said(found: dict) -> bool:
    return any(v is not None for v in found.values())


def parse_judge_answer(text: str) -> dict[str, float | None]:
    """{follows, preserves, overall} on the 1-5 scale from a VLM answer; None where it does not say.

    Tried in turn: the JSON object the prompt asks for (other key names, string values, "4/5" and
    yes/no accepted); `follows: 4, preserves: 5` in prose; a leading yes / no (5 / 1 for both); one
    rating for both: the whole answer ("4", "8/10", "four"), one after a cue ("Score: 4", "I'd rate
    it 3") or with its scale ("4 out of 5"), never a digit inside other text. Never raises. `overall` is the lower of
    the two, None unless both are known (a cut-off answer that rated only one passes no threshold)."""
    text = _FENCE.sub("", text or "").strip()
    found = _json_ratings(text)
    words = re.sub(r"\b(one|two|three|four|five)\b", lambda m: _WORDS[m.group(1).lower()], text, flags=re.IGNORECASE)
    if not _said(found):
        found = {}
        for m in _KEYED.finditer(words):
            rating = _yes_no(m.group(4)) if m.group(4) else _rating(m.group(2), m.group(3))
            if found.get(_kind(m.group(1))) is None:
                found[_kind(m.group(1))] = rating
    if not _said(found):
        yes_no = re.match(r"\W*(yes|no)\b", words, re.IGNORECASE)
        whole = re.fullmatch(rf"\W*{_NUMBER}\W*", words)  # the answer is a number
        cued = [whole] if whole else [*_CUED.finditer(words), *_SCALED.finditer(words)]
        ratings = {r for r in (_rating(m.group(1), m.group(2)) for m in cued) if r is not None}
        if yes_no:
            found = {"any": _yes_no(yes_no.group(1))}
        elif len(ratings) == 1:  # one rating, said once or repeated: both; two different ones: ambiguous
            found = {"any": ratings.pop()}
    follows = found.get("follows") if found.get("follows") is not None else found.get("any")
    preserves = found.get("preserves") if found.get("preserves") is not None else found.get("any")
    overall = min(follows, preserves) if follows is not None and preserves is not None else None
    return {"follows": follows, "preserves": preserves, "overall": overall}


class QwenJudgeParams(JudgeParams):
    repo_id: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    prompt: str = JUDGE_PROMPT  # `{instruction}` is replaced by the pair's instruction
    max_new_tokens: int = Field(32, ge=4, le=512)
    min_pixels: int = Field(128 * 28 * 28, ge=4 * 28 * 28)  # per image (two images per pair)
    max_pixels: int = Field(512 * 28 * 28, ge=4 * 28 * 28)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@register
class QwenVLJudge(Judge):
    """Qwen2.5-VL asked whether the edited image follows the instruction and keeps the rest."""

    name = "qwen_vl"
    Params = QwenJudgeParams
    scores = ("follows", "preserves", "overall")
    resources = Resources(batch_size=4, concurrency=1, num_gpus=1.0, num_cpus=1.0)

    def required_weights(self) -> tuple[WeightSpec, ...]:
        return (WeightSpec(self.params.repo_id, None, "Qwen2.5-VL Instruct (the VLM edit judge)"),)

    def load(self) -> None:
        from annotators.grounding import QwenVL

        p = self.params
        missing = self.missing_weights()  # named with the judge's params key, before transformers loads
        if missing:
            raise missing[0]
        self._vlm = QwenVL.from_pretrained(p.repo_id, self.models_dir, self.device, p.dtype, p.min_pixels,
                                           p.max_pixels)

    def load_random(self, size: str = "tiny") -> None:
        from annotators.grounding import QwenVL

        self._vlm = QwenVL.random(size, self.device, self.params.min_pixels, self.params.max_pixels)

    def answers(self, pairs: list[EditPair]) -> list[str]:
        """The model's greedy answers, one per pair (both images in one prompt)."""
        import torch

        vlm = self._vlm
        prompts = [judge_chat_prompt(p.instruction, self.params.prompt) for p in pairs]
        images = [im for p in pairs for im in (p.source, p.edited)]
        batch = vlm.processor(text=prompts, images=images, return_tensors="pt", padding=True).to(vlm.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(vlm.model.dtype)
        with torch.inference_mode():
            generated = vlm.model.generate(**batch, max_new_tokens=self.params.max_new_tokens, do_sample=False)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in vlm.processor.batch_decode(new_tokens, skip_special_tokens=True)]

    def score(self, pairs):
        return [parse_judge_answer(a) for a in self.answers(pairs)] if pairs else []
