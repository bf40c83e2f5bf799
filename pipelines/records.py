"""Source layouts: what one input of a source is, and which store images it gives.

`images` (the default): one input is one image. A record layout reads one input as a record of
named fields and turns it into several images with roles, which ingest validates and stores
like any image (content ids, failure rows), each carrying the record's id and its role in its
meta. Later stages relate the images through these records (`NodeStore.records()`): the mine
stage pairs an edit pair's source and edited image, the sampler keeps a record's images in
one split.

Layouts register here; `SourceParams.layout` names one:
  edit_pairs   (source, edited, instruction) edit corpora: roles `source` and `edited`; the
               record id is a named column (`columns.record_id`) or a digest of both images'
               content ids and the instruction, so two corpora can never collide.
Field values may be encoded bytes, an HF Image struct {bytes, path}, or a path relative to the
source's root; a path that leaves the root (absolute, `..`, a link out) is never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from core.images import ImageRejected, content_id


@dataclass(frozen=True)
class Member:
    role: str
    data: bytes | Exception  # encoded image bytes, or why there are none


@dataclass(frozen=True)
class Record:
    members: list[Member]
    text: str = ""  # the record's text (an edit instruction), in every member's meta
    record_id: str | None = None  # named by the source; None: `Layout.derive_id` from the content
    meta: dict = field(default_factory=dict)  # more fields for every member's meta
    # node type -> (encoded bytes or why there are none, node meta): nodes the source already made for
    # the first member (a released Graph200K row's canny, depth, ...); ingest stores them as they are
    nodes: dict[str, tuple[bytes | Exception, dict]] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    name: str
    roles: tuple[str, ...]  # the member roles of one record, in order
    record_name: str  # what one record is ("pair"): a repeated record is a `duplicate_<record_name>` failure
    fields: Callable[[Any], list[str]]  # columns -> the fields a record needs (validate checks them)
    expand: Callable[[dict, Any, Path | None], Record]  # (fields, columns, root) -> Record
    derive_id: Callable[[dict[str, str], str], str]  # ({role: content id}, text) -> record id
    image_fields: Callable[[Any], list[str]] = lambda columns: []  # fields that hold images
    optional: Callable[[Any], list[str]] = lambda columns: []  # fields read where the source has them
    # roles whose images are not photos: never a graph task's `image`, a context row or a Graph200K
    # target; only their own record uses them (an edit pair's edited side)
    non_photo_roles: tuple[str, ...] = ()


LAYOUTS: dict[str, Layout | None] = {"images": None}


def register_layout(layout: Layout) -> None:
    if layout.name in LAYOUTS:
        raise ValueError(f"layout {layout.name!r} is already registered")
    LAYOUTS[layout.name] = layout


def layout_of(name: str) -> Layout | None:
    return LAYOUTS[name]


def non_photo_roles() -> list[str]:
    """Every registered layout's non-photo roles, sorted."""
    return sorted({r for layout in LAYOUTS.values() if layout is not None for r in layout.non_photo_roles})


def duplicate_reason(roles) -> str:
    """The failure reason of a record given twice, by the layout whose roles it has."""
    for layout in LAYOUTS.values():
        if layout is not None and set(layout.roles) == set(roles):
            return f"duplicate_{layout.record_name}"
    return "duplicate_record"


def read_member(value: Any, root: Path | None) -> bytes | Exception:
    """Encoded bytes of an image field, or the reason it cannot be read (never raises)."""
    if isinstance(value, Exception):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) if len(value) else ImageRejected("not_an_image", "empty bytes")
    if isinstance(value, dict):  # HF Image feature (decode=False)
        if value.get("bytes"):
            return bytes(value["bytes"])
        value = value.get("path")
    if value is None:
        return ImageRejected("missing_field", "no value")
    if not isinstance(value, str):
        return ImageRejected("not_an_image", f"a {type(value).__name__}, not bytes or a path")
    if root is None:
        return ImageRejected("unsafe_path", f"{value!r}: a path in a source without a root folder")
    if os.path.isabs(value) or ".." in Path(value).parts:
        return ImageRejected("unsafe_path", f"{value!r} leaves the source root {root}")
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()):  # a link that points out of the root
        return ImageRejected("unsafe_path", f"{value!r} resolves outside the source root {root}")
    from core.files import read_regular_file

    data = read_regular_file(str(path))  # a FIFO, socket or device is a failure, never opened
    if isinstance(data, ImageRejected):
        return ImageRejected(data.reason, f"{value!r}: {data.detail}")
    return ImageRejected("unreadable", f"{value!r}: {data}") if isinstance(data, Exception) else data


