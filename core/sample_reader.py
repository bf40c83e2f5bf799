"""The one reader of exported vicl shards (issue 24): the trainer, `vicl eval`, the preview and the
tests all walk shards through here. The contract it checks is core/sample_schema.py.

A shard is a WebDataset tar: members `<key>.<field>` grouped into samples by key, in member order.
The key is the member name up to the first dot of its last path component, the field everything
after that dot (`train_000000042.grid.png` -> key `train_000000042`, field `grid.png`); vicl keys
have no dots. Two layouts: `json` + `grid.png`, or `json` + `r<row>c<col>.png` per cell.

Layers:
- `walk_shards`: (shard, key, {field: bytes}) of every sample, streamed (one member in memory at
  a time, one sample handed out at a time), nothing parsed; members that are not regular files or
  whose names carry no field are left out and reported to `on_skip`. It also serves shard sets
  with other records (personalization episodes).
- `parse_sample`: the JSON record checked against SCHEMA_VERSION (`SchemaError` names shard and
  key), and the image members as bytes; nothing is decoded until `Sample.image`/`Sample.cells`.
- `read_samples` (shards in the order given; also a webdataset pipeline stage: it takes the
  `{"url": ...}` items of ResampledShards/SimpleShardList) and `iter_samples` (files, globs and
  folders, expanded by `shard_paths` into one sorted list).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import IO, Union, cast

import numpy as np
from PIL import Image

from core.grid import sequence_field
from core.sample_schema import GRID_FIELD, JSON_FIELD, SCHEMA_VERSION, SampleRecord

ShardRef = Union[str, os.PathLike, Mapping[str, object]]  # a path or URL, or webdataset's {"url": ...}
OnSkip = Callable[[str, str], None]  # (member name, why it was left out)

_IMAGE_FIELD = re.compile(r"grid\.png|r[0-9]+c[0-9]+\.png")


class SchemaError(ValueError):
    """A sample whose record is missing, unreadable or not of the supported schema version."""

    def __init__(self, message: str, *, shard: str | None, key: str | None):
        where = f"{shard}: " if shard else ""
        super().__init__(f"{where}sample {key!r}: {message}")
        self.shard, self.key, self.reason = shard, key, message


@dataclass(frozen=True)
class RawSample:
    """The members of one sample as stored: field -> bytes."""

    shard: str
    key: str
    fields: dict[str, bytes]


@dataclass(frozen=True)
class Sample:
    """One exported sample: its record (schema checked) and its image members, undecoded."""

    shard: str
    key: str
    record: SampleRecord
    images: dict[str, bytes]  # `grid.png`, or `r<row>c<col>.png` for every cell

    @property
    def layout(self) -> str:
        return "grid" if GRID_FIELD in self.images else "sequence"

    def image(self, field: str) -> np.ndarray:
        """One image member decoded to H x W x 3 uint8."""
        return decode_png(self.images[field])

    def cells(self) -> list[np.ndarray]:
        """Every cell (row-major, H x W x 3 uint8): cut from the grid with its box, or decoded."""
        cells = sorted(self.record["cells"], key=lambda c: (c["row"], c["col"]))
        if GRID_FIELD in self.images:
            grid = self.image(GRID_FIELD)
            return [grid[y0:y1, x0:x1] for x0, y0, x1, y1 in (c["box"] for c in cells)]
        return [self.image(sequence_field(c["row"], c["col"])) for c in cells]


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def split_member_name(name: str) -> tuple[str, str] | None:
    """(key, field) of a member name, or None when its last path component has no field."""
    head, slash, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    if not stem or not dot or not field:
        return None
    return head + slash + stem, field


def parse_record(data: bytes, *, key: str | None, shard: str | None = None) -> SampleRecord:
    """The JSON record of a sample; SchemaError unless it is a SCHEMA_VERSION record."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise SchemaError(f"unreadable JSON record ({e})", shard=shard, key=key) from e
    found = record.get("schema") if isinstance(record, dict) else None
    if found != SCHEMA_VERSION:
        raise SchemaError(f"schema {found!r} is not the supported {SCHEMA_VERSION!r}", shard=shard, key=key)
    return cast(SampleRecord, record)


