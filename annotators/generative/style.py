"""Graph200K's two style nodes, each a stylised image plus the style reference it was made from.

- `instant_style` -> InstantStyle (semantics kept): SDXL img2img from the source image with an
  IP-Adapter whose image branch is switched on only in the style block (InstantStyle: the first
  up block's second attention), so the reference gives colours and strokes, the source the content.
- `redux_style` -> ReduxStyle (semantics changed): FLUX.1-dev conditioned on the FLUX.1-Redux prior's
  embedding of the reference plus a content prompt (the caption when given, else a new subject).

The reference comes from a style bank (`style_bank`: a folder of images, picked by seed) or is
rendered by the same base pipeline from a style prompt (`STYLES` x `STYLE_MOTIFS`). Each output
k writes `<Node>_k` (the stylised image) and `<Node>_ref_k` (its reference, at the source's size).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from annotators.base import NodeOutput
from core.weights import WeightSpec
from annotators.generative import loader, prompts
from annotators.generative.common import CaptionParams, GenerativeAnnotator, Job, flux_call_args
from annotators.generative.nodes import MAX_OUTPUTS, output_node, reference_node
from annotators.registry import register

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
IP_ADAPTER_REPO = "h94/IP-Adapter"
IP_ADAPTER_FILE = "sdxl_models/ip-adapter_sdxl.safetensors"
IP_ENCODER_FILES = ("sdxl_models/image_encoder/config.json", "sdxl_models/image_encoder/model.safetensors")
FLUX_DEV_REPO = "black-forest-labs/FLUX.1-dev"
REDUX_REPO = "black-forest-labs/FLUX.1-Redux-dev"
FLUX_DEV_WEIGHTS = WeightSpec(FLUX_DEV_REPO, None,
                              "FLUX.1 [dev]: FluxPipeline (ReduxStyle, its references, analogous A)")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


class StyleParams(CaptionParams):
    prompt_source: Literal["templates"] = "templates"  # style and content prompts come from the banks
    style_bank: str | None = None  # folder of style images; None: render references from style prompts
    reference_steps: int | None = Field(None, ge=1, le=200)  # rendering a reference (None: `steps`)


def interleaved(base: str, n: int) -> tuple[str, ...]:
    """(Node, Node_ref, Node_1, Node_ref_1, ...): output k's two nodes side by side."""
    return tuple(x for k in range(n) for x in (output_node(base, k), reference_node(base, k)))


def bank_files(folder: str) -> list[Path]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"style_bank {folder!r} holds no {'/'.join(IMAGE_EXTENSIONS)} image")
    return files


class _StyleAnnotator(GenerativeAnnotator):
    @classmethod
    def nodes_per_output(cls) -> int:
        return 2

    def output_names(self, index: int) -> tuple[str, ...]:
        return output_node(self.base_node, index), reference_node(self.base_node, index)

    def load(self) -> None:
        super().load()
        self._bank = bank_files(self.params.style_bank) if self.params.style_bank else None

    def load_random(self, size: str = "tiny") -> None:
        super().load_random(size)
        self._bank = bank_files(self.params.style_bank) if self.params.style_bank else None

    def content_prompt(self, item: dict, image_id: str, k: int) -> str:
        raise NotImplementedError

    def plan_image(self, item, image_id):
        p = self.params
        h, w = item["image"].shape[:2]
        size = loader.generation_size(h, w, p.resolution)
        styles = self.distinct_picks(prompts.STYLES, image_id, "styles", p.outputs)
        motifs = self.distinct_picks(prompts.STYLE_MOTIFS, image_id, "motifs", p.outputs)
        jobs = []
        for k in range(p.outputs):
            style_name, style_desc = styles[k]
            record = {"reference_node": reference_node(self.base_node, k), "prompt_source": p.prompt_source}
            if self._bank is not None:
                path = self._bank[self.seed(image_id, k, "bank") % len(self._bank)]
                from PIL import Image

                with Image.open(path) as im:
                    reference = loader.to_pil(np.asarray(im.convert("RGB")), size)
                style_name, style_desc = path.stem, ""
                record.update(style=path.stem, style_source=str(path))
            else:
                reference = None
                record.update(style=style_name, style_source="generated",
                              reference_prompt=prompts.style_reference_prompt(style_desc, motifs[k]),
                              reference_seed=self.seed(image_id, k, "reference"))
            content = self.content_prompt(item, image_id, k)
            prompt = prompts.stylised_prompt(style_desc, content) if style_desc else content
            record["content"] = content
            jobs.append(Job(item=-1, index=k, seed=self.seed(image_id, k), prompt=prompt, size=size,
                            cond={"reference": reference, "source": loader.to_pil(item["image"], size)},
                            record=record))
        return jobs

    def render_references(self, jobs: list[Job]) -> None:
        """Jobs without a bank reference get one rendered by the base pipeline (one batched call)."""
        todo = [j for j in jobs if j.cond["reference"] is None]
        if not todo:
            return
        images = self.text_to_image([j.record["reference_prompt"] for j in todo],
                                    [j.record["reference_seed"] for j in todo], todo[0].size)
        for job, pixels in zip(todo, images):
            job.cond["reference"] = loader.to_pil(pixels)

    def text_to_image(self, prompts_: list[str], seeds: list[int], size: tuple[int, int]) -> list[np.ndarray]:
        raise NotImplementedError

    def finish(self, item, job, generated):
        h, w = item["image"].shape[:2]
        out_name, ref_name = self.output_names(job.index)
        reference = np.asarray(job.cond["reference"].convert("RGB"))
        record = self.record(job)
        return {out_name: NodeOutput(loader.resize_rgb(generated, h, w), record),
                ref_name: NodeOutput(loader.resize_rgb(reference, h, w),
                                     {"index": job.index, "stylised_node": out_name, "style": record["style"],
                                      "style_source": record["style_source"],
                                      **({"prompt": record["reference_prompt"], "seed": record["reference_seed"]}
                                         if record["style_source"] == "generated" else {})})}


