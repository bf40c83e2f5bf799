"""Prompts for the generative nodes: a documented template set, or a causal LM (transformers).

Templates (the default, `prompt_source: templates`) draw, with the output's seed, from the
banks below and fill the text in with what is known of the image: the grounding's object
name (FillEdit) and, when the annotator was given a caption, the caption. A prompt model
(`prompt_source: model`) is any transformers causal LM; it is asked for one sentence per
request (chat template when the tokenizer has one), sampled with the output's seed.

Every choice depends only on the seed, so an output's prompt is a pure function of
(image id, node, output index, seed salt).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# (name, description) of new subjects for FillEdit; Graph200K stores both per output.
SUBJECTS: tuple[tuple[str, str], ...] = (
    ("teddy bear", "a plush brown teddy bear with a red ribbon"),
    ("vase of tulips", "a glass vase holding yellow and red tulips"),
    ("vintage camera", "a black and silver vintage film camera"),
    ("potted cactus", "a small round cactus in a terracotta pot"),
    ("ceramic teapot", "a blue and white painted ceramic teapot"),
    ("leather backpack", "a tan leather backpack with brass buckles"),
    ("red sports car", "a glossy red two-door sports car"),
    ("golden retriever", "a golden retriever sitting with its tongue out"),
    ("tabby cat", "an orange tabby cat curled up"),
    ("wooden chair", "a carved oak chair with a woven seat"),
    ("stack of books", "a stack of old hardcover books with worn spines"),
    ("acoustic guitar", "a natural wood acoustic guitar"),
    ("bicycle", "a mint green city bicycle with a wicker basket"),
    ("robot toy", "a tin robot toy with round eyes and antennae"),
    ("pineapple", "a ripe pineapple with spiky green leaves"),
    ("table lamp", "a brass table lamp with a pleated linen shade"),
    ("sneakers", "a pair of white canvas sneakers"),
    ("snow globe", "a snow globe with a tiny wooden cabin inside"),
    ("parrot", "a scarlet macaw parrot with spread wings"),
    ("birthday cake", "a two-tier birthday cake with candles"),
    ("sand castle", "a sand castle with towers and a moat"),
    ("hot air balloon", "a striped hot air balloon in flight"),
    ("marble statue", "a white marble bust of a woman"),
    ("rubber duck", "a yellow rubber duck"),
)

# New scenes for DepthEdit (background changed, layout kept by the depth map).
SCENES: tuple[str, ...] = (
    "in a snowy mountain village at dusk", "on a sunlit beach with turquoise water",
    "in a neon-lit city street at night, wet pavement", "in a misty pine forest in the morning",
    "inside a cosy library with warm lamps", "in a desert of red dunes under a clear sky",
    "in a blooming spring garden", "on the deck of a ship on a stormy sea",
    "in an autumn park with orange leaves", "in a futuristic white laboratory",
    "in a medieval stone castle hall", "on a rooftop terrace above a city at sunset",
    "in an underwater coral reef", "in a rustic farmhouse kitchen",
    "on a lunar landscape with the earth in the sky", "in a tropical rainforest after rain",
)

# (style name, style description) for the style references and the stylised outputs.
STYLES: tuple[tuple[str, str], ...] = (
    ("watercolor", "watercolor painting, soft washes, visible paper texture"),
    ("oil painting", "thick impasto oil painting, bold brush strokes"),
    ("ukiyo-e", "ukiyo-e woodblock print, flat colours, fine outlines"),
    ("pixel art", "16-bit pixel art, limited palette"),
    ("pencil sketch", "graphite pencil sketch, cross-hatching"),
    ("art deco", "art deco poster, geometric shapes, gold and black"),
    ("pop art", "pop art, halftone dots, saturated primaries"),
    ("studio ghibli", "hand-drawn anime background painting, soft light"),
    ("stained glass", "stained glass window, leaded outlines, jewel colours"),
    ("claymation", "claymation, soft clay textures, miniature set"),
    ("van gogh", "post-impressionist painting, swirling brush strokes"),
    ("cyberpunk", "cyberpunk illustration, neon magenta and cyan glow"),
    ("low poly", "low poly 3D render, faceted surfaces"),
    ("charcoal", "charcoal drawing, smudged dark tones"),
    ("mosaic", "roman tile mosaic, small square tesserae"),
    ("paper cut", "layered paper-cut craft, soft shadows"),
)

# Motifs the style references are rendered with when no style bank is given.
STYLE_MOTIFS: tuple[str, ...] = (
    "a landscape with a river", "a still life of fruit", "a portrait of a woman", "a city skyline",
    "a cat on a windowsill", "flowers in a field", "boats in a harbour", "a mountain cabin",
)

# Edit instructions for the analogous pairs (VIRAL's second stream) when params give none.
INSTRUCTIONS: tuple[str, ...] = (
    "make it winter with snow everywhere", "turn the scene into night", "make it look like a watercolor painting",
    "add a rainbow in the sky", "change the season to autumn", "make the photo black and white",
    "put a red hat on the main subject", "make it look like it is underwater",
)


def pick(bank, seed: int):
    """One entry of a bank chosen by the seed (random.Random: stable across platforms)."""
    return bank[random.Random(seed).randrange(len(bank))]


def caption_text(item: dict) -> str:
    """The image's caption, when the annotator received a `caption` node; else ''."""
    return str((item.get("caption.meta") or {}).get("text") or "").strip()


