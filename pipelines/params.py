"""params.yaml: one pydantic model per section, validated before any work starts.

Unknown keys, wrong types and impossible values stop the run with a message that names
the key (`ParamsError`). Cross-section checks (every node type a task needs has a
configured producer) run in `validate_params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from mining.config import MineParams
from training.config import TrainParams

from pipelines.sampling_params import ExportParams, SamplerParams, TaskSpec  # noqa: F401 - re-exported
from pipelines.judge_params import JudgeParams, threshold_errors
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ParamsError(ValueError):
    pass


class WeightsMissing(RuntimeError):
    """Configured annotators whose weights are not on disk (pipelines/models_cli.py `require_weights`,
    checked by `vicl validate` and before annotate starts Ray)."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsParams(Section):
    store: str = "data/store"  # node store: ingested images, annotator parts, samples
    out: str = "data/out"  # shards, manifest, failures table


class RayParams(Section):
    address: str | None = None  # None: start a local instance (RAY_ADDRESS / --ray-address override)
    num_cpus: int | None = Field(None, ge=1)  # local instance only
    preserve_order: bool = True  # deterministic ingest parts
    # a stage with at most this many tasks (parts, shards) of work runs them in the driver on a
    # local machine: Ray's start and stop (~5 s on 2 cores) cost more than a part or two of work
    inline_max_tasks: int = Field(2, ge=0)


class RecordColumns(Section):
    """Where a record-layout source keeps each field: a column (Parquet, HF dataset), a field name
    or its stem (WebDataset: "source" matches "source.jpg"), a file stem (folder of pair folders)."""

    source: str = "source"  # edit_pairs: the image before the edit
    edited: str = "edited"  # edit_pairs: the image after it
    instruction: str = "instruction"  # edit_pairs: the edit's text
    # a column naming the record (pair id); None: derived from the content, so corpora never collide
    record_id: str | None = None
    # --- subjects200k (issue 14): Subjects200K's columns, as its HF release names them ---
    pair_image: str = "image"  # the two views of one subject side by side (1024 x 512)
    description: str = "description"  # {item, description_0, description_1, category, ...}
    quality_assessment: str = "quality_assessment"  # {objectConsistency, imageQuality, compositeStructure}
    collection: str | None = "collection"  # None: the source has no such column (collection "")
    # --- end subjects200k ---


class SourceParams(Section):
    kind: Literal["embedded", "folder", "webdataset", "parquet", "hf_disk"]
    path: str | None = None  # folder, tar glob, parquet glob, or a `datasets.save_to_disk` folder
    # what one input is: `images` one image each; `edit_pairs` a (source, edited, instruction) pair
    # whose two images become store images and whose pair feeds mining (pipelines/records.py)
    layout: str = "images"
    image_column: str = "image"  # images layout, parquet / hf_disk: a binary column or an HF Image struct
    columns: RecordColumns = Field(default_factory=RecordColumns)  # record layouts: where each field is
    split: str | None = None  # hf_disk: the split of a DatasetDict
    image_extensions: list[str] = ["jpg", "jpeg", "png", "webp"]  # webdataset fields tried in order
    # embedded only: how many distinct crops/scales to derive from the skimage photos
    count: int = Field(240, ge=1, le=10000)
    size: int = Field(320, ge=64, le=2048)  # embedded only: longer side of each derived image
    follow_links: bool = False  # folder only: take symbolic links (to anywhere) as inputs

    @model_validator(mode="after")
    def _needs_path(self):
        from pipelines.records import LAYOUTS

        if self.kind != "embedded" and not self.path:
            raise ValueError(f"source kind {self.kind!r} needs `path`")
        if self.path and (self.path.startswith(("pipe:", "http:", "https:")) or "://" in self.path):
            raise ValueError(f"{self.path!r}: only local files and folders are sources")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r} (known: {', '.join(sorted(LAYOUTS))})")
        if self.layout != "images" and self.kind == "embedded":
            raise ValueError(f"layout {self.layout!r} needs a folder, webdataset, parquet or hf_disk source")
        return self


class IngestParams(Section):
    sources: list[SourceParams] = Field(default_factory=lambda: [SourceParams(kind="embedded")], min_length=1)
    max_pixels: int = Field(64_000_000, ge=1)  # header-checked before decoding (decompression bombs)
    min_side: int = Field(16, ge=1)  # shorter side below this is degenerate
    max_side: int = Field(1024, ge=0)  # stored images are shrunk to this longer side (0: keep)
    image_format: Literal["jpg", "png", "webp"] = "jpg"
    quality: int = Field(95, ge=1, le=100)
    # images per Parquet part: the unit of resume and of incremental work (new inputs form new parts)
    part_size: int = Field(64, ge=1)


class AnnotatorSpec(Section):
    params: dict[str, Any] = Field(default_factory=dict)
    # online: not materialised in the store; the exporter calls the same annotator on the
    # fly for each cell (CPU operators such as degradations; they may only require "image").
    online: bool = False
    batch_size: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    num_gpus: float | None = Field(None, ge=0)
    num_cpus: float | None = Field(None, gt=0)


