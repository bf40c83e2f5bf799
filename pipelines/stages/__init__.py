"""The stages of a build, in the order `vicl run` runs them (pipelines/stage.py: what each declares).
A new stage is a module that defines its `STAGE`, and one line here."""

from pipelines.stages import annotate, export, ingest, judge, mine, sample

STAGES = (
    ingest.STAGE,
    annotate.STAGE,
    mine.STAGE,
    judge.STAGE,
    sample.STAGE,
    export.STAGE,
)
