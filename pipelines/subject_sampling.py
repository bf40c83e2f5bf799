"""The sample stage's use of subject records (three calls from pipelines/stages/sample.py):

  subjects = subject_sampling(cat, index, sp.subjects)   the quality filter applied to `reference`
  leakage_report(..., subject_of=subjects.subject_of)     subjects shared across splits (must be 0)
  summary["episodes"] = stage_episodes(subjects, index, splits, sp.episodes, staging)
                                                          samples/episodes.parquet, in the same set
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.episodes import EPISODES_FILE, draw_episodes, episodes_table
from pipelines.sampling_params import EpisodeParams, SubjectParams
from pipelines.store import write_table
from pipelines.catalog import restrict_reference
from pipelines.subjects import Subject, load_subjects, passing, reference_map, subject_of


@dataclass
class SubjectSampling:
    index: object  # the node index with `reference` restricted to passing subject records
    subjects: list[Subject]  # passing subject records (concepts of episodes)
    subject_of: dict[str, str] | None  # every complete record's images -> record id (None: no subjects)


def subject_sampling(cat, index, params: SubjectParams) -> SubjectSampling:
    every = load_subjects(cat.store)
    if not every:
        return SubjectSampling(index, [], None)
    good = passing(every, params.quality_filter)
    return SubjectSampling(restrict_reference(index, reference_map(good)), good, subject_of(every))


def stage_episodes(subjects: SubjectSampling, index, splits: np.ndarray, params: EpisodeParams,
                   staging: Path) -> dict | None:
    """Draw the episodes (when enabled) and write them into the staged samples set."""
    if not params.enabled:
        return None
    views = sorted({v for s in subjects.subjects for v in s.views})
    pos = index.positions(views) if views else np.zeros(0, np.int64)
    split_of = {v: str(splits[p]) for v, p in zip(views, pos.tolist()) if p >= 0}
    episodes, summary = draw_episodes(subjects.subjects, split_of, params)
    write_table(episodes_table(episodes), Path(staging) / EPISODES_FILE)
    return summary
