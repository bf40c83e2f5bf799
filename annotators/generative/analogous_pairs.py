"""`analogous_pairs`: VIRAL's synthesised edit stream, (A, A') pairs that share an edit instruction.

For each image slot the annotator draws one instruction (params `instructions`, seeded by the
image id), a causal LM writes K scene descriptions that suit it, FLUX.1-dev renders each scene
as A, and FLUX.1-Kontext-dev applies the instruction to A, giving A'. The K pairs of one slot
share their instruction, so any two of them form an (A, A', B, B') quadruplet of one task.

The input image only names the slot (its id seeds the draw); its pixels are not used. Nodes:
`analogous_source` / `analogous_edit` (pair 0), `analogous_source_k` / `analogous_edit_k`. Both
rows of a pair carry `instruction` in meta (as the synthetic edits do), the edit's meta names
its source node (`source_node`) and the pair's id (`pair_id`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from annotators.base import NodeOutput
from core.weights import WeightSpec
from annotators.generative import loader, prompts
from annotators.generative.common import (PROMPT_MODEL_DEFAULT, PROMPT_MODEL_WEIGHTS, GenerativeAnnotator,
                                          GenerativeParams, Job, flux_call_args)
from annotators.generative.nodes import ANALOGOUS_EDIT, ANALOGOUS_SOURCE, MAX_ANALOGOUS_PAIRS, output_node
from annotators.generative.style import FLUX_DEV_REPO, FLUX_DEV_WEIGHTS
from annotators.registry import register

KONTEXT_REPO = "black-forest-labs/FLUX.1-Kontext-dev"


class AnalogousPairsParams(GenerativeParams):
    max_outputs: ClassVar[int] = MAX_ANALOGOUS_PAIRS

    repo_id: str = FLUX_DEV_REPO  # text-to-image (A)
    edit_repo: str = KONTEXT_REPO  # instruction editing (A')
    steps: int = Field(28, ge=1, le=200)
    guidance: float = Field(3.5, ge=0.0, le=100.0)  # FLUX.1-dev
    edit_steps: int = Field(28, ge=1, le=200)
    edit_guidance: float = Field(2.5, ge=0.0, le=100.0)  # FLUX.1-Kontext-dev
    outputs: int = Field(MAX_ANALOGOUS_PAIRS, ge=1)  # K: pairs (scenes) per instruction draw
    instructions: list[str] = Field(default_factory=lambda: list(prompts.INSTRUCTIONS), min_length=1)
    prompt_source: Literal["model"] = "model"  # the scenes are always written by the prompt model
    prompt_model: str = PROMPT_MODEL_DEFAULT
    max_new_tokens: int = Field(60, ge=8, le=300)


@register
class AnalogousPairs(GenerativeAnnotator):
    """Prompt LM -> FLUX.1-dev (A) -> FLUX.1-Kontext (A'). meta of both nodes: instruction, scene,
    pair_id, prompt, seed, model, steps, guidance, scheduler, size, dtype, prompt_model; the edit
    also source_node, and its own edit_model/edit_steps/edit_guidance/edit_seed."""

    name = "analogous_pairs"
    base_node = ANALOGOUS_SOURCE
    max_outputs = MAX_ANALOGOUS_PAIRS
    produces = tuple(x for k in range(MAX_ANALOGOUS_PAIRS)
                     for x in (output_node(ANALOGOUS_SOURCE, k), output_node(ANALOGOUS_EDIT, k)))
    requires = ("image",)
    version = "2"  # 2: meta.transform_key (the instruction both pairs of a slot apply)
    Params = AnalogousPairsParams
    weights = (FLUX_DEV_WEIGHTS,
               WeightSpec(KONTEXT_REPO, None, "FLUX.1 Kontext [dev]: FluxKontextPipeline (analogous A')"),
               PROMPT_MODEL_WEIGHTS)

    @classmethod
    def nodes_per_output(cls) -> int:
        return 2

    def output_names(self, index: int) -> tuple[str, ...]:
        return output_node(ANALOGOUS_SOURCE, index), output_node(ANALOGOUS_EDIT, index)

    def needs_prompt_model(self) -> bool:
        return True

    def _load_prompter(self, size):
        prompter = super()._load_prompter(size)
        prompter.max_new_tokens = self.params.max_new_tokens
        return prompter

    def build_pipeline(self):
        from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel

        p = self.params
        t2i = self._place(loader.from_pretrained(FluxPipeline, p.repo_id, self.models_dir, self.dtype))
        # Kontext shares FLUX.1's text encoders and VAE: only its transformer is loaded a second time
        kontext = loader.repo_path(p.edit_repo, self.models_dir, "FLUX.1 Kontext")
        transformer = FluxTransformer2DModel.from_pretrained(str(kontext / "transformer"), dtype=self.dtype,
                                                             local_files_only=True)
        self.editor = self._place(FluxKontextPipeline(**{**t2i.components, "transformer": transformer,
                                                         "image_encoder": None, "feature_extractor": None}))
        return t2i

    def build_random(self, size: str):
        from diffusers import FluxKontextPipeline, FluxPipeline

        from annotators.generative import tiny

        parts = tiny.flux_components(size, "base")
        t2i = self._place(FluxPipeline(**parts))
        self.editor = self._place(FluxKontextPipeline(**{**parts, "transformer": tiny.flux_transformer(size, "base",
                                                                                                          seed=1)}))
        return t2i

    def plan_image(self, item, image_id):
        p = self.params
        instruction = prompts.pick(p.instructions, self.seed(image_id, 0, "instruction"))
        scenes = self.prompter.write([prompts.scene_request(instruction)] * p.outputs,
                                     [self.seed(image_id, k, "scene") for k in range(p.outputs)])
        size = loader.generation_size(p.resolution, p.resolution, p.resolution)
        return [Job(item=-1, index=k, seed=self.seed(image_id, k), prompt=scene, size=size,
                    record={"instruction": instruction, "transform_key": f"analogous:{instruction}", "scene": scene,
                            "pair_id": f"{image_id}-analogous-{k}", "prompt_model": self.prompter.repo_id,
                            "edit_seed": self.seed(image_id, k, "edit")})
                for k, scene in enumerate(scenes)]

    def generate(self, jobs):
        import torch

        p = self.params
        embeds, pooled = self.flux_embeddings(self.pipe, [j.prompt for j in jobs])
        with torch.inference_mode():
            sources = self.pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, **flux_call_args(p, jobs)).images
        sources = loader.to_uint8(sources)
        h, w = jobs[0].size
        instructions = [j.record["instruction"] for j in jobs]
        edit_embeds, edit_pooled = self.flux_embeddings(self.editor, instructions)
        args = flux_call_args(p, jobs)
        args.update(num_inference_steps=p.edit_steps, guidance_scale=p.edit_guidance,
                    generator=[loader.generator(j.record["edit_seed"], "cpu") for j in jobs])
        with torch.inference_mode():
            edits = self.editor(image=[loader.to_pil(s) for s in sources], prompt_embeds=edit_embeds,
                                pooled_prompt_embeds=edit_pooled, max_area=h * w, _auto_resize=False, **args).images
        edits = loader.to_uint8(edits)
        return [np.stack([s, e]) for s, e in zip(sources, edits)]  # one (2, H, W, 3) per job: A and A'

    def finish(self, item, job, generated):
        source_name, edit_name = self.output_names(job.index)
        record = self.record(job)
        p = self.params
        edit_record = {**record, "source_node": source_name, "prompt": record["instruction"],
                       "seed": record["edit_seed"], "model": self.model_id.replace(p.repo_id, p.edit_repo),
                       "pipeline": type(self.editor).__name__, "steps": p.edit_steps, "guidance": p.edit_guidance,
                       "scheduler": loader.scheduler_name(self.editor), "source_model": record["model"],
                       "source_steps": p.steps, "source_guidance": p.guidance, "scene_prompt": job.prompt}
        return {source_name: NodeOutput(generated[0], {**record, "edit_node": edit_name}),
                edit_name: NodeOutput(generated[1], edit_record)}
