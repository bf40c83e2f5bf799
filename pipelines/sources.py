"""Image sources: list input entries cheaply on the driver, load their bytes in workers.

An entry names one input inside its source:
  embedded   skimage:<name>?x0=..&y0=..&x1=..&y1=..&flip=..&size=..   (a derived crop)
  folder     the file's absolute path
  webdataset <tar path>#<member name>[@<n> for the n-th later member of the same name]
  parquet    <parquet path>#<row index>
  hf_disk    <dataset folder>#<row index>            (a `datasets.save_to_disk` folder)
  record layouts (pipelines/records.py): one entry per record, a folder's
             <pair folder>, a tar's <tar path>#<sample key>, a table's row as above
with the container it is read from and the container's stamp (size and mtime): listing a
folder of 10^6 files stats them and reads none, and a container whose stamp is unchanged is
not even re-listed (its previous entries are reused). An input that cannot be taken (a link,
an unsafe member name, a corrupt container, a FIFO, socket or device: `not_a_regular_file`) is
still an entry, with `reject` set, so it becomes a failure row like any bad image and the run
goes on. Only regular files are ever opened (a FIFO would block a worker in `open()` forever).

Names need not be UTF-8. POSIX names are bytes, and Python lists a byte that is not UTF-8 as a
lone surrogate (PEP 383), which Parquet, JSON readers and `str.encode()` refuse. In memory a
reference keeps the str Python gave (it opens the file); stored (listing.parquet, part ids, an
image's meta `source`, failures) it is `stored_ref(ref)`: relative to the working directory when the
source's params path is relative (a build moved or copied to another folder stores the same
references, part ids and manifest), then `ref_text`: the reference itself when it is plain
text, else its bytes with each byte that is not UTF-8 written `\\xNN` and each backslash doubled
(`caf\\xe9.jpg` for the Latin-1 name `café.jpg`). `ref_from_text` reverses it exactly, so a re-run
finds the same inputs in the same parts; a plain name that itself holds `\\\\` or `\\x80`-`\\xff` is
stored escaped as well, so no two names share a stored form.
"""

from __future__ import annotations

import glob
import io
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable
from urllib.parse import parse_qsl, urlencode

import numpy as np

from core.files import not_regular, read_regular_file
from pipelines.params import ParamsError, SourceParams

# Photos that ship inside scikit-image (no download). Greyscale ones come in as RGB.
EMBEDDED_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
    "stereo_motorcycle", "colorwheel", "logo", "cat", "camera", "coins", "moon", "page", "text", "clock",
    "brick", "grass", "gravel", "cell", "horse",
)


def _embedded_base(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:  # logo: composite alpha on white, as ingest would
        alpha = img[..., 3:4].astype(np.float32) / 255
        img = (img[..., :3] * alpha + 255 * (1 - alpha)).round()
    return np.ascontiguousarray(img.astype(np.uint8))


def embedded_refs(count: int, size: int) -> list[str]:
    """`count` distinct crop windows spread over the embedded photos, fixed by their index."""
    refs, windows = [], set()
    shapes = {name: _embedded_base(name).shape[:2] for name in EMBEDDED_PHOTOS}
    for i in range(count):
        name = EMBEDDED_PHOTOS[i % len(EMBEDDED_PHOTOS)]
        h, w = shapes[name]
        rng = np.random.default_rng([20261122, i])
        window = None
        while window is None or window in windows:  # identical windows would be identical bytes
            window = _draw_window(rng, name, h, w)
        windows.add(window)
        _, x0, y0, cw, ch, flip = window
        query = urlencode({"x0": x0, "y0": y0, "x1": x0 + cw, "y1": y0 + ch, "flip": flip, "size": size, "i": i})
        refs.append(f"skimage:{name}?{query}")
    return refs


def _draw_window(rng: np.random.Generator, name: str, h: int, w: int) -> tuple:
    """A crop of 40-100% of the short side, aspect 1, 4:3 or 3:4, optionally mirrored."""
    scale = float(rng.choice([1.0, 0.85, 0.7, 0.55, 0.4]))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 4]))
    ch = min(h, max(16, int(round(min(h, w) * scale / max(1.0, 1 / aspect)))))
    cw = min(w, max(16, int(round(ch * aspect))))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    flip = int(rng.integers(0, 2))
    return name, x0, y0, cw, ch, flip


