"""The `sample` and `export` params sections (models used by pipelines/params.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Section):
    name: str
    path: list[str] = Field(min_length=2)  # condition node types..., target node type
    family: str = "custom"

    @field_validator("name")
    @classmethod
    def _no_dots(cls, v: str) -> str:
        if "." in v or "/" in v:
            raise ValueError("task names may not contain '.' or '/' (WebDataset keys and paths)")
        return v


class InstructionParams(_Section):
    task_keep: float = Field(0.8, ge=0, le=1)  # Graph200K: task part kept with p=0.8
    content_keep: float = Field(0.8, ge=0, le=1)  # content (caption) part kept with p=0.8
    drop_all: float = Field(0.1, ge=0, le=1)  # whole instruction dropped with p=0.1
    phrases_file: str | None = None  # extra phrase bank YAML (same form as pipelines/instruction_phrases.yaml)


# --- issue 14: subject records and personalization episodes -------------------------------------
class SubjectParams(_Section):
    # minimum quality_assessment scores of a subject record (Subjects200K) for it to give the `reference`
    # node and episode concepts; a score the source does not give fails (Graph200K: objectConsistency >= 3)
    quality_filter: dict[str, float] = Field(default_factory=lambda: {"objectConsistency": 3.0})


class EpisodeParams(_Section):
    """ICPT-style personalization episodes (pipelines/episodes.py): K concepts (subjects), M reference
    images of each, one query image showing one of them; drawn per split from that split's subjects."""

    enabled: bool = False
    k: int = Field(2, ge=1)  # concepts per episode
    m: int = Field(1, ge=1)  # reference images per concept (a Subjects200K subject has 2 views: m = 1)
    count: dict[str, int] = Field(default_factory=lambda: {"train": 20, "eval": 4})  # episodes per split
    seed: int = 0

    @field_validator("count")
    @classmethod
    def _splits(cls, v: dict[str, int]) -> dict[str, int]:
        if set(v) - {"train", "eval"} or any(n < 0 for n in v.values()):
            raise ValueError("count maps train / eval to episode counts >= 0")
        return v
# --- end issue 14 ---------------------------------------------------------------------------------


class EditBudget(_Section):
    """The families whose samples are bounded (pipelines/task_mix.py): together at most `max_share`
    of a split. Default 0.25, from PICO's finding that task diversity beats volume: the many graph
    tasks keep at least three quarters of the samples, however large the mined set grows. Each
    edit sub-task (a transform key, a mined cluster) is capped like a task at samples_per_task."""

    families: list[str] = Field(default_factory=lambda: ["mined_editing", "synthetic_editing"])
    max_share: float = Field(0.25, gt=0, le=1)  # 1: no bound


class SamplerParams(_Section):
    seed: int = 0
    # "auto": every task the families enumerate over the present node types; or an explicit list
    tasks: Literal["auto"] | list[TaskSpec] = "auto"
    # samples per task in the train split under uniform weighting (the mean otherwise); the eval splits
    # get `eval_samples_per_task` each (None: max(1, round(samples_per_task x eval_fraction)))
    samples_per_task: int = Field(20, ge=1)
    eval_samples_per_task: int | None = Field(None, ge=1)
    rows: dict[int, float] = Field(default_factory=lambda: {1: 0.3, 2: 0.4, 3: 0.3})
    eval_fraction: float = Field(0.1, ge=0, lt=1)  # of near-duplicate groups of source images
    # task families: extra YAML files (same form as pipelines/task_families.yaml), and a filter
    extra_task_families: list[str] = Field(default_factory=list)
    families: list[str] | None = None  # None: all families
    # task weights: uniform | family (family_weights, else the YAML weight) | temperature over task sizes
    task_weighting: Literal["uniform", "family", "temperature"] = "uniform"
    family_weights: dict[str, float] = Field(default_factory=dict)
    temperature: float = Field(1.0, gt=0)  # weight ~ eligible_images ** (1 / T); large T -> uniform
    cloze_probability: float = Field(0.5, ge=0, le=1)  # target is a random cell of the query row
    context: Literal["random", "retrieved"] = "random"
    retrieval_pool: int = Field(8, ge=1)  # retrieved: contexts drawn among the query's k nearest
    # near-duplicate groups (leak-free splits) and retrieved contexts use the embedding node of this
    # annotator (always computed by `vicl annotate`): embed_colour_stats (weight-free), embed_clip, embed_dinov2
    split_embedder: str = "embed_colour_stats"
    near_duplicate_threshold: float = Field(0.95, gt=0, le=1)  # cosine of the split embedder's vectors
    near_duplicate_nprobe: int = Field(16, ge=1)  # IVF cells searched per image on large corpora (faiss)
    leakage_max_hamming: int = Field(6, ge=0, le=64)  # the leakage re-check: dHash64 Hamming distance
    # issue 25, decontamination (pipelines/decontamination.py): benchmark images, as folders of image files or
    # WebDataset tars (a path or glob ending .tar); every store image within near_duplicate_threshold (split
    # embedder) or leakage_max_hamming (dHash64) of one, and its record, is in no split (samples/excluded.parquet)
    exclude: list[str] = Field(default_factory=list)
    heldout_tasks: list[str] = Field(default_factory=list)  # unseen-task eval: split "eval_unseen"
    heldout_families: list[str] = Field(default_factory=list)
    mined_quadruplets: str | None = None  # parquet table of the mining stage -> task "mined_edit"
    edit_budget: EditBudget = Field(default_factory=EditBudget)
    # a further cap on `mined_edit` samples per split, after the edit budget (None: no further cap)
    mined_max_samples: int | None = Field(None, ge=1)
    instructions: InstructionParams = Field(default_factory=InstructionParams)
    subjects: SubjectParams = Field(default_factory=SubjectParams)  # issue 14: subject records' filter
    episodes: EpisodeParams = Field(default_factory=EpisodeParams)  # issue 14: personalization episodes
    # {"<judge>.<score>": minimum}: edit pairs scoring below (or unscored) are not used for quadruplets
    # and go to samples/judge_rejects.parquet; the judge stage's scores are reused (docs/judges.md)
    judge_thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("judge_thresholds")
    @classmethod
    def _judge_keys(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            judge, _, score = key.partition(".")
            if not judge or not score or "." in score:
                raise ValueError(f"{key!r}: a threshold key is '<judge>.<score>' (e.g. 'clip_direction.direction')")
        return v

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, v: list[str]) -> list[str]:  # issue 25
        for path in v:
            if not path.strip():
                raise ValueError("exclude entries are folder or .tar paths, not empty")
            if path.startswith(("pipe:", "http:", "https:")) or "://" in path:
                raise ValueError(f"{path!r}: only local folders and .tar files are benchmark inputs")
            if any(c in path for c in "*?[") and not path.lower().endswith(".tar"):
                raise ValueError(f"{path!r}: a glob must name .tar files (WebDataset); give a folder as its path")
        return v

    @field_validator("rows")
    @classmethod
    def _rows(cls, v: dict[int, float]) -> dict[int, float]:
        if not v or any(k < 1 for k in v) or any(p < 0 for p in v.values()) or abs(sum(v.values()) - 1) > 1e-6:
            raise ValueError("rows must map row counts >= 1 to probabilities that sum to 1")
        return v


