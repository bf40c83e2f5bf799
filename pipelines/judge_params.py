"""The `judge` params section (pipelines/params.py composes it): which judges score the edit pairs
(annotators/judges.py), with what params and resources. The thresholds that use the scores are
sample params (`sample.judge_thresholds`), so changing one re-samples without re-scoring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JudgeSpec(_Section):
    params: dict[str, Any] = Field(default_factory=dict)  # the judge's own params (annotators/judges.py)
    batch_size: int | None = Field(None, ge=1)  # None: the judge's default
    concurrency: int | None = Field(None, ge=1)  # actors in the pool
    num_gpus: float | None = Field(None, ge=0)
    num_cpus: float | None = Field(None, gt=0)


class JudgeParams(_Section):
    # judge name -> spec; empty (the default): the stage writes an empty scores table at once
    judges: dict[str, JudgeSpec] = Field(default_factory=dict)
    models_dir: str | None = None  # None: annotate.models_dir
    device: Literal["auto", "cpu", "cuda"] = "auto"
    chunk_size: int = Field(256, ge=1)  # pairs per task: what one worker call reads, scores and returns

    @field_validator("judges")
    @classmethod
    def _known(cls, v: dict[str, JudgeSpec]) -> dict[str, JudgeSpec]:
        if not v:
            return v
        from annotators import judges

        for name, spec in v.items():
            try:
                judge = judges.get(name)
            except KeyError as e:
                raise ValueError(e.args[0]) from None
            try:
                judge.Params.model_validate(spec.params)
            except ValidationError as e:
                errors = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top level)'}: "
                                   f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                                   for err in e.errors())
                raise ValueError(f"{name}.params: {errors}") from None
        return v


def threshold_key(key: str) -> tuple[str, str]:
    """`<judge>.<score>` -> (judge, score)."""
    judge, _, score = key.partition(".")
    return judge, score


def threshold_errors(params) -> list[str]:
    """What is wrong with `sample.judge_thresholds` (pipelines/params.py raises the first): a judge
    not configured under `judge.judges`, or a score that judge does not write."""
    configured = params.judge.judges
    errors = []
    for key in params.sample.judge_thresholds:
        judge, score = threshold_key(key)
        where = f"sample.judge_thresholds.{key}"
        if judge not in configured:
            errors.append(f"{where}: judge {judge!r} is not configured under judge.judges "
                          f"(configured: {', '.join(sorted(configured)) or 'none'})")
            continue
        from annotators import judges

        scores = judges.get(judge).scores
        if score not in scores:
            errors.append(f"{where}: judge {judge!r} writes no score {score!r} (its scores: {', '.join(scores)})")
    return errors
