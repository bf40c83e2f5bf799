"""Subject records -> the `reference` node, subject ids and the quality filter.

A subject record is a record of the `subjects200k` layout (pipelines/records.py): one
subject seen twice, roles `view_0` and `view_1`, both stored as ordinary images whose meta
carries the record id, `description`, `quality_assessment` and `collection`. Here:
- `load_subjects(store)`: every complete subject record (both views ingested, two distinct
  images), with its name, category and scores read from the meta of the parts that hold them;
- the `reference` node: for a view of a subject record, the other view. The catalog
  (pipelines/catalog.py) adds its mask to the node index and reads its cell as the other view's
  image cell, so tasks, sampler and exports use it like any node;
- `passes(quality, filter)`: the quality filter (`sample.subjects.quality_filter`, default
  objectConsistency >= 3, Graph200K's rule); a score the source does not give fails it;
- `subject_of`: image id -> subject record id (splits, leakage report, episodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.records import SUBJECT_ROLES

REFERENCE = "reference"


@dataclass(frozen=True)
class Subject:
    record: str
    views: tuple[str, str]  # image ids of view_0, view_1 (distinct)
    name: str = ""  # description["item"]
    category: str = ""  # description["category"]
    quality: dict = field(default_factory=dict)  # quality_assessment scores


def load_subjects(store) -> list[Subject]:
    """Every complete subject record of the store, sorted by record id; meta is read only from the
    image parts that hold a `view_0` row (meta column only, no image bytes)."""
    records = {r: roles for r, roles in store.records().items() if set(roles) == set(SUBJECT_ROLES)}
    records = {r: roles for r, roles in records.items() if roles["view_0"] != roles["view_1"]}
    if not records:
        return []
    metas = store.member_meta("view_0")
    out = []
    for record in sorted(records):
        meta = metas.get(record, {})
        description = meta.get("description") if isinstance(meta.get("description"), dict) else {}
        quality = meta.get("quality_assessment") if isinstance(meta.get("quality_assessment"), dict) else {}
        out.append(Subject(record, (records[record]["view_0"], records[record]["view_1"]),
                           str(description.get("item") or meta.get("text") or ""),
                           str(description.get("category") or ""), dict(quality)))
    return out


def passes(quality: dict, quality_filter: dict[str, float]) -> bool:
    """Every filtered score is given and at least its minimum."""
    for key, minimum in quality_filter.items():
        value = quality.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            return False
    return True


def passing(subjects: list[Subject], quality_filter: dict[str, float] | None) -> list[Subject]:
    return [s for s in subjects if quality_filter is None or passes(s.quality, quality_filter)]


def reference_map(subjects: list[Subject]) -> dict[str, str]:
    """image id -> the other view's image id. An image that is a view of several records (the same
    bytes given twice) takes the first record by id, so the map never depends on input order."""
    out: dict[str, str] = {}
    for s in subjects:
        a, b = s.views
        out.setdefault(a, b)
        out.setdefault(b, a)
    return out


def subject_of(subjects: list[Subject]) -> dict[str, str]:
    """image id -> subject record id (first record by id for an image shared by several)."""
    out: dict[str, str] = {}
    for s in subjects:
        for view in s.views:
            out.setdefault(view, s.record)
    return out


def reference_mask(ids, live: np.ndarray, references: dict[str, str], positions) -> np.ndarray:
    """Mask aligned with the index ids: a live image whose other view is live too.
    `positions`: the index's id -> position lookup (NodeIndex.positions)."""
    mask = np.zeros(len(ids), bool)
    if not references:
        return mask
    views = sorted(references)
    pos, other = positions(views), positions([references[v] for v in views])
    ok = (pos >= 0) & (other >= 0)
    ok[ok] = live[pos[ok]] & live[other[ok]]
    mask[pos[ok]] = True
    return mask


# --- shard export: a reference cell is the other view's image cell ---------------------------------
def alias_reference_cells(items: list[dict], references: dict[str, str]) -> None:
    """For each export item (stages/export.py plan), replace its needed ("reference", id) cells by
    ("image", other view) and record the alias, so the shard task reads the image cell."""
    for item in items:
        aliases = sorted({(n, i) for n, i in item["cells"] if n == REFERENCE})
        if not aliases:
            continue
        missing = [i for _, i in aliases if i not in references]
        if missing:
            raise KeyError(f"no subject record gives a reference for image {missing[0]}")
        item["cells"] = sorted({tuple(c) for c in item["cells"] if c[0] != REFERENCE}
                               | {("image", references[i]) for _, i in aliases})
        item["aliases"] = [[REFERENCE, i, "image", references[i]] for _, i in aliases]


def apply_aliases(cells: dict, aliases) -> dict:
    """The loaded cells plus each aliased cell (a reference cell is its other view's image bytes)."""
    for node, image_id, source_node, source_id in aliases or ():
        cells[(node, image_id)] = cells[(source_node, source_id)]
    return cells
