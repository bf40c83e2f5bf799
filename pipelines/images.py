"""Image bytes in and out: content ids, safe decoding with normalisation, lossless/photo encoding.

Normalisation rule on ingest (documented in the README):
- EXIF orientation is applied, then the EXIF block is dropped.
- 16-bit grey (I;16*, I) is scaled to 8 bits by value >> 8 (I: clipped to 0..65535 first).
- Float images (F) are clipped to 0..255.
- Palette images are expanded (with their transparency) before anything else.
- Any alpha (RGBA, LA, PA, palette transparency) is composited onto white.
- CMYK / YCbCr / LAB and greyscale (L, 1) are converted to RGB by PIL's own conversion.
The result is always an H x W x 3 uint8 array.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Never let PIL paper over truncated files; a truncated input is a failure with a reason.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(ValueError):
    """An input that is not a usable image; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def content_id(data: bytes) -> str:
    """Image id: the first 32 hex digits (128 bits) of SHA-256 of the source bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.int64)
        arr = np.clip(arr, 0, 65535) >> 8
        im = Image.fromarray(arr.astype(np.uint8))
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def decode_normalised(data: bytes, *, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode untrusted bytes into an RGB uint8 array, or raise ImageRejected with a reason.

    The pixel budget is checked from the header, before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        raise ImageRejected("empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{width}x{height} > {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageRejected("too_small", f"{width}x{height}, shortest side < {min_side}")
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
    except ImageRejected:
        raise
    except Image.UnidentifiedImageError as e:
        raise ImageRejected("not_an_image", str(e)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except OSError as e:
        msg = str(e)
        reason = "truncated" if "truncated" in msg or "broken data stream" in msg else "decode_error"
        raise ImageRejected(reason, msg) from None
    except (ValueError, SyntaxError, EOFError, struct.error) as e:
        raise ImageRejected("decode_error", f"{type(e).__name__}: {e}") from None
    return np.asarray(rgb, dtype=np.uint8)


def resize_max_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most max_side; Lanczos on PIL."""
    h, w = rgb.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS))


def encode_png(arr: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG of an H x W (grey) or H x W x 3 uint8, or H x W uint16, array; deterministic bytes.

    libpng through OpenCV, at zlib levels 1-3 with zlib's run-length strategy (the PNG row
    filters leave runs that it codes well): on the degradation set's outputs 1.25x and on
    export grids 1.4x faster than Pillow at level 1, with the bytes of Pillow at level 6
    (benchmarks/png_encode.py). Levels 4-9 use zlib's default strategy."""
    import cv2

    arr = np.ascontiguousarray(arr)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png expects uint8 or uint16, got {arr.dtype}")
    if arr.dtype == np.uint16 and arr.ndim != 2:
        raise ValueError("16-bit PNG must be single-channel")
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise ValueError(f"encode_png expects H x W or H x W x 3, got {arr.shape}")
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)  # OpenCV's channel order; the file holds RGB
    strategy = cv2.IMWRITE_PNG_STRATEGY_RLE if compress_level <= 3 else cv2.IMWRITE_PNG_STRATEGY_DEFAULT
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, compress_level,
                                         cv2.IMWRITE_PNG_STRATEGY, strategy])
    if not ok:
        raise ValueError(f"PNG encoding failed for a {arr.dtype} {arr.shape} array")
    return buf.tobytes()


def encode_image(arr: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode with the given codec: png (lossless), jpg/jpeg or webp (photo codecs)."""
    fmt = fmt.lower()
    if fmt == "png":
        return encode_png(arr)
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(arr))
    if fmt in ("jpg", "jpeg"):
        im.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    elif fmt == "webp":
        im.save(buf, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown image format {fmt!r} (png, jpg, webp)")
    return buf.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode trusted bytes (from the node store) to H x W x 3 uint8; grey/16-bit maps expanded."""
    im = Image.open(io.BytesIO(data))
    if im.mode.startswith("I;16") or im.mode == "I":
        arr = (np.asarray(im, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)