def fill_prompt(description: str, caption: str) -> str:
    return f"{description}, in the same place and light as the rest of the photo" + (f"; {caption}" if caption else "")


def depth_prompt(scene: str, caption: str) -> str:
    subject = caption.rstrip(".") if caption else "the same composition"
    return f"a photo of {subject}, {scene}, highly detailed"


def style_reference_prompt(style: str, motif: str) -> str:
    return f"{motif}, {style}"


def stylised_prompt(style: str, content: str) -> str:
    return f"{content}, {style}"


def scene_request(instruction: str) -> str:
    """What the prompt model is asked for an analogous pair."""
    return (f"Describe in one sentence a photograph to which the edit \"{instruction}\" can be applied. "
            f"Describe only the photograph.")


def subject_request(name: str) -> str:
    return f"Describe in one short sentence a new object that could stand where the {name or 'main object'} is."


def scene_change_request(caption: str) -> str:
    return f"Describe in one short sentence a new setting for this photo: {caption or 'a photo'}."


_SPACE = re.compile(r"\s+")


def tidy(text: str, max_chars: int = 300) -> str:
    """One line, no surrounding quotes, cut at a sentence or word end within max_chars."""
    text = _SPACE.sub(" ", text).strip().strip("\"'").strip()
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind(" "))
        text = cut[:end] if end > 0 else cut
    return text


@dataclass
class PromptModel:
    """A causal LM that writes one sentence per request (batched, sampled with a seed per request)."""

    model: object
    tokenizer: object
    device: str
    max_new_tokens: int = 60
    temperature: float = 0.8
    repo_id: str = ""

    @classmethod
    def from_pretrained(cls, repo_id: str, models_dir, device: str, dtype, **kw) -> "PromptModel":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from annotators.generative.loader import repo_path

        path = repo_path(repo_id, models_dir, "prompt model (causal LM)")
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
        return cls(model.to(device).eval(), tok, device, repo_id=repo_id, **kw)

    @classmethod
    def random(cls, size: str, device: str, **kw) -> "PromptModel":
        from annotators.generative.tiny import causal_lm

        model, tok = causal_lm(size)
        return cls(model.to(device), tok, device, repo_id=f"random-{size}", **kw)

    def _render(self, request: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                                      add_generation_prompt=True)
        return request + "\n"

    def write(self, requests: list[str], seeds: list[int]) -> list[str]:
        """One completion per request. Each request is sampled alone with its own seed, so a text does not
        depend on its batch-mates (the prompt model is small next to the image model)."""
        import torch

        self.tokenizer.padding_side = "left"
        out = []
        for request, seed in zip(requests, seeds):
            enc = self.tokenizer([self._render(request)], return_tensors="pt").to(self.device)
            torch.manual_seed(seed % (2**63))
            with torch.inference_mode():
                ids = self.model.generate(**enc, do_sample=True, temperature=self.temperature, top_p=0.95,
                                          max_new_tokens=self.max_new_tokens, min_new_tokens=8,
                                          pad_token_id=self.tokenizer.pad_token_id)
            text = tidy(self.tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
            if not text:
                raise ValueError(f"prompt model {self.repo_id!r} wrote an empty text for: {request!r}")
            out.append(text)
        return out
