"""`depth_edit` -> DepthEdit (Graph200K's "background changed" edit): the image regenerated under its depth map.

FLUX.1-Depth-dev through `FluxControlPipeline`: the stored `depth` node is the control image,
the prompt a new scene (template bank, or the prompt model) around the caption when the
annotator is given one. One output per image, as in Graph200K.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from core.weights import WeightSpec
from annotators.generative import loader, prompts
from annotators.generative.common import (PROMPT_MODEL_WEIGHTS, CaptionParams, GenerativeAnnotator, Job,
                                          flux_call_args)
from annotators.generative.nodes import MAX_OUTPUTS, output_nodes
from annotators.registry import register

DEPTH_REPO = "black-forest-labs/FLUX.1-Depth-dev"


class DepthEditParams(CaptionParams):
    max_outputs: ClassVar[int] = MAX_OUTPUTS["DepthEdit"]

    repo_id: str = DEPTH_REPO
    steps: int = Field(28, ge=1, le=200)
    guidance: float = Field(10.0, ge=0.0, le=100.0)  # FLUX.1-Depth-dev's recommended distilled guidance
    outputs: int = Field(MAX_OUTPUTS["DepthEdit"], ge=1)


@register
class DepthEdit(GenerativeAnnotator):
    """FLUX.1-Depth regeneration with a new scene. meta: scene, prompt, seed, model, steps, guidance,
    scheduler, size, dtype (and `outputs`, the list of every output's record, on the DepthEdit row)."""

    name = "depth_edit"
    base_node = "DepthEdit"
    max_outputs = MAX_OUTPUTS["DepthEdit"]
    produces = output_nodes("DepthEdit", MAX_OUTPUTS["DepthEdit"])
    requires = ("image", "depth")
    version = "1"
    Params = DepthEditParams
    weights = (WeightSpec(DEPTH_REPO, None, "FLUX.1 Depth [dev]: FluxControlPipeline (DepthEdit)"),
               PROMPT_MODEL_WEIGHTS)

    def build_pipeline(self):
        from diffusers import FluxControlPipeline

        return self._place(loader.from_pretrained(FluxControlPipeline, self.params.repo_id, self.models_dir,
                                                  self.dtype))

    def build_random(self, size: str):
        from diffusers import FluxControlPipeline

        from annotators.generative import tiny

        return self._place(FluxControlPipeline(**tiny.flux_components(size, "control")))

    def plan_image(self, item, image_id):
        p = self.params
        h, w = item["image"].shape[:2]
        depth = item["depth"]
        if depth.shape[:2] != (h, w):
            depth = loader.resize_rgb(depth if depth.ndim == 3 else np.repeat(depth[..., None], 3, axis=2), h, w)
        size = loader.generation_size(h, w, p.resolution)
        control = loader.to_pil(depth, size)
        caption = self.caption(item, image_id)
        seeds = [self.seed(image_id, k) for k in range(p.outputs)]
        if self.prompter is not None:
            scenes = self.prompter.write([prompts.scene_change_request(caption)] * p.outputs,
                                         [self.seed(image_id, k, "prompt") for k in range(p.outputs)])
        else:
            scenes = self.distinct_picks(prompts.SCENES, image_id, "scenes", p.outputs)
        return [Job(item=-1, index=k, seed=seed, prompt=prompts.depth_prompt(scene, caption), size=size,
                    cond={"control": control}, record={"scene": scene, "prompt_source": p.prompt_source})
                for k, (seed, scene) in enumerate(zip(seeds, scenes))]

    def generate(self, jobs: list[Job]) -> list[np.ndarray]:
        import torch

        embeds, pooled = self.flux_embeddings(self.pipe, [j.prompt for j in jobs])
        with torch.inference_mode():
            result = self.pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled,
                               control_image=[j.cond["control"] for j in jobs], **flux_call_args(self.params, jobs))
        return loader.to_uint8(result.images)