# ----------------------------------------------------------------------------- InstantStyle

class InstantStyleParams(StyleParams):
    max_outputs: ClassVar[int] = MAX_OUTPUTS["InstantStyle"]

    repo_id: str = SDXL_REPO
    ip_adapter_repo: str = IP_ADAPTER_REPO
    steps: int = Field(30, ge=1, le=200)
    guidance: float = Field(5.0, ge=0.0, le=30.0)  # classifier-free guidance (SDXL)
    resolution: int = Field(1024, ge=16, le=2048)  # SDXL's native area
    outputs: int = Field(MAX_OUTPUTS["InstantStyle"], ge=1)
    strength: float = Field(0.6, gt=0.0, le=1.0)  # img2img: how far from the source (content kept below 1)
    style_scale: float = Field(1.0, ge=0.0, le=2.0)  # IP-Adapter scale in the style block (0 elsewhere)
    negative_prompt: str = "text, watermark, lowres, blurry"


def style_block_scale(unet, scale: float) -> dict:
    """InstantStyle: the IP-Adapter acts only in up_blocks.0's second attention (the style layer)."""
    n = len(unet.up_blocks[0].attentions)
    layers = [0.0] * n
    layers[min(1, n - 1)] = scale
    return {"up": {"block_0": layers}}


@register
class InstantStyle(_StyleAnnotator):
    """SDXL img2img + IP-Adapter on the style block. meta: style, style_source, content, prompt, seed,
    model, steps, guidance, strength, style_scale, scheduler, size, dtype, reference_node."""

    name = "instant_style"
    base_node = "InstantStyle"
    max_outputs = MAX_OUTPUTS["InstantStyle"]
    produces = interleaved("InstantStyle", MAX_OUTPUTS["InstantStyle"])
    requires = ("image",)
    version = "1"
    Params = InstantStyleParams
    weights = (WeightSpec(SDXL_REPO, None, "SDXL base 1.0 (InstantStyle)"),
               WeightSpec(IP_ADAPTER_REPO, IP_ADAPTER_FILE, "IP-Adapter SDXL (InstantStyle style injection)"),
               *(WeightSpec(IP_ADAPTER_REPO, f, "IP-Adapter SDXL image encoder (ViT-bigG)") for f in IP_ENCODER_FILES))

    def build_pipeline(self):
        from diffusers import StableDiffusionXLImg2ImgPipeline
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from core.weights import resolve

        p = self.params
        adapter = resolve(WeightSpec(p.ip_adapter_repo, IP_ADAPTER_FILE), self.models_dir)
        encoder = [resolve(WeightSpec(p.ip_adapter_repo, f), self.models_dir) for f in IP_ENCODER_FILES][0].parent
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(str(encoder), dtype=self.dtype,
                                                                      local_files_only=True)
        side = image_encoder.config.image_size  # the adapter's folder ships no processor config: CLIP's at its size
        processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        pipe = loader.from_pretrained(StableDiffusionXLImg2ImgPipeline, p.repo_id, self.models_dir, self.dtype,
                                      image_encoder=image_encoder, feature_extractor=processor)
        root = adapter.parents[1]  # <repo>/sdxl_models/<file>
        pipe.load_ip_adapter(str(root), subfolder="sdxl_models", weight_name=adapter.name, image_encoder_folder=None,
                             local_files_only=True)
        return self._ready(pipe)

    def build_random(self, size: str):
        from diffusers import StableDiffusionXLImg2ImgPipeline

        from annotators.generative import tiny

        parts = tiny.sdxl_components(size)
        pipe = StableDiffusionXLImg2ImgPipeline(**parts)
        state = tiny.ip_adapter_state_dict(parts["unet"], parts["image_encoder"].config.projection_dim)
        pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)
        return self._ready(pipe)

    def _ready(self, pipe):
        from diffusers import StableDiffusionXLPipeline

        pipe.set_ip_adapter_scale(style_block_scale(pipe.unet, self.params.style_scale))
        pipe = self._place(pipe)
        # the same modules render references from text (no second copy of the weights)
        self.t2i = StableDiffusionXLPipeline(**{k: v for k, v in pipe.components.items()})
        self.t2i.set_progress_bar_config(disable=True)
        return pipe

    def content_prompt(self, item, image_id, k):
        return self.caption(item, image_id) or "a photo"

    def _embeds(self, pipe, prompt_list: list[str]):
        import torch

        unique = list(dict.fromkeys(prompt_list))
        with torch.inference_mode():
            e, ne, pe, npe = pipe.encode_prompt(prompt=unique, device=self.device, num_images_per_prompt=1,
                                                do_classifier_free_guidance=True,
                                                negative_prompt=[self.params.negative_prompt] * len(unique))
        idx = torch.tensor([unique.index(x) for x in prompt_list], device=e.device)
        return dict(prompt_embeds=e[idx], negative_prompt_embeds=ne[idx], pooled_prompt_embeds=pe[idx],
                    negative_pooled_prompt_embeds=npe[idx])

    def text_to_image(self, prompt_list, seeds, size):
        import torch

        p = self.params
        blank = self._image_embeds([loader.to_pil(np.zeros((*size, 3), np.uint8))] * len(prompt_list))
        # a reference is text-to-image only: the adapter's image branch is off everywhere meanwhile
        self.pipe.set_ip_adapter_scale(0.0)
        try:
            with torch.inference_mode():
                result = self.t2i(**self._embeds(self.t2i, prompt_list), height=size[0], width=size[1],
                                  num_inference_steps=p.reference_steps or p.steps, guidance_scale=p.guidance,
                                  ip_adapter_image_embeds=blank,
                                  generator=[loader.generator(s, "cpu") for s in seeds], output_type="np")
        finally:
            self.pipe.set_ip_adapter_scale(style_block_scale(self.pipe.unet, p.style_scale))
        return loader.to_uint8(result.images)

    def _image_embeds(self, references):
        """IP-Adapter image embeddings, one reference per prompt: [(2B, 1, D)] = [negative; positive]."""
        import torch

        with torch.inference_mode():
            embeds, negative = self.pipe.encode_image(references, self.device, 1, output_hidden_states=False)
        return [torch.cat([negative, embeds])[:, None]]

    def generate(self, jobs):
        import torch

        p = self.params
        self.render_references(jobs)
        with torch.inference_mode():
            result = self.pipe(**self._embeds(self.pipe, [j.prompt for j in jobs]),
                               image=[j.cond["source"] for j in jobs], strength=p.strength,
                               ip_adapter_image_embeds=self._image_embeds([j.cond["reference"] for j in jobs]),
                               num_inference_steps=p.steps, guidance_scale=p.guidance,
                               generator=[loader.generator(j.seed, "cpu") for j in jobs], output_type="np")
        for j in jobs:
            j.record.update(strength=p.strength, style_scale=p.style_scale, negative_prompt=p.negative_prompt)
        return loader.to_uint8(result.images)