def parse_sample(raw: RawSample) -> Sample:
    """A walked sample as a Sample: record checked, image members kept as bytes."""
    if JSON_FIELD not in raw.fields:
        raise SchemaError(f"no `{JSON_FIELD}` member", shard=raw.shard, key=raw.key)
    record = parse_record(raw.fields[JSON_FIELD], key=raw.key, shard=raw.shard)
    images = {f: b for f, b in raw.fields.items() if _IMAGE_FIELD.fullmatch(f)}
    if GRID_FIELD not in images:
        want = {sequence_field(c["row"], c["col"]) for c in record.get("cells", [])}
        if not want or not want <= set(images):
            missing = sorted(want - set(images)) or [GRID_FIELD]
            raise SchemaError(f"no `{GRID_FIELD}` and no cell members {missing}", shard=raw.shard, key=raw.key)
    return Sample(raw.shard, raw.key, record, images)


def _url(ref: ShardRef) -> str:
    return str(ref["url"]) if isinstance(ref, Mapping) else os.fspath(ref)


def _open(url: str) -> IO[bytes]:
    if "://" in url or url.startswith(("pipe:", "file:")):
        from webdataset.gopen import gopen  # remote and piped shards, as webdataset opens them

        return cast(IO[bytes], gopen(url, "rb"))
    return open(url, "rb")


def walk_shards(shards: Iterable[ShardRef], on_skip: OnSkip | None = None) -> Iterator[RawSample]:
    """Every sample of the shards, in the order given, then member order, streamed.

    Consecutive members of one key form a sample; a field that repeats within it starts a new
    sample of the same key (so a repeated key is seen, not merged). Members that are not regular
    files, or whose names have no field, are left out and reported to `on_skip`.
    """
    for ref in shards:
        url = _url(ref)
        try:
            with _open(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                key: str | None = None
                fields: dict[str, bytes] = {}
                for member in tar:
                    parts = split_member_name(member.name) if member.isfile() else None
                    if parts is None:
                        if on_skip is not None:
                            on_skip(member.name, "not a regular file in the shard" if not member.isfile()
                                    else "member name has no field (no dot)")
                        continue
                    if key is not None and (parts[0] != key or parts[1] in fields):
                        yield RawSample(url, key, fields)
                        fields = {}
                    key = parts[0]
                    fields[parts[1]] = cast(IO[bytes], tar.extractfile(member)).read()
                if key is not None:
                    yield RawSample(url, key, fields)
        except (tarfile.TarError, OSError, EOFError) as e:
            e.add_note(f"while reading shard {url}")
            raise


def read_samples(shards: Iterable[ShardRef]) -> Iterator[Sample]:
    """Schema-checked samples of the shards, in the order given (a webdataset pipeline stage too)."""
    return map(parse_sample, walk_shards(shards))


def shard_paths(patterns: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Tar files from files, globs (`**` recursive) and folders (searched recursively), sorted and
    deduplicated: the deterministic order `iter_samples` reads in. FileNotFoundError when none."""
    items = [patterns] if isinstance(patterns, (str, os.PathLike)) else list(patterns)
    urls: set[str] = set()
    for p in map(os.fspath, items):
        if Path(p).is_dir():
            urls.update(str(x) for x in Path(p).rglob("*.tar"))
        elif any(ch in p for ch in "*?["):
            urls.update(glob(p, recursive=True))
        else:
            urls.add(p)
    if not urls:
        raise FileNotFoundError(f"no shards in {[os.fspath(p) for p in items]}")
    return sorted(urls)


def iter_samples(patterns: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> Iterator[Sample]:
    """Schema-checked samples of one shard, or of many shard paths, globs or folders (`shard_paths` order)."""
    return read_samples(shard_paths(patterns))
