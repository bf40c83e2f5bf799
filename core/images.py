"""Image bytes in and out: content ids, safe decoding with normalisation, lossless/photo encoding.

Normalisation rule on ingest (documented in the README):
- EXIF orientation is applied, then the EXIF block is dropped.
- 16-bit grey (I;16*, I) is scaled to 8 bits by value >> 8 (I: clipped to 0..65535 first).
- Float images (F) are clipped to 0..255.
- Palette images are expanded (with their transparency) before anything else.
- Any alpha (RGBA, LA, PA, palette transparency) is composited onto white.
- CMYK / YCbCr / LAB and greyscale (L, 1) are converted to RGB by PIL's own conversion.
The result is always an H x W x 3 uint8 array.

Ingest rules, in this order (`decode_normalised`), all but the last from the header alone:
1. `too_many_pixels`: width x height > max_pixels (any value: PIL's own bomb limit is
   lifted while the header is read and set to max_pixels while pixels are decoded, so a
   frame that grows past the cap in decoding (GIF, ICO) is caught at the same cap);
2. `too_small`: the shorter side of the STORED image, after the max_side shrink
   (`stored_size`), < min_side;
3. decoding: `not_an_image` (no known image signature), `truncated` (the data ends early),
   `decode_error` (a known format whose header, chunks or pixels are broken).
Failure details never hold Python object reprs (`<... at 0x...>`), so identical runs give
identical failure tables.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import threading
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

# Never let PIL paper over truncated files; a truncated input is a failure with a reason.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# The reasons of README "Bad input never stops a run" (decode_normalised raises the first six).
REASONS = ("empty_file", "truncated", "not_an_image", "decode_error", "too_small", "too_many_pixels",
           "duplicate_content", "unreadable")

# Signatures of the formats ingest documents: data that starts with one is an image, so a
# failure to read it is `truncated` or `decode_error`, never `not_an_image`.
_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "GIF": (b"GIF87a", b"GIF89a"),
    "TIFF": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "BMP": (b"BM",), "WEBP": (b"RIFF",),
}
_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
# PIL's bomb limit is one module global: changed only under this lock, and always restored.
_PIL_LIMIT = threading.Lock()


def clean_detail(text: str) -> str:
    """A failure detail with object reprs (`<_io.BytesIO object at 0x...>`) replaced by `<object>`."""
    return _REPR.sub("<object>", text)


class ImageRejected(ValueError):
    """An input that is not a usable image; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str = ""):
        detail = clean_detail(detail)
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
        im = Image.fromarray(np.clip(np.nan_to_num(np.asarray(im), nan=0.0), 0, 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im if im.mode == "RGB" else im.convert("RGB")


def stored_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) after the max_side shrink (never enlarged; max_side <= 0: unchanged)."""
    if max_side <= 0 or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def claimed_format(data: bytes) -> str | None:
    """The documented format whose signature `data` starts with (WebP: RIFF....WEBP), else None."""
    for fmt, sigs in _SIGNATURES.items():
        if any(data.startswith(sig) for sig in sigs):
            if fmt == "WEBP" and len(data) >= 12 and data[8:12] != b"WEBP":
                continue
            return fmt
    return None


def _is_cut_signature(data: bytes) -> bool:
    """Data shorter than a signature that it begins (a file cut inside its first bytes)."""
    return any(len(data) < len(sig) and sig.startswith(data) for sigs in _SIGNATURES.values() for sig in sigs) \
        or (len(data) < 12 and data.startswith(b"RIFF"))


_CUT_WORDS = ("truncated", "broken data stream", "not enough data", "requires a buffer", "premature end")


def _truncation(e: BaseException) -> bool:
    """Whether an error says the data ended early (short reads inside a plugin say so too)."""
    msg = str(e).lower()
    return isinstance(e, (EOFError, struct.error)) or any(w in msg for w in _CUT_WORDS)


def _rejection(e: Exception) -> ImageRejected:
    """The failure row for an exception PIL raised on untrusted bytes."""
    if isinstance(e, ImageRejected):
        return e
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageRejected("too_many_pixels", f"a frame grows past the pixel cap in decoding ({e})")
    reason = "truncated" if _truncation(e) else "decode_error"
    return ImageRejected(reason, f"{type(e).__name__}: {e}")


def _unidentified(data: bytes) -> ImageRejected:
    """Why PIL could not open `data`: the claimed format's own error, or not an image at all."""
    fmt = claimed_format(data)
    if fmt is None:
        if _is_cut_signature(data):
            return ImageRejected("truncated", f"{len(data)} bytes, cut inside an image signature")
        return ImageRejected("not_an_image", f"no known image signature (starts {data[:8].hex()})")
    Image.init()
    factory = Image.OPEN.get(fmt, (None, None))[0]
    try:
        if factory is not None:
            factory(io.BytesIO(data), None)  # the plugin's own error says what is wrong
    except Exception as e:  # noqa: BLE001 - any error of the plugin on this data is the answer
        r = _rejection(e)
        return ImageRejected(r.reason, f"{fmt} header: {r.detail}")
    return ImageRejected("decode_error", f"{fmt} signature, but no decoder accepts the header")


def decode_normalised(data: bytes, *, max_pixels: int, min_side: int, max_side: int = 0) -> np.ndarray:
    """Decode untrusted bytes into an RGB uint8 array, or raise ImageRejected with a reason.

    The pixel budget and the size rule are checked from the header, before any pixel is
    decoded, so a decompression bomb costs nothing. `min_side` applies to the stored size,
    after the shrink to `max_side` (0: no shrink). The array returned is at the decoded
    size: the caller shrinks it with `resize_max_side(rgb, max_side)`.
    """
    im, _ = _open_checked(data, max_pixels=max_pixels, min_side=min_side, max_side=max_side, draft=False)
    return np.asarray(im, dtype=np.uint8)


def decode_for_store(data: bytes, *, max_pixels: int, min_side: int, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the image as stored: RGB uint8 shrunk to max_side, its original oriented (width, height)).

    The ingest path: no whole-image copies before the shrink, a JPEG that shrinks by 2x or more
    decoded at the smallest DCT scale (1/2 .. 1/8) that stays at least the stored size, and the
    shrink by pixel-area averaging (OpenCV INTER_AREA, the filter img2dataset uses; 1.7x faster
    than Lanczos, 42 dB from it; benchmarks/ingest_decode.py)."""
    import cv2

    im, (width, height) = _open_checked(data, max_pixels=max_pixels, min_side=min_side, max_side=max_side,
                                        draft=True)
    size = stored_size(width, height, max_side)
    arr = np.asarray(im, dtype=np.uint8)
    if im.size != size:  # a shrink: OpenCV's area filter (pixel-area averaging, no ringing), 1.7x Lanczos
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return arr, (width, height)


_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that turn the image a quarter


def _open_checked(data: bytes, *, max_pixels: int, min_side: int, max_side: int, draft: bool):
    """(normalised RGB PIL image, oriented (width, height) of the original)."""
    if not data:
        raise ImageRejected("empty_file")
    with _PIL_LIMIT, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        previous = Image.MAX_IMAGE_PIXELS
        try:
            Image.MAX_IMAGE_PIXELS = None  # our own header check below decides, at any cap
            try:
                im = Image.open(io.BytesIO(data))
            except Image.UnidentifiedImageError:
                raise _unidentified(data) from None
            width, height = im.size
            if width * height > max_pixels:
                raise ImageRejected("too_many_pixels", f"{width}x{height} > {max_pixels} pixels")
            sw, sh = stored_size(width, height, max_side)
            if min(sw, sh) < min_side:
                shrunk = f" (stored {sw}x{sh} after the shrink to {max_side})" if (sw, sh) != (width, height) else ""
                raise ImageRejected("too_small", f"{width}x{height}{shrunk}, shortest side < {min_side}")
            Image.MAX_IMAGE_PIXELS = max(1, max_pixels)  # frames that grow while decoding
            orientation = im.getexif().get(0x0112, 1)
            if draft and im.format == "JPEG" and (sw, sh) != (width, height) and im.mode in ("RGB", "L"):
                im.draft("RGB", (sw, sh))  # a DCT-domain downscale, never below the stored size
            im.load()
            if orientation != 1:  # exif_transpose copies the whole image even when nothing turns
                im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
        except ImageRejected:
            raise
        except Exception as e:  # noqa: BLE001 - untrusted bytes: every decoder error is a row
            raise _rejection(e) from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    if orientation in _SWAPS_AXES:
        width, height = height, width
    if rgb.mode != "RGB" or rgb.width * rgb.height > max_pixels:
        raise ImageRejected("decode_error", f"decoded to {rgb.mode} {rgb.size}, not the header's {width}x{height} RGB")
    return rgb, (width, height)


def resize_max_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most max_side; Lanczos on PIL."""
    h, w = rgb.shape[:2]
    size = stored_size(w, h, max_side)
    if size == (w, h):
        return rgb
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
