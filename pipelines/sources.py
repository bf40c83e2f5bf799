"""Image sources: list input references cheaply on the driver, load their bytes in workers.

A reference is a string that names one input inside its source:
  embedded   skimage:<name>?x0=..&y0=..&x1=..&y1=..&flip=..&size=..   (a derived crop)
  folder     the file's absolute path
  webdataset <tar path>#<member name>
  parquet    <parquet path>#<row index>
References are listed in a deterministic order and cut into fixed chunks; each chunk
becomes one ingest part, so the part a file lands in never depends on timing.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np

from pipelines.params import SourceParams

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


def _expand(path: str) -> list[str]:
    p = os.path.abspath(os.path.expanduser(path))
    matches = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
    if not matches:
        raise FileNotFoundError(f"no input matches {path!r}")
    return matches


def list_refs(source: SourceParams) -> list[str]:
    if source.kind == "embedded":
        return embedded_refs(source.count, source.size)
    if source.kind == "folder":
        root = _expand(source.path)[0]
        if not os.path.isdir(root):
            raise NotADirectoryError(f"ingest folder source {source.path!r} is not a directory")
        refs = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            refs.extend(os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
        return sorted(refs)
    if source.kind == "webdataset":
        refs = []
        exts = set(source.image_extensions)
        for tar_path in _expand(source.path):
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.isfile() and member.name.split(".", 1)[-1].lower() in exts:
                        refs.append(f"{tar_path}#{member.name}")
        return refs
    if source.kind == "parquet":
        import pyarrow.parquet as pq

        refs = []
        for path in _expand(source.path):
            n = pq.ParquetFile(path).metadata.num_rows
            refs.extend(f"{path}#{i}" for i in range(n))
        return refs
    raise ValueError(source.kind)


def load_chunk(source: SourceParams, refs: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
    """(ref, bytes) for each reference; an unreadable one yields the exception instead."""
    if source.kind == "embedded":
        for ref in refs:
            yield ref, render_embedded(ref)
    elif source.kind == "folder":
        for ref in refs:
            try:
                yield ref, Path(ref).read_bytes()
            except OSError as e:
                yield ref, e
    elif source.kind == "webdataset":
        by_tar: dict[str, set[str]] = {}
        for ref in refs:
            tar_path, member = ref.split("#", 1)
            by_tar.setdefault(tar_path, set()).add(member)
        data: dict[str, bytes | Exception] = {}
        for tar_path, members in by_tar.items():
            with tarfile.open(tar_path) as tar:
                for m in tar:
                    if m.name in members:
                        data[f"{tar_path}#{m.name}"] = tar.extractfile(m).read()
        for ref in refs:
            yield ref, data.get(ref, FileNotFoundError(ref))
    elif source.kind == "parquet":
        import pyarrow.parquet as pq

        by_file: dict[str, list[int]] = {}
        for ref in refs:
            path, row = ref.rsplit("#", 1)
            by_file.setdefault(path, []).append(int(row))
        data = {}
        for path, rows in by_file.items():
            column = pq.read_table(path, columns=[source.image_column])[source.image_column]
            for row in rows:
                value = column[row].as_py()
                if isinstance(value, dict):  # HF datasets Image feature: {bytes, path}
                    value = value.get("bytes")
                data[f"{path}#{row}"] = value if isinstance(value, bytes) else ValueError("no image bytes")
        for ref in refs:
            yield ref, data[ref]
