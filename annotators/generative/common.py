"""The base of every generative annotator: params, loading, seeds, prompts, batching, output records.

A subclass says which pipeline it builds (`build_pipeline` from disk, `build_random` from
tiny configs), how one image becomes jobs (`plan_image`: one job per output with its prompt,
seed and conditioning) and how a batch of jobs is generated (`generate`: one pipeline call per
generation size, prompt embeddings computed once per call). The base turns the results into
NodeOutputs with a complete record per output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from annotators.base import Annotator, AnnotatorParams, NodeOutput, Resources, seed_for
from core.weights import WeightSpec
from annotators.generative import loader
from annotators.generative.nodes import output_nodes
from annotators.generative import prompts
from annotators.generative.prompts import PromptModel

PROMPT_MODEL_DEFAULT = "Qwen/Qwen2.5-1.5B-Instruct"
# one spec per repo (descriptions included), so `vicl models check` lists each repo once
PROMPT_MODEL_WEIGHTS = WeightSpec(PROMPT_MODEL_DEFAULT, None,
                                  "prompt model (analogous pairs; fill/depth with prompt_source: model)")


class GenerativeParams(AnnotatorParams):
    """Shared cost and reproducibility controls (subclasses set their own defaults)."""

    max_outputs: ClassVar[int] = 1

    repo_id: str = ""  # the pipeline repository (models dir or HF cache)
    steps: int = Field(28, ge=1, le=200)
    guidance: float = Field(3.5, ge=0.0, le=100.0)
    resolution: int = Field(512, ge=16, le=2048)  # generation area ≈ resolution², sides multiple of 16
    outputs: int = Field(1, ge=1)
    seed_salt: int = 0  # change to draw new seeds (and new prompts) for every output
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on a GPU, fp32 on the CPU
    max_sequence_length: int = Field(512, ge=16, le=512)  # T5 tokens (FLUX)
    prompt_source: Literal["templates", "model"] = "templates"
    prompt_model: str = PROMPT_MODEL_DEFAULT  # a transformers causal LM (prompt_source: model)

    @model_validator(mode="after")
    def _outputs_in_range(self):
        if self.outputs > self.max_outputs:
            raise ValueError(f"outputs: at most {self.max_outputs}")
        return self


class CaptionParams(GenerativeParams):
    """Params of the annotators whose prompts can carry the image's caption (fill, depth, styles)."""

    # read the image's `caption` node (a caption annotator must be configured; images without a
    # usable caption get no output) and put its text into every prompt
    use_caption: bool = False


class MissingCaptionError(ValueError):
    """`use_caption` is set but the item carries no caption node."""


@dataclass
class Job:
    """One output to generate: which image, which output, its seed, prompt and conditioning."""

    item: int
    index: int
    seed: int
    prompt: str
    size: tuple[int, int]  # generation (h, w)
    cond: dict[str, Any] = field(default_factory=dict)  # pipeline inputs (PIL images, ...)
    record: dict[str, Any] = field(default_factory=dict)  # meta of this output