# ----------------------------------------------------------------------------- ReduxStyle

class ReduxStyleParams(StyleParams):
    max_outputs: ClassVar[int] = MAX_OUTPUTS["ReduxStyle"]

    repo_id: str = FLUX_DEV_REPO
    redux_repo: str = REDUX_REPO
    steps: int = Field(28, ge=1, le=200)
    guidance: float = Field(2.5, ge=0.0, le=100.0)  # FLUX.1-dev distilled guidance (Redux's recommended)
    outputs: int = Field(MAX_OUTPUTS["ReduxStyle"], ge=1)
    prompt_embeds_scale: float = Field(1.0, ge=0.0, le=2.0)  # weight of the Redux image tokens
    pooled_prompt_embeds_scale: float = Field(1.0, ge=0.0, le=2.0)


@register
class ReduxStyle(_StyleAnnotator):
    """FLUX.1-Redux prior (SigLIP image tokens of the reference + the content prompt) -> FLUX.1-dev.
    meta: style, style_source, content, prompt, seed, model, redux_model, steps, guidance, scheduler,
    size, dtype, reference_node."""

    name = "redux_style"
    base_node = "ReduxStyle"
    max_outputs = MAX_OUTPUTS["ReduxStyle"]
    produces = interleaved("ReduxStyle", MAX_OUTPUTS["ReduxStyle"])
    requires = ("image",)
    version = "1"
    Params = ReduxStyleParams
    weights = (FLUX_DEV_WEIGHTS,
               WeightSpec(REDUX_REPO, None, "FLUX.1 Redux [dev]: FluxPriorReduxPipeline (ReduxStyle)"))

    def build_pipeline(self):
        from diffusers import FluxPipeline, FluxPriorReduxPipeline

        pipe = self._place(loader.from_pretrained(FluxPipeline, self.params.repo_id, self.models_dir, self.dtype))
        text = {k: getattr(pipe, k) for k in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")}
        self.prior = self._place(loader.from_pretrained(FluxPriorReduxPipeline, self.params.redux_repo,
                                                        self.models_dir, self.dtype, **text))
        return pipe

    def build_random(self, size: str):
        from diffusers import FluxPipeline, FluxPriorReduxPipeline

        from annotators.generative import tiny

        parts = tiny.flux_components(size, "base")
        pipe = self._place(FluxPipeline(**parts))
        self.prior = self._place(FluxPriorReduxPipeline(**tiny.redux_prior(size, parts)))
        return pipe

    def content_prompt(self, item, image_id, k):
        caption = self.caption(item, image_id)
        if caption:
            return caption
        return self.distinct_picks(prompts.SUBJECTS, image_id, "subjects", self.params.outputs)[k][1]

    def text_to_image(self, prompt_list, seeds, size):
        import torch

        p = self.params
        embeds, pooled = self.flux_embeddings(self.pipe, prompt_list)
        fake = [Job(item=0, index=0, seed=s, prompt="", size=size) for s in seeds]
        args = flux_call_args(p, fake)
        args["num_inference_steps"] = p.reference_steps or p.steps
        with torch.inference_mode():
            result = self.pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, **args)
        return loader.to_uint8(result.images)

    def redux_embeddings(self, references, prompt_list):
        """The Redux prior's conditioning, one reference per prompt: [T5 text tokens; Redux image tokens]
        scaled, and the scaled CLIP pooled text. (FluxPriorReduxPipeline.__call__ sums a list of
        references into one conditioning; a batch needs one per image, so its parts are called here.)"""
        import torch

        p = self.params
        text, pooled = self.flux_embeddings(self.pipe, prompt_list)
        with torch.inference_mode():
            latents = self.prior.encode_image(references, self.device, 1)
            image_tokens = self.prior.image_embedder(latents).image_embeds.to(text.dtype)
        return torch.cat([text, image_tokens], dim=1) * p.prompt_embeds_scale, pooled * p.pooled_prompt_embeds_scale

    def generate(self, jobs):
        import torch

        p = self.params
        self.render_references(jobs)
        embeds, pooled = self.redux_embeddings([j.cond["reference"] for j in jobs], [j.prompt for j in jobs])
        with torch.inference_mode():
            result = self.pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, **flux_call_args(p, jobs))
        for j in jobs:
            j.record.update(redux_model=p.redux_repo, prompt_embeds_scale=p.prompt_embeds_scale)
        return loader.to_uint8(result.images)