def text_value(value: Any) -> str:
    if isinstance(value, Exception):
        return ""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value).strip()


# --- edit_pairs ------------------------------------------------------------------------------------

def _pair_fields(columns) -> list[str]:
    return [columns.source, columns.edited, columns.instruction] + ([columns.record_id] if columns.record_id else [])


def _pair_expand(fields: dict, columns, root: Path | None) -> Record:
    members = [Member("source", read_member(fields.get(columns.source), root)),
               Member("edited", read_member(fields.get(columns.edited), root))]
    named = text_value(fields.get(columns.record_id)) if columns.record_id else ""
    return Record(members, text_value(fields.get(columns.instruction)), named or None)


def _pair_id(ids: dict[str, str], text: str) -> str:
    return content_id(f"{ids['source']}\n{ids['edited']}\n{text}".encode())


register_layout(Layout("edit_pairs", ("source", "edited"), "pair", _pair_fields, _pair_expand, _pair_id,
                       image_fields=lambda columns: [columns.source, columns.edited], non_photo_roles=("edited",)))


# --- subjects200k (issue 14) -----------------------------------------------------------------------
# Subjects200K (OminiControl): one row is one subject seen twice, the two views side by side in one
# image (1024 x 512), with `description` {item, description_0, description_1, category, ...},
# `quality_assessment` {objectConsistency, imageQuality, compositeStructure} and `collection`. The
# pair is cut at the middle of its width into roles `view_0` (left) and `view_1` (right), each a
# lossless PNG; the descriptions and scores go into both views' meta. The record id is a named
# column, else a digest of both views' content ids and the item: two sources never collide.
# pipelines/subjects.py turns these records into the `reference` node and the subject groups.

SUBJECT_ROLES = ("view_0", "view_1")
_PAIR_MAX_PIXELS = 128_000_000  # twice ingest's default cap: each half is checked again as an image


def _subject_fields(columns) -> list[str]:
    extra = [c for c in (columns.collection, columns.record_id) if c]
    return [columns.pair_image, columns.description, columns.quality_assessment] + extra


def split_pair(data: bytes) -> tuple[bytes, bytes]:
    """The two halves of a side-by-side pair image, each as lossless PNG; ImageRejected (with its
    reason) for bytes that are no image or no pair."""
    from core.images import decode_normalised, encode_png

    rgb = decode_normalised(data, max_pixels=_PAIR_MAX_PIXELS, min_side=2)
    height, width = rgb.shape[:2]
    if width % 2 or width < height:
        raise ImageRejected("not_a_pair", f"{width}x{height}: a pair image has an even width, two views side by side")
    half = width // 2
    return encode_png(rgb[:, :half]), encode_png(rgb[:, half:])