class AnnotateParams(Section):
    models_dir: str = "models"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    plugins: list[str] = Field(default_factory=list)  # extra modules that @register annotators
    annotators: dict[str, AnnotatorSpec] = Field(default_factory=dict)
    prune_stale: bool = True  # delete store folders of annotators/params no longer configured
    fuse_cpu: bool = True  # run CPU annotators that need only the image in one shared pipeline
    # how a group of weight-free CPU operators runs: one Ray task per part that writes its own
    # files ("tasks"), or the Ray Data actor pool the model annotators use ("ray_data"). Same rows.
    cpu_executor: Literal["tasks", "actors"] = "tasks"
    # zlib level of the stored map PNGs (core.images.encode_png: 1-3 run-length coding, 4-9
    # zlib's default). Bytes only, never pixels, so a change does not recompute existing parts.
    # Level 1 writes about the bytes of Pillow's level 6 at 4.8-5.6x its speed (benchmarks/png_encode.py).
    png_compress_level: int = Field(1, ge=0, le=9)
    # outputs are keyed by a digest of the annotator's code as well as its version and params, so a
    # code change recomputes what that code produced; false keys by version and params only
    code_digest: bool = True
    # transient failures (CUDA out of memory, device lost, worker died, timeouts): retried this many
    # times with backoff, halving the batch; if they persist, the part is left for a later run
    max_retries: int = Field(3, ge=0)
    retry_backoff_s: float = Field(1.0, ge=0)


class MineSection(MineParams):
    """`mine:` the mining settings of `mining.config.MineParams` plus where the pairs come from."""

    enabled: bool = True
    # node types whose (image -> node) pairs carry an instruction in their meta; "auto": every synthetic edit
    from_store: Literal["auto"] | list[str] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _corpora_moved(cls, data):
        if isinstance(data, dict) and "corpora" in data:
            raise ValueError("mine.corpora moved: list each edit corpus under ingest.sources with "
                             "`layout: edit_pairs` (and `columns:` for its field names), so its pairs are "
                             "ingested, validated and split like every image (README: mine your own edit corpus)")
        return data


class Params(Section):
    paths: PathsParams = Field(default_factory=PathsParams)
    ray: RayParams = Field(default_factory=RayParams)
    ingest: IngestParams = Field(default_factory=IngestParams)
    annotate: AnnotateParams = Field(default_factory=AnnotateParams)
    mine: MineSection = Field(default_factory=MineSection)
    judge: JudgeParams = Field(default_factory=JudgeParams)  # edit pair judges (docs/judges.md)
    sample: SamplerParams = Field(default_factory=SamplerParams)
    export: ExportParams = Field(default_factory=ExportParams)
    train: TrainParams = Field(default_factory=TrainParams)  # `vicl train` / training/dvc.yaml only


def _format_errors(err: ValidationError, source: str) -> str:
    errors = err.errors()
    # A union (e.g. "auto" or a list of tasks) reports every branch; the literal branch's
    # complaint hides the real one, so drop it when a more specific error exists.
    specific = [e for e in errors if e["type"] != "literal_error"]
    lines = []
    for e in specific or errors:
        key = ".".join(str(p) for p in e["loc"] if "[" not in str(p)) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_params(data: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as e:
        raise ParamsError(_format_errors(e, source)) from None


def load_params(path: str | Path) -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping")
    params = parse_params(data, str(path))
    validate_params(params, str(path))
    return params


def validate_params(params: Params, source: str = "params") -> None:
    """Checks that need the registries: annotator names, their params, task node producers."""
    import annotators
    from annotators import registry
    from core.node_types import NODE_TYPES

    registry.load_plugins(params.annotate.plugins)
    produced: dict[str, str] = {"image": "ingest"}
    classes, models = {}, {}
    for name, spec in params.annotate.annotators.items():
        key = f"annotate.annotators.{name}"
        try:
            cls = classes[name] = annotators.get(name)
        except KeyError as e:
            raise ParamsError(f"{source}: {key}: {e.args[0]}") from None
        try:
            model = models[name] = cls.Params.model_validate(spec.params)
        except ValidationError as e:
            raise ParamsError(_format_errors(e, f"{source}: {key}.params")) from None
        if spec.online and cls.requires_for(model) != ("image",):
            raise ParamsError(f"{source}: {key}.online: only annotators that require just 'image' can run online")
        for node in cls.produces_for(model):  # what these params write (fewer generative outputs: fewer nodes)
            if node in produced:
                raise ParamsError(f"{source}: {key}: node type {node!r} is already produced by {produced[node]!r}")
            produced[node] = name
    for name, cls in classes.items():  # after all producers are known: params order does not matter
        for node in (r.removesuffix(".meta") for r in cls.requires_for(models[name])):
            if node not in produced:
                raise ParamsError(f"{source}: annotate.annotators.{name}: requires node type {node!r} which no "
                                  f"configured annotator produces")
    if params.sample.tasks != "auto":
        for i, task in enumerate(params.sample.tasks):
            for node in task.path:
                if node not in NODE_TYPES:
                    raise ParamsError(f"{source}: sample.tasks.{i}.path: unknown node type {node!r}")
                if node not in produced:
                    raise ParamsError(f"{source}: sample.tasks.{i}.path: node type {node!r} is produced by no "
                                      f"configured annotator (add one under annotate.annotators)")
    for error in threshold_errors(params)[:1]:  # sample.judge_thresholds name configured judges' scores
        raise ParamsError(f"{source}: {error}")


def produced_nodes(params: Params) -> dict[str, str]:
    """node type -> configured annotator name (the source image -> 'ingest')."""
    import annotators  # noqa: F401 (registers the built-in annotators)
    from annotators.registry import produced_nodes as produced_by

    return produced_by(params.annotate.annotators)
