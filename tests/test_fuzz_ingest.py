"""Property-based fuzzing of ingest decoding: mutated and truncated JPEG/PNG/TIFF/GIF/WebP/BMP bytes.

Whatever the bytes, `decode_normalised` returns an H x W x 3 uint8 array within the pixel cap
and the size rule, or raises ImageRejected with one of the README's reasons and a detail free
of object reprs; never any other exception, and the same answer for the same bytes.
Derandomised (the same examples on every run and machine) and bounded: ~200 examples of
small images, no deadline per example (CI machines are slow and shared).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.images import REASONS, ImageRejected, decode_normalised, stored_size

MAX_PIXELS = 1 << 18  # 512 x 512: a mutated header that claims more is rejected before decoding
MIN_SIDE = 4
MAX_SIDE = 48
DECODE_REASONS = set(REASONS) - {"duplicate_content", "unreadable"}  # those two come from the stage


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, bytes]:
    photo = Image.fromarray(skimage.data.chelsea()).resize((40, 28))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    palette = photo.convert("P", palette=Image.ADAPTIVE, colors=16)
    grey16 = Image.fromarray((np.arange(28 * 40, dtype=np.uint16).reshape(28, 40) * 50))
    frames = [photo, photo.transpose(Image.FLIP_LEFT_RIGHT)]
    return {
        "jpeg": _save(photo, "JPEG", quality=80),
        "jpeg_progressive": _save(photo, "JPEG", quality=70, progressive=True),
        "png": _save(photo, "PNG"),
        "png_rgba": _save(rgba, "PNG"),
        "png_16bit": _save(grey16, "PNG"),
        "png_palette_alpha": _save(palette, "PNG", transparency=0),
        "tiff": _save(photo, "TIFF"),
        "tiff_deflate": _save(rgba, "TIFF", compression="tiff_deflate"),
        "gif": _save(palette, "GIF"),
        "gif_animated": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50),
        "webp": _save(photo, "WEBP", quality=70),
        "webp_lossless": _save(rgba, "WEBP", lossless=True),
        "bmp": _save(photo, "BMP"),
        "bmp_palette": _save(palette, "BMP"),
    }


SEEDS = _seeds()


@st.composite
def mutated_image(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]))
        if not data:
            break
        # mutations favour the header, where the format's structure lives
        at = draw(st.one_of(st.integers(0, min(63, len(data) - 1)), st.integers(0, len(data) - 1)))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 32))]
        elif op == "truncate":
            del data[at:]
        else:  # repeat a slice (duplicated chunks, markers, frames)
            n = draw(st.integers(1, 64))
            data[at:at] = data[at:at + n]
    return bytes(data)


def _check(data: bytes):
    try:
        rgb = decode_normalised(data, max_pixels=MAX_PIXELS, min_side=MIN_SIDE, max_side=MAX_SIDE)
    except ImageRejected as e:
        assert e.reason in DECODE_REASONS, e.reason
        assert " at 0x" not in str(e), str(e)
        return ("rejected", e.reason, e.detail)
    assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    h, w = rgb.shape[:2]
    assert h * w <= MAX_PIXELS and min(stored_size(w, h, MAX_SIDE)) >= MIN_SIDE
    return ("ok", rgb.shape, rgb.tobytes())


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_decodes(name):
    assert _check(SEEDS[name])[0] == "ok"


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_image())
def test_mutated_images_are_decoded_or_rejected_with_a_reason(data):
    first = _check(data)
    assert _check(data) == first  # the same bytes, the same answer


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.sampled_from(sorted(SEEDS)), st.floats(0.0, 1.0, exclude_max=True))
def test_truncations_are_rejected_or_decoded(name, fraction):
    data = SEEDS[name]
    _check(data[: int(len(data) * fraction)])