class ExportParams(_Section):
    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v):
        if v is not None and (not v or any(w < 16 or h < 16 or w % 16 or h % 16 for w, h in v)):
            raise ValueError("buckets must be a non-empty list of [width, height], sides >= 16 and multiples of 16")
        return v

    shard_size: int = Field(64, ge=1)  # samples per tar
    cell_size: int = Field(256, ge=16)  # R: cells have area ~ R^2, sides divisible by 16
    mtime: int = 0  # fixed tar member mtime: byte-reproducible shards
    # cell shape: square R x R (Graph200K), or the query image's aspect (clamped) at area ~ R^2
    aspect: Literal["square", "query"] = "square"
    max_aspect: float = Field(2.0, ge=1)
    # aspect buckets: [width, height] cell sizes (sides multiples of 16); each sample takes the one
    # nearest its query image's aspect (overrides `aspect` and `cell_size`). E.g. the ~1 MP set
    # [[1024, 1024], [896, 1152], [1152, 896], [832, 1216], [1216, 832], [768, 1344], [1344, 768]]
    buckets: list[tuple[int, int]] | None = None
    # a grid's total pixels at most this (None: no cap): more rows make smaller cells, never a
    # silently huge grid; the record's cell_height / cell_width say the size used
    max_grid_pixels: int | None = Field(None, ge=256)
    # grid: the composite shard set (always); sequence: separate images, one shard set per shape
    layouts: list[Literal["grid", "sequence"]] = Field(default_factory=lambda: ["grid"])
    # zlib level of the grid / cell PNGs (core.images.encode_png): 1 is the fastest that
    # compresses, at about the bytes of Pillow's level 6 (benchmarks/png_encode.py); lossless either way
    png_compress_level: int = Field(1, ge=0, le=9)
    graph200k: bool = False  # also write the Graph200K-compatible folder export (pipelines/graph200k_export.py)
    graph200k_quality: int = Field(95, ge=1, le=100)  # JPEG quality of its files
    # data.json paths: absolute (as VisualCloze's processing.py writes them: its reader opens them from
    # any working directory) or relative to the export folder (movable; start the reader there)
    graph200k_paths: Literal["absolute", "relative"] = "absolute"
    # relative mode: paths start with this folder, where the export is to lie under the reader's working
    # directory (VisualCloze's repo root: its train.py runs there and its Frost degradation needs that)
    graph200k_relative_prefix: str = "dataset/graph200k"
    # minimum quality_assessment scores of a row that has a reference (Graph200K: objectConsistency >= 3).
    # drop_reference: a row below keeps its other nodes, not its reference; drop_row: the row is left out
    graph200k_quality_filter: dict[str, float] = Field(default_factory=lambda: {"objectConsistency": 3.0})
    graph200k_quality_filter_action: Literal["drop_reference", "drop_row"] = "drop_reference"
    # objectConsistency given to a reference whose source carries no score (0: not trusted by the filter)
    graph200k_unscored_object_consistency: float = Field(0.0, ge=0)
    # a task path goes into visualcloze_tasks.json when at least this many rows serve it (VisualCloze's
    # reader draws up to 3 rows per item and loops forever on a path with fewer)
    graph200k_min_task_rows: int = Field(3, ge=3)
    # write Graph200K's degradation nodes too (VisualCloze's reader renders its own from the target)
    graph200k_degradations: bool = True
    preview_per_task: int = Field(2, ge=0)

    @field_validator("cell_size")
    @classmethod
    def _div16(cls, v: int) -> int:
        if v % 16:
            raise ValueError("cell_size must be divisible by 16 (VAE x patch size)")
        return v

    @model_validator(mode="after")
    def _grid(self):
        if "grid" not in self.layouts:
            raise ValueError("layouts must include 'grid' (the trainer's shard set)")
        return self
