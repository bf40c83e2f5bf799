"""Annotators at run time: build one from plain data, encode its outputs as store rows, render online nodes.

Shared by the annotate stage's workers and the exporter (online nodes are the same annotator
class called on one cell), so neither imports the other.
"""

from __future__ import annotations

import json

import numpy as np

from core.images import decode_rgb, encode_png


def build_annotator(name: str, params_json: str, *, device: str = "cpu", models_dir: str | None = None,
                    plugins: list[str] | tuple[str, ...] = ()):
    import annotators
    from annotators import registry

    registry.load_plugins(list(plugins))
    cls = annotators.get(name)
    annotator = cls(cls.Params.model_validate_json(params_json), device=device, models_dir=models_dir)
    annotator.load()
    return cls, annotator


def encode_output(out, png_level: int = 1) -> dict:
    """A NodeOutput as the row columns that hold it (data, format, size, meta, quality)."""
    meta = json.dumps(out.meta, sort_keys=True, default=_json_default)
    quality = getattr(out, "quality", None)
    if out.array is None:
        return {"data": b"", "format": "json", "meta": meta, "quality": quality}
    arr = np.asarray(out.array)
    if arr.ndim == 1 and arr.dtype in (np.float32, np.uint8):  # embeddings (float32) and hashes (raw bytes)
        fmt, dtype = ("f32", "<f4") if arr.dtype == np.float32 else ("u8", np.uint8)
        return {"data": arr.astype(dtype).tobytes(), "format": fmt, "width": int(arr.shape[0]), "height": 1,
                "meta": meta, "quality": quality}
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWx3 uint8/uint16 (or a 1-d float32 vector), got {arr.dtype} {arr.shape}")
    return {"data": encode_png(arr, png_level), "format": "png", "width": int(arr.shape[1]),
            "height": int(arr.shape[0]), "meta": meta, "quality": quality}


def decode_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


_ONLINE: dict[tuple[str, str], object] = {}


def render_online(name: str, params_json: str, image_bytes: bytes, image_id: str, node: str,
                  plugins: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """The online path: the same annotator class on one decoded image -> (encoded bytes, meta JSON),
    the meta recording the parameters it used, as a materialised node's does."""
    key = (name, params_json)
    if key not in _ONLINE:
        _ONLINE[key] = build_annotator(name, params_json, plugins=plugins)[1]
    out = _ONLINE[key].annotate([{"image": decode_rgb(image_bytes), "image.meta": {}}], [image_id])[0]
    row = encode_output(out[node])
    return row["data"], row["meta"]