class GenerativeAnnotator(Annotator):
    """Subclasses set name, base_node, max_outputs, Params, weights and implement the hooks below."""

    base_node: ClassVar[str]
    max_outputs: ClassVar[int] = 1
    resources = Resources(batch_size=2, concurrency=1, num_gpus=1.0, num_cpus=1.0)
    pipeline_repo_field: ClassVar[str] = "repo_id"

    # -- which nodes ------------------------------------------------------------------------
    @classmethod
    def produces_for(cls, params) -> tuple[str, ...]:
        """The nodes written with these params: the first `outputs` of `produces` (with their references
        or pair halves). The annotate stage writes rows, and the catalog lists nodes, only for these."""
        return tuple(cls.produces[: cls.nodes_per_output() * params.outputs])

    @classmethod
    def nodes_per_output(cls) -> int:
        return 1

    @classmethod
    def requires_for(cls, params) -> tuple[str, ...]:
        """`requires`, plus the caption node's meta when the params ask for the caption."""
        return tuple(cls.requires) + (("caption.meta",) if getattr(params, "use_caption", False) else ())

    def caption(self, item: dict, image_id: str) -> str:
        """The caption text for this image's prompts ('' when none is used)."""
        if getattr(self.params, "use_caption", False) and "caption.meta" not in item:
            raise MissingCaptionError(f"image {image_id}: use_caption is set but no caption node was given")
        return prompts.caption_text(item)

    def output_names(self, index: int) -> tuple[str, ...]:
        return output_nodes(self.base_node, self.max_outputs)[index:index + 1]

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> None:
        self.dtype = loader.torch_dtype(self.params.dtype, self.device)
        self.pipe = self.build_pipeline()
        self.prompter = self._load_prompter(None)
        self.model_id = getattr(self.params, self.pipeline_repo_field)

    def load_random(self, size: str = "tiny") -> None:
        self.dtype = loader.torch_dtype(self.params.dtype, self.device)
        self.pipe = self.build_random(size)
        self.prompter = self._load_prompter(size)
        self.model_id = f"random-{size}:{getattr(self.params, self.pipeline_repo_field)}"

    def _load_prompter(self, size: str | None) -> PromptModel | None:
        if self.params.prompt_source != "model" and not self.needs_prompt_model():
            return None
        if size is not None:
            return PromptModel.random(size, self.device)
        return PromptModel.from_pretrained(self.params.prompt_model, self.models_dir, self.device, self.dtype)

    def needs_prompt_model(self) -> bool:
        return False

    def required_weights(self):
        """The pipeline's repositories, and the prompt model only when prompts come from it."""
        specs = super().required_weights()
        if self.params.prompt_source != "model" and not self.needs_prompt_model():
            specs = tuple(s for s in specs if s.repo_id != self.params.prompt_model)
        return specs

    def build_pipeline(self):
        raise NotImplementedError

    def build_random(self, size: str):
        raise NotImplementedError

    def _place(self, pipe):
        import torch

        # random builds are made in fp32; only a different dtype needs a cast
        pipe = pipe.to(self.device) if self.dtype == torch.float32 else pipe.to(self.device, self.dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def distinct_picks(self, bank, image_id: str, part: str, n: int) -> list:
        """n different entries of a bank for one image (seeded by image and node, not by batch)."""
        import random

        rng = random.Random(seed_for(image_id, f"{self.base_node}/{part}", self.params.seed_salt))
        return rng.sample(list(bank), n) if n <= len(bank) else [rng.choice(bank) for _ in range(n)]

    # -- seeds and records -------------------------------------------------------------------
    def seed(self, image_id: str, index: int, part: str = "") -> int:
        node = output_nodes(self.base_node, self.max_outputs)[index] + (f"/{part}" if part else "")
        return seed_for(image_id, node, self.params.seed_salt)

    def record(self, job: Job, pipe=None, **extra) -> dict:
        """What every output records: prompt, seed, model, steps, guidance, scheduler, size, dtype."""
        p = self.params
        pipe = pipe or self.pipe
        return {"index": job.index, "prompt": job.prompt, "seed": job.seed, "model": self.model_id,
                "pipeline": type(pipe).__name__, "steps": p.steps, "guidance": p.guidance,
                "scheduler": loader.scheduler_name(pipe), "size": list(job.size),
                "dtype": str(self.dtype).split(".")[-1], **job.record, **extra}

    # -- the batch ---------------------------------------------------------------------------
    def plan_image(self, item: dict, image_id: str) -> list[Job]:
        """One job per output of one image (raise for an image that cannot be used)."""
        raise NotImplementedError

    def generate(self, jobs: list[Job]) -> list[np.ndarray]:
        """uint8 H x W x 3 at each job's generation size, in job order."""
        raise NotImplementedError

    def finish(self, item: dict, job: Job, generated: np.ndarray) -> dict[str, NodeOutput]:
        """Generated pixels of one job -> its node(s). Default: resized to the source's size."""
        h, w = item["image"].shape[:2]
        return {self.output_names(job.index)[0]: NodeOutput(loader.resize_rgb(generated, h, w), self.record(job))}

    def annotate(self, inputs, image_ids):
        # plan every image first: an unusable image raises before any generation (the stage then
        # retries the batch image by image, so only that image fails)
        jobs = []
        for i, (item, image_id) in enumerate(zip(inputs, image_ids)):
            for job in self.plan_image(item, image_id):
                job.item = i
                jobs.append(job)
        images = self.run_jobs(jobs)
        out: list[dict[str, NodeOutput]] = [{} for _ in inputs]
        for job, pixels in zip(jobs, images):
            out[job.item].update(self.finish(inputs[job.item], job, pixels))
        for o in out:
            self.link_outputs(o)
        return out

    def run_jobs(self, jobs: list[Job]) -> list[np.ndarray]:
        """Jobs grouped by generation size, one `generate` call per group; results in job order."""
        results: list[np.ndarray | None] = [None] * len(jobs)
        for size, idx in loader.group_by_size([j.size for j in jobs]).items():
            for i, pixels in zip(idx, self.generate([jobs[i] for i in idx])):
                results[i] = pixels
        return results

    def link_outputs(self, outputs: dict[str, NodeOutput]) -> None:
        """The first output's meta lists every output's record (what the Graph200K export needs)."""
        first = outputs.get(self.base_node)
        if first is not None:
            names = [n for n in output_nodes(self.base_node, self.max_outputs) if n in outputs]
            first.meta["outputs"] = [{"node": n, **{k: v for k, v in outputs[n].meta.items() if k != "outputs"}}
                                     for n in names]

    # -- helpers for the FLUX family ----------------------------------------------------------
    def flux_embeddings(self, pipe, prompts: list[str]):
        """(prompt_embeds, pooled) for each prompt, each distinct prompt encoded once per call."""
        import torch

        unique = list(dict.fromkeys(prompts))
        with torch.inference_mode():
            embeds, pooled, _ = pipe.encode_prompt(prompt=unique, prompt_2=None, device=self.device,
                                                   num_images_per_prompt=1,
                                                   max_sequence_length=self.params.max_sequence_length)
        index = torch.tensor([unique.index(p) for p in prompts], device=embeds.device)
        return embeds.index_select(0, index), pooled.index_select(0, index)


def flux_call_args(params, jobs: list[Job]) -> dict:
    """Arguments every FLUX pipeline call shares for a group of jobs of one size."""
    h, w = jobs[0].size
    return dict(height=h, width=w, num_inference_steps=params.steps, guidance_scale=params.guidance,
                generator=[loader.generator(j.seed, "cpu") for j in jobs], output_type="np",
                max_sequence_length=params.max_sequence_length)
