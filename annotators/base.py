"""The annotator interface every annotator implements.

An annotator reads decoded arrays of the node types it `requires` (always at least
"image", the normalised source photo) and produces one or more node types. It is
constructed once per Ray actor with validated params, `load()`s its weights once, and is
then called on batches. The core is a plain method on numpy arrays, so the same code
runs in tests, in a Ray actor pool, and online inside the sampler.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from core.weights import MissingWeightsError, WeightSpec


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AnnotatorParams(BaseModel):
    """Base for annotator params: unknown keys are an error that names the key."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class NodeOutput:
    """One produced node of one image.

    `array` is H x W (grey/mask) or H x W x 3, uint8, or H x W uint16 for documented
    16-bit maps; it is stored as lossless PNG. Nodes that are pure metadata (boxes,
    keypoints) set `array=None` and put everything in `meta`, stored as JSON.

    `quality` is None for a usable node, or a short reason why the output is degenerate
    (`no_person`, `empty_mask`, `full_mask`, `constant_map`, `few_edges`, `no_box`, `no_op`,
    `flat_image`; annotators/quality.py). A degenerate output keeps its array and meta, so the
    report can show it, but the sampler never uses it.
    """

    array: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)
    quality: str | None = None


@dataclass(frozen=True)
class Resources:
    """Defaults for the Ray actor pool; params.yaml can override each one."""

    batch_size: int = 8
    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0


class ConfiguredModel:
    """What annotators and judges share: validated params, the device, the models folder, and the
    weights check every stage runs before any work (`models_dir_key`: the params key that names the
    folder, quoted in the error)."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    models_dir_key: ClassVar[str] = "annotate.models_dir"

    def __init__(self, params: BaseModel | dict | None = None, *, device: str = "cpu",
                 models_dir: str | Path | None = None):
        if params is None or isinstance(params, dict):
            params = self.Params(**(params or {}))
        self.params = params
        self.device = device
        self.models_dir = Path(models_dir) if models_dir else None

    def required_weights(self) -> tuple[WeightSpec, ...]:
        return ()

    def missing_weights(self) -> list[MissingWeightsError]:
        """What `load()` would not find, resolved the way it resolves (checked before any work starts)."""
        from core.weights import resolve

        missing = []
        for spec in self.required_weights():
            try:
                resolve(spec, self.models_dir, key=self.models_dir_key)
            except MissingWeightsError as e:
                missing.append(e)
        return missing

    def load_random(self, size: str = "tiny") -> None:
        """Tests and benchmarks only: build the same architecture with random weights.

        size="tiny" gives a model small enough for a CPU test; size="full" the real
        architecture (for timing). Model classes override this; the pipeline never calls it.
        """
        raise NotImplementedError(f"{self.name} has no random-weight build")


class Annotator(ConfiguredModel):
    """Subclass, set the class attributes, implement `annotate`, and `@register` it."""

    name: ClassVar[str]
    produces: ClassVar[tuple[str, ...]]  # node types written, one row each per image
    requires: ClassVar[tuple[str, ...]] = ("image",)
    version: ClassVar[str] = "1"
    resources: ClassVar[Resources] = Resources()
    weights: ClassVar[tuple[WeightSpec, ...]] = ()

    def load(self) -> None:
        """Load weights once per process. Weight-free annotators keep the default.

        Model annotators resolve their `weights` with `core.weights.resolve` and raise
        `MissingWeightsError` when they are not on disk; they never fall back to random weights.
        """

    def required_weights(self) -> tuple[WeightSpec, ...]:
        """The weights `load()` reads with these params: the class's specs, each repository swapped for
        the params field whose default names it (a `repo_id` set in params.yaml), and dropped when that
        field is None (an optional model switched off). Annotators that pick one of several variants
        override it."""
        swaps: dict[str, str | None] = {}
        for name, field in type(self.params).model_fields.items():
            value = getattr(self.params, name)
            if isinstance(field.default, str) and value != field.default and (value is None or isinstance(value, str)):
                swaps[field.default] = value
        return tuple(replace(s, repo_id=swaps.get(s.repo_id, s.repo_id)) for s in self.weights
                     if swaps.get(s.repo_id, s.repo_id) is not None)

    def annotate(self, inputs: list[dict[str, np.ndarray]], image_ids: list[str]) -> list[dict[str, NodeOutput]]:
        """For each image, map every node type in `produces_for(self.params)` to its NodeOutput.

        `inputs[i][node]` is the decoded H x W x 3 uint8 array of each required node.
        Raise on a per-image problem: the stage retries the batch image by image and
        records the one that fails in the failures table.
        """
        raise NotImplementedError

    @classmethod
    def produces_for(cls, params: BaseModel) -> tuple[str, ...]:
        """The node types written with these (validated) params: one row each per image.

        `produces` lists every node type the class can write (the registry's view); an annotator
        whose params choose fewer (the generative ones' `outputs`) overrides this, and the annotate
        stage, the params checks and the catalog ask it, never `produces`, for a configured annotator.
        """
        return tuple(cls.produces)

    @classmethod
    def requires_for(cls, params: BaseModel) -> tuple[str, ...]:
        """The node types read with these (validated) params; `requires` plus what a param asks for
        (the generative annotators' `use_caption` adds "caption.meta"). Default: `requires`."""
        return tuple(cls.requires)

    @classmethod
    def params_hash(cls, params: BaseModel) -> str:
        """Stable 12-hex digest of (name, version, params): names the store folder."""
        blob = json.dumps({"name": cls.name, "version": cls.version, "params": params.model_dump(mode="json")},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def seed_for(image_id: str, node_type: str, salt: int = 0) -> int:
    """Deterministic per-(image, node) seed for randomised operators: no global RNG state."""
    digest = hashlib.sha256(f"{image_id}/{node_type}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def resize_to(arr: np.ndarray, height: int, width: int, *, nearest: bool = False,
              kind: str | None = None) -> np.ndarray:
    """Resize a map back to the source's size (maps are stored at source resolution).

    `kind` picks the method by what the map holds (core/map_resize.py): "lines" keeps
    one-pixel lines (max over each target pixel's footprint), "labels" keeps only original values
    (nearest), "continuous" is area when shrinking, linear when enlarging. Without a kind:
    nearest when `nearest`, else linear (float predictions resized before they are quantised).
    """
    import cv2

    if arr.shape[:2] == (height, width):
        return arr
    if kind is not None:
        from core.map_resize import resize_map

        return resize_map(arr, height, width, kind)
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (width, height), interpolation=interpolation)