def render_embedded(ref: str) -> bytes:
    """PNG bytes of one derived crop; a pure function of the reference."""
    from PIL import Image

    name, query = ref[len("skimage:"):].split("?", 1)
    q = {k: int(v) for k, v in parse_qsl(query)}
    img = _embedded_base(name)[q["y0"]:q["y1"], q["x0"]:q["x1"]]
    if q["flip"]:
        img = img[:, ::-1]
    im = Image.fromarray(np.ascontiguousarray(img))
    scale = q["size"] / max(im.size)
    im = im.resize((max(16, round(im.width * scale)), max(16, round(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()



@dataclass(frozen=True)
class Entry:
    ref: str  # unique reference of one input
    container: str = ""  # the file it is read from ("" for embedded crops)
    stamp: str = ""  # "<size>:<mtime_ns>" of the container: a new stamp means new content
    reject: str | None = None  # "reason: detail" for an input that is listed but cannot be taken


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


_ESCAPE = re.compile(rb"\\\\|\\x[89a-f][0-9a-f]")  # `\\` or `\xNN` for a byte that is not UTF-8


def _unescape(text: str) -> str:
    raw = _ESCAPE.sub(lambda m: b"\\" if m[0] == b"\\\\" else bytes([int(m[0][2:], 16)]), text.encode("utf-8"))
    return os.fsdecode(raw)


def ref_text(ref: str) -> str:
    """The stored form of a reference (or of any listed name): valid UTF-8 text, see the module doc."""
    try:
        ref.encode("utf-8")
        plain = "\\" not in ref or _unescape(ref) == ref
    except UnicodeEncodeError:  # a name with bytes that are not UTF-8
        plain = False
    return ref if plain else os.fsencode(ref).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def ref_from_text(text: str) -> str:
    """The reference `ref_text` stored: `ref_from_text(ref_text(r)) == r` for every listed name."""
    return _unescape(text) if "\\" in text else text


def _relative_to_base(source: SourceParams) -> bool:
    """Whether the source's references are stored relative to the working directory: when its
    params path is relative (it resolves against that directory, so the directory is the same on
    every run of the build); a path given absolute is stored absolute."""
    return source.kind != "embedded" and not os.path.isabs(os.path.expanduser(source.path))


def stored_ref(ref: str, source: SourceParams, base: str) -> str:
    """A reference as the store keeps it (listing, part ids, an image's meta `source`, failures):
    relative to `base` (the working directory of the run that listed it) when the source's path is
    relative, so one build in two folders stores the same text and makes the same part ids and
    manifest; then `ref_text` (names that are not UTF-8). `ref_from_stored` reverses it."""
    prefix = base.rstrip(os.sep) + os.sep
    if _relative_to_base(source) and ref.startswith(prefix):
        ref = ref[len(prefix):]
    return ref_text(ref)


def ref_from_stored(text: str, source: SourceParams, base: str) -> str:
    """The in-memory (absolute) reference of a stored one; a store made before references were
    stored relative holds absolute ones, which come back unchanged."""
    ref = ref_from_text(text)
    return os.path.join(base, ref) if _relative_to_base(source) and not os.path.isabs(ref) else ref


def _expand(path: str) -> list[str]:
    p = os.path.abspath(os.path.expanduser(path))
    matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else ([p] if os.path.exists(p) else [])
    if not matches:
        raise FileNotFoundError(f"no input matches {path!r}")
    return matches


def _container_files(source: SourceParams) -> list[str]:
    files = []
    for path in _expand(source.path):
        if os.path.isdir(path):
            raise IsADirectoryError(f"ingest {source.kind} source {source.path!r}: {path} is a folder; give a file "
                                    f"or a glob such as '{os.path.join(source.path, '*.tar' if source.kind == 'webdataset' else '*.parquet')}'")
        files.append(path)
    return files


# --- one reader per source kind: how it is checked, listed and read ---------------------------

@dataclass(frozen=True)
class SourceReader:
    """How one `kind` of source is checked (cheaply, before any work), listed (stat only; `previous`:
    container -> its entries from the last listing, reused when the container's stamp is unchanged)
    and read ({ref: bytes, a record's {field: value}, or the exception that stops it} for entries
    that can be taken)."""

    check: Callable[[SourceParams], str | None]
    list: Callable[[SourceParams, dict[str, list[Entry]]], list[Entry]]
    read: Callable[[SourceParams, list[Entry]], dict[str, bytes | dict | Exception]]


READERS: dict[str, SourceReader] = {}


def register_reader(kind: str, reader: SourceReader) -> None:
    READERS[kind] = reader


def _missing(source: SourceParams) -> str | None:
    try:
        _expand(source.path)
    except FileNotFoundError:
        return f"no such file or folder (relative paths resolve against {os.getcwd()})"
    return None


def _check_folder(source: SourceParams) -> str | None:
    folder = _expand(source.path)[0]
    if not os.path.isdir(folder):
        return "not a folder"
    if source.layout != "images" and not any(
            os.path.isdir(os.path.join(folder, d)) and not d.startswith(".") for d in os.listdir(folder)):
        return f"layout {source.layout}: the folder holds no record folders (one sub-folder per record)"
    for _, dirs, files in os.walk(folder):
        if any(not f.startswith(".") for f in files):
            return None
    return "the folder holds no files"


def _check_hf_disk(source: SourceParams) -> str | None:
    try:
        ds = _open_hf_disk(source)
    except Exception as e:  # noqa: BLE001 - reported in one line
        return f"not a `datasets.save_to_disk` folder ({type(e).__name__}: {e})"
    missing = [c for c in _table_fields(source) if c not in ds.column_names]
    return f"no column {', '.join(map(repr, missing))} (has {', '.join(ds.column_names)})" if missing else None


def _check_files(source: SourceParams) -> str | None:
    try:
        _container_files(source)
    except IsADirectoryError as e:
        return str(e).split(": ", 1)[1]
    return None


def _check_parquet(source: SourceParams) -> str | None:
    import pyarrow.parquet as pq

    problem = _check_files(source)
    if problem:
        return problem
    for path in _container_files(source)[:1]:  # the mapping is checked on the first file; the others at ingest
        try:
            names = pq.read_schema(path).names
        except Exception:  # noqa: BLE001 - a corrupt file is a failure row at ingest, not a params error
            return None
        missing = [c for c in _table_fields(source) if c not in names]
        if missing:
            return f"{path}: no column {', '.join(map(repr, missing))} (has {', '.join(names)})"
    return None


def _per_container(list_one: Callable[[SourceParams, str, str], list[Entry]]):
    """A lister over a source's container files (tars, Parquet files): one whose stamp is unchanged
    keeps its previous entries without being opened."""
    def list_all(source: SourceParams, previous: dict[str, list[Entry]]) -> list[Entry]:
        out = []
        for path in _container_files(source):
            stamp = _stamp(os.stat(path))
            old = previous.get(path)
            out.extend(old if old and old[0].stamp == stamp else list_one(source, path, stamp))
        return out
    return list_all


def _by_container(load_one: Callable[[str, set[str], SourceParams], dict]):
    """A reader that opens each container once for all of its entries."""
    def read(source: SourceParams, entries: list[Entry]) -> dict:
        by_container: dict[str, set[str]] = {}
        for e in entries:
            by_container.setdefault(e.container, set()).add(e.ref)
        data = {}
        for container, refs in sorted(by_container.items()):
            data.update(load_one(container, refs, source))
        return data
    return read


def _read_folder(source: SourceParams, entries: list[Entry]) -> dict:
    records = source.layout != "images"
    return {e.ref: _read_record_folder(e.ref, source) if records else read_regular_file(e.ref, source.follow_links)
            for e in entries}


def _list_tar(source: SourceParams, path: str, stamp: str) -> list[Entry]:
    if source.layout != "images":
        return _tar_record_entries(path, stamp)
    return _tar_entries(path, stamp, {e.lower() for e in source.image_extensions})


def _read_tar(container: str, refs: set[str], source: SourceParams) -> dict:
    return (_load_tar_records if source.layout != "images" else _load_tar)(container, refs, source)


def check_source(source: SourceParams) -> str | None:
    """Why a source cannot be read at all (missing, empty, a folder given as a file set), or None.
    Cheap (stat and one directory entry), so `vicl validate` and every stage ask before Ray starts.
    A relative path resolves against the working directory."""
    if source.kind != "embedded":
        problem = _missing(source)
        if problem:
            return problem
    return READERS[source.kind].check(source)


def list_entries(source: SourceParams, previous: dict[str, list[Entry]] | None = None) -> list[Entry]:
    """Every input of a source, in a deterministic order. `previous`: container -> its entries from
    the last listing; a container with the same stamp is not opened again."""
    return READERS[source.kind].list(source, previous or {})


def load_chunk(source: SourceParams, entries: list[Entry]) -> Iterator[tuple[str, bytes | dict | Exception]]:
    """(ref, bytes) for each entry, in order; an unreadable or rejected one yields an exception instead.
    Record layouts yield (ref, {field: value}) (pipelines/records.py reads the values)."""
    from core.images import ImageRejected

    data: dict[str, bytes | dict | Exception] = {}
    for e in entries:
        if e.reject is not None:
            reason, _, detail = e.reject.partition(": ")
            data[e.ref] = ImageRejected(reason, detail)
    data.update(READERS[source.kind].read(source, [e for e in entries if e.reject is None]))
    for e in entries:
        yield e.ref, data.get(e.ref, ImageRejected("unreadable", "input no longer in its container"))


def _table_fields(source: SourceParams) -> list[str]:
    """The columns a table source must have (the image column, or every field its layout needs)."""
    from pipelines.records import layout_of

    layout = layout_of(source.layout)
    return [source.image_column] if layout is None else layout.fields(source.columns)


def _read_fields(source: SourceParams, available) -> list[str]:
    """The columns to read: the needed ones and the layout's optional ones the source has."""
    from pipelines.records import layout_of

    layout = layout_of(source.layout)
    optional = [] if layout is None else [c for c in layout.optional(source.columns) if c in available]
    return _table_fields(source) + [c for c in optional if c not in _table_fields(source)]


def list_refs(source: SourceParams) -> list[str]:
    """The references of the inputs that can be taken."""
    return [e.ref for e in list_entries(source) if e.reject is None]


def _folder_entries(source: SourceParams) -> list[Entry]:
    root = _expand(source.path)[0]
    if not os.path.isdir(root):
        raise NotADirectoryError(f"ingest folder source {source.path!r} is not a directory")
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=source.follow_links):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    if not source.follow_links:
                        out.append(Entry(path, path, "", "link: symbolic link not followed (ingest source "
                                                         "follow_links: true takes it)"))
                        continue
                    st = os.stat(path)
            except OSError as e:
                out.append(Entry(path, path, "", f"unreadable: {e.strerror or type(e).__name__}"))
                continue
            kind = not_regular(st)  # a FIFO named *.jpg would block the worker that opens it
            out.append(Entry(path, path, "", f"not_a_regular_file: {kind}") if kind else
                       Entry(path, path, _stamp(st)))
    return sorted(out, key=lambda e: e.ref)


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if member.issym() or member.islnk():
        return "link: tar member is a link"
    if not member.isfile():
        return None if member.isdir() else "not_a_file: tar member is not a regular file"
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or posixpath.isabs(name) or ".." in parts:
        return "unsafe_name: member path leaves the archive"
    return None


def _tar_entries(path: str, stamp: str, exts: set[str]) -> list[Entry]:
    """Image members of one tar (WebDataset layout). Members listed as they come; a tar cut short
    keeps the members before the cut and gets one `corrupt_container` entry with the offset."""
    out, count, keys_with_image, others = [], {}, set(), []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                problem = _member_problem(member)
                if member.isdir():
                    continue
                n = count.get(member.name, 0)
                count[member.name] = n + 1
                ref = f"{path}#{member.name}" + (f"@{n}" if n else "")
                base = posixpath.basename(member.name)
                key = posixpath.join(posixpath.dirname(member.name), base.split(".", 1)[0])
                is_image = "." in base and base.rsplit(".", 1)[-1].lower() in exts
                if problem:
                    out.append(Entry(ref, path, stamp, problem))
                elif is_image:
                    keys_with_image.add(key)
                    out.append(Entry(ref, path, stamp))
                else:
                    others.append((key, ref))
    except (tarfile.TarError, EOFError, OSError) as e:
        detail = f"{type(e).__name__} after {len(out) + len(others)} members"
        out.append(Entry(f"{path}#", path, stamp, f"corrupt_container: {detail}"))
    # A member that is not an image is a sample's companion (caption, json) when its key has an
    # image; alone, it is an input we cannot use.
    out += [Entry(ref, path, stamp, "not_an_image: no image extension") for key, ref in others
            if key not in keys_with_image]
    return out


def _parquet_entries(path: str, stamp: str, columns: list[str]) -> list[Entry]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is this container's failure
        return [Entry(f"{path}#", path, stamp, f"corrupt_container: {type(e).__name__}")]
    missing = [c for c in columns if c not in meta.schema_arrow.names]
    if missing:
        return [Entry(f"{path}#", path, stamp, f"missing_column: no column {', '.join(map(repr, missing))} "
                                               f"(has {', '.join(meta.schema_arrow.names)})")]
    return [Entry(f"{path}#{i}", path, stamp) for i in range(meta.metadata.num_rows)]


def _tree_stamp(root: str) -> str:
    """One stamp for a folder's files (names, sizes, mtimes): a record folder or a saved dataset."""
    import hashlib

    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            digest.update(os.fsencode(f"{os.path.relpath(os.path.join(dirpath, name), root)}\t{_stamp(st)}\n"))
    return digest.hexdigest()[:24]


def _open_hf_disk(source: SourceParams):
    import datasets

    ds = datasets.load_from_disk(_expand(source.path)[0])
    if isinstance(ds, datasets.DatasetDict):
        if source.split is None:
            raise ValueError(f"{source.path} holds splits {sorted(ds)}: set the source's `split`")
        ds = ds[source.split]
    return ds


def _hf_disk_entries(source: SourceParams, previous: dict[str, list[Entry]]) -> list[Entry]:
    root = _expand(source.path)[0]
    stamp = _tree_stamp(root)
    old = previous.get(root)
    if old and old[0].stamp == stamp:
        return old
    try:
        ds = _open_hf_disk(source)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - an unreadable dataset folder is this container's failure
        return [Entry(f"{root}#", root, stamp, f"corrupt_container: {type(e).__name__}: {e}")]
    missing = [c for c in _table_fields(source) if c not in ds.column_names]
    if missing:
        return [Entry(f"{root}#", root, stamp, f"missing_column: no column {', '.join(map(repr, missing))} "
                                               f"(has {', '.join(ds.column_names)})")]
    return [Entry(f"{root}#{i}", root, stamp) for i in range(len(ds))]


def _record_folder_entries(source: SourceParams) -> list[Entry]:
    """One entry per sub-folder that holds files (a pair folder); stamped by its files."""
    root = _expand(source.path)[0]
    if not os.path.isdir(root):
        raise NotADirectoryError(f"ingest folder source {source.path!r} is not a directory")
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(path):
            continue
        if os.path.islink(path) and not source.follow_links:
            out.append(Entry(path, path, "", "link: symbolic link not followed (ingest source follow_links: "
                                             "true takes it)"))
            continue
        out.append(Entry(path, path, _tree_stamp(path)))
    return out


def _tar_record_entries(path: str, stamp: str) -> list[Entry]:
    """One entry per sample key of a tar (its members are the record's fields)."""
    keys, problems = [], []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isdir():
                    continue
                problem = _member_problem(member)
                key = _sample_key(member.name)
                if problem:
                    problems.append(Entry(f"{path}#{member.name}", path, stamp, problem))
                elif key not in keys:
                    keys.append(key)
    except (tarfile.TarError, EOFError, OSError) as e:
        problems.append(Entry(f"{path}#", path, stamp, f"corrupt_container: {type(e).__name__}"))
    return [Entry(f"{path}#{k}", path, stamp) for k in keys] + problems


def _sample_key(name: str) -> str:
    base = posixpath.basename(name)
    return posixpath.join(posixpath.dirname(name), base.split(".", 1)[0])


def _read_record_folder(path: str, source: SourceParams) -> dict | Exception:
    """A pair folder's files by name: {file name: bytes}; a field is matched by its name or stem."""
    try:
        files = sorted(os.listdir(path))
    except OSError as e:
        return OSError(e.strerror or type(e).__name__)
    out = {}
    for name in files:
        full = os.path.join(path, name)
        if not name.startswith(".") and not os.path.isdir(full):  # a FIFO field is a failure, not a gap
            out[name] = read_regular_file(full, source.follow_links)
    return _by_field(out, source)


def _by_field(named: dict, source: SourceParams) -> dict:
    """{field: value} for the layout's fields from {member or file name: value} (name or stem match)."""
    from pipelines.records import layout_of

    out = {}
    for f in layout_of(source.layout).fields(source.columns):
        if f in named:
            out[f] = named[f]
            continue
        for name in sorted(named):
            if name.split(".", 1)[0] == f:
                out[f] = named[name]
                break
    return out


def _load_tar_records(path: str, refs: set[str], source: SourceParams) -> dict[str, dict | Exception]:
    """{sample ref: {field: value}}: a member `<key>.<field>` is the field of sample `<key>`; a tar cut
    short keeps the samples read before the cut, the others are `corrupt_container`."""
    by_key: dict[str, dict] = {}
    failed = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                ref = f"{path}#{_sample_key(member.name)}"
                if member.isfile() and not _member_problem(member) and ref in refs:
                    field = posixpath.basename(member.name).partition(".")[2]
                    by_key.setdefault(ref, {})[field] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        failed = _corrupt(e)
    out: dict[str, dict | Exception] = {ref: _by_field(fields, source) for ref, fields in by_key.items()}
    return out | ({ref: failed for ref in refs if ref not in out} if failed else {})


def _load_hf_rows(root: str, refs: set[str], source: SourceParams) -> dict[str, bytes | dict | Exception]:
    import datasets

    rows = sorted(int(r.rsplit("#", 1)[1]) for r in refs)
    try:
        ds = _open_hf_disk(source)
        for name, feature in ds.features.items():
            if isinstance(feature, datasets.Image):
                ds = ds.cast_column(name, datasets.Image(decode=False))
        table = ds.select([i for i in rows if i < len(ds)]).with_format("arrow")[:]
    except Exception as e:  # noqa: BLE001 - the folder changed or broke since it was listed
        return {f"{root}#{i}": _corrupt(e) for i in rows}
    return _table_rows(table, [i for i in rows if i < len(ds)], root, source, positions=range(len(table)))


def _load_tar(path: str, refs: set[str], source: SourceParams) -> dict[str, bytes | Exception]:
    out: dict[str, bytes | Exception] = {}
    count: dict[str, int] = {}
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                n = count.get(member.name, 0)
                count[member.name] = n + 1
                ref = f"{path}#{member.name}" + (f"@{n}" if n else "")
                if ref in refs:
                    try:
                        out[ref] = tar.extractfile(member).read()
                    except (tarfile.TarError, EOFError, OSError) as e:
                        out[ref] = _corrupt(e)
    except (tarfile.TarError, EOFError, OSError) as e:
        out.update({ref: _corrupt(e) for ref in refs if ref not in out})
    return out


def _corrupt(e: Exception) -> Exception:
    from core.images import ImageRejected

    return ImageRejected("corrupt_container", type(e).__name__)


def _load_parquet_rows(path: str, refs: set[str], source: SourceParams) -> dict[str, bytes | dict | Exception]:
    import pyarrow.parquet as pq

    rows = sorted(int(r.rsplit("#", 1)[1]) for r in refs)
    try:
        table = pq.read_table(path, columns=_read_fields(source, pq.read_schema(path).names))
    except Exception as e:  # noqa: BLE001 - the file changed or broke since it was listed
        return {f"{path}#{i}": _corrupt(e) for i in rows}
    return _table_rows(table, rows, path, source, positions=rows)


def _table_rows(table, rows: list[int], container: str, source: SourceParams, positions) -> dict:
    """Rows of a table source: image bytes (images layout) or {field: value} (record layouts)."""
    from core.images import ImageRejected

    out: dict[str, bytes | dict | Exception] = {}
    for i, pos in zip(rows, positions):
        if pos >= table.num_rows:
            out[f"{container}#{i}"] = ImageRejected("unreadable", "row no longer in its container")
            continue
        if source.layout != "images":
            out[f"{container}#{i}"] = {c: table[c][pos].as_py() for c in _read_fields(source, table.column_names)}
            continue
        value = table[source.image_column][pos].as_py()
        if isinstance(value, dict):  # HF datasets Image feature: {bytes, path}
            value = value.get("bytes")
        out[f"{container}#{i}"] = value if isinstance(value, bytes) else ImageRejected("not_an_image", "no image bytes")
    return out


def check_inputs(params: Params, source: str = "params") -> None:
    """Every configured input (ingest sources, edit corpora among them) exists and is not empty: a missing folder
    fails here, in one line, not after Ray started."""
    for i, src in enumerate(params.ingest.sources):
        problem = check_source(src)
        if problem:
            raise ParamsError(f"{source}: ingest.sources.{i}.path: {src.path!r}: {problem}")


# the built-in kinds (a new kind: its three functions and one line here)
register_reader("embedded", SourceReader(
    check=lambda source: None,
    list=lambda source, previous: [Entry(ref) for ref in embedded_refs(source.count, source.size)],
    read=lambda source, entries: {e.ref: render_embedded(e.ref) for e in entries}))
register_reader("folder", SourceReader(
    check=_check_folder,
    list=lambda source, previous: (_record_folder_entries(source) if source.layout != "images"
                                   else _folder_entries(source)),
    read=_read_folder))
register_reader("webdataset", SourceReader(check=_check_files, list=_per_container(_list_tar),
                                           read=_by_container(_read_tar)))
register_reader("parquet", SourceReader(
    check=_check_parquet,
    list=_per_container(lambda source, path, stamp: _parquet_entries(path, stamp, _table_fields(source))),
    read=_by_container(_load_parquet_rows)))
register_reader("hf_disk", SourceReader(check=_check_hf_disk, list=lambda source, previous: _hf_disk_entries(
    source, previous), read=_by_container(_load_hf_rows)))