def _dict_value(value: Any) -> dict:
    """A struct field (dict), or a JSON string of one; anything else is {}."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str) and value.strip().startswith("{"):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _subject_expand(fields: dict, columns, root: Path | None) -> Record:
    pair = read_member(fields.get(columns.pair_image), root)
    if isinstance(pair, bytes):
        try:
            views: list[bytes | Exception] = list(split_pair(pair))
        except ImageRejected as e:
            views = [e, e]
    else:
        views = [pair, pair]
    description = _dict_value(fields.get(columns.description))
    quality = {k: v for k, v in _dict_value(fields.get(columns.quality_assessment)).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    collection = text_value(fields.get(columns.collection)) if columns.collection else ""
    named = text_value(fields.get(columns.record_id)) if columns.record_id else ""
    return Record([Member(role, view) for role, view in zip(SUBJECT_ROLES, views)],
                  text_value(description.get("item")), named or None,
                  {"description": description, "quality_assessment": quality, "collection": collection})


def _subject_id(ids: dict[str, str], text: str) -> str:
    return content_id(f"subject\n{ids['view_0']}\n{ids['view_1']}\n{text}".encode())


register_layout(Layout("subjects200k", SUBJECT_ROLES, "subject", _subject_fields, _subject_expand, _subject_id,
                       image_fields=lambda columns: [columns.pair_image]))
# --- end subjects200k ------------------------------------------------------------------------------


# --- graph200k ---------------------------------------------------------------------------------------
# The released Graph200K (VisualCloze/Graph200K on the HF hub, saved with `save_to_disk` or as Parquet):
# Subjects200K's subjects with one column per node. `target` and `ref` are the two views of the subject
# (roles view_0 / view_1, as subjects200k: `ref` becomes the target's `reference` node); the node
# columns are taken as they are, as nodes of the target, so vicl's own annotators only add the node
# types the release lacks. Column names as in VisualCloze's processing.py.

GRAPH200K_NODE_COLUMNS = {  # column -> vicl node type
    "canny": "canny", "depth": "depth", "hed": "hed", "mlsd": "mlsd", "openpose": "openpose", "normal": "normal",
    "uniformer": "uniformer", "sam2_mask": "sam2_mask", "foreground": "foreground_mask",  # a binary mask
    "qwen_2_5_mask": "mask", "qwen_2_5_bounding_box": "bbox", "DepthEdit": "DepthEdit",
    **{f"FillEdit_image_{k}": "FillEdit" + (f"_{k}" if k else "") for k in range(5)},
    **{f"{style}_image_{k}": style + (f"_{k}" if k else "") for style in ("InstantStyle", "ReduxStyle")
       for k in range(3)},
    **{f"{style}_ref_{k}": f"{style}_ref" + (f"_{k}" if k else "") for style in ("InstantStyle", "ReduxStyle")
       for k in range(3)},
}
GRAPH200K_META_COLUMNS = ("FillEdit_meta", "qwen_2_5_meta")


def _graph200k_fields(columns) -> list[str]:
    return ["target", columns.description, columns.quality_assessment]


def _graph200k_optional(columns) -> list[str]:
    return ["ref", *([columns.collection] if columns.collection else []), *GRAPH200K_NODE_COLUMNS,
            *GRAPH200K_META_COLUMNS, *([columns.record_id] if columns.record_id else [])]


def _graph200k_expand(fields: dict, columns, root: Path | None) -> Record:
    subject = _subject_expand({columns.pair_image: None, **fields}, columns, root)
    members = [Member("view_0", read_member(fields.get("target"), root))]
    if fields.get("ref") is not None:
        members.append(Member("view_1", read_member(fields["ref"], root)))
    fill_meta = _dict_value(fields.get("FillEdit_meta"))
    box_meta = _dict_value(fields.get("qwen_2_5_meta"))
    nodes = {}
    for column, node in GRAPH200K_NODE_COLUMNS.items():
        if fields.get(column) is None:
            continue
        meta = {"source_column": column}
        if node.startswith("FillEdit"):
            meta.update({k: fill_meta[k] for k in ("name", "description") if k in fill_meta})
        elif node in ("mask", "bbox"):
            meta.update(box_meta)
        nodes[node] = (read_member(fields[column], root), meta)
    return Record(members, subject.text, subject.record_id, subject.meta, nodes)


register_layout(Layout("graph200k", SUBJECT_ROLES, "subject", _graph200k_fields, _graph200k_expand, _subject_id,
                       image_fields=lambda columns: ["target", "ref"], optional=_graph200k_optional))
# --- end graph200k -----------------------------------------------------------------------------------
