"""The stored-map PNG codec: lossless for every map kind, deterministic, strict about input."""

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from core.images import decode_rgb, encode_png

PHOTO = skimage.data.astronaut()[::2, ::2]


@pytest.mark.parametrize("level", [0, 1, 3, 6, 9])
@pytest.mark.parametrize("kind", ["rgb", "grey", "depth16"])
def test_png_is_lossless_and_read_back_as_written(kind, level):
    arr = {"rgb": PHOTO, "grey": PHOTO[..., 1],
           "depth16": (PHOTO[..., 0].astype(np.uint16) * 257 + np.arange(PHOTO.shape[1], dtype=np.uint16))}[kind]
    data = encode_png(arr, level)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.mode == {"rgb": "RGB", "grey": "L", "depth16": "I;16"}[kind]
        assert np.array_equal(np.asarray(im), arr)  # channel order and byte order as written
    assert encode_png(arr, level) == data
    if kind == "rgb":
        assert np.array_equal(decode_rgb(data), arr)


def test_levels_change_bytes_not_pixels():
    fast, small = encode_png(PHOTO, 1), encode_png(PHOTO, 9)
    assert fast != small and np.array_equal(decode_rgb(fast), decode_rgb(small))


@pytest.mark.parametrize("arr, message", [
    (PHOTO.astype(np.float32), "uint8 or uint16"),
    (np.zeros((4, 4, 3), np.uint16), "single-channel"),
    (np.zeros((4, 4, 4), np.uint8), "H x W x 3"),
])
def test_rejects_what_it_cannot_store_losslessly(arr, message):
    with pytest.raises(ValueError, match=message):
        encode_png(arr)


# ---- ingest rules: decode_normalised ------------------------------------------------------

import struct  # noqa: E402
import zlib  # noqa: E402

from core.images import (REASONS, ImageRejected, clean_detail, decode_normalised,  # noqa: E402
                              resize_max_side, stored_size)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rejected(data: bytes, **kw) -> ImageRejected:
    kw = {"max_pixels": 10**7, "min_side": 1, **kw}
    with pytest.raises(ImageRejected) as info:
        decode_normalised(data, **kw)
    assert info.value.reason in REASONS
    assert " at 0x" not in info.value.detail and "object at" not in str(info.value)
    return info.value


def test_min_side_is_checked_on_the_stored_size_after_the_shrink():
    long_thin = _save(Image.fromarray(np.full((20, 400, 3), 90, np.uint8)), "PNG")
    assert decode_normalised(long_thin, max_pixels=10**6, min_side=8).shape == (20, 400, 3)  # no shrink
    e = _rejected(long_thin, min_side=8, max_side=100)  # stored as 100 x 5
    assert e.reason == "too_small" and "stored 100x5" in e.detail
    rgb = decode_normalised(long_thin, max_pixels=10**6, min_side=5, max_side=100)  # 5 >= 5: kept
    assert resize_max_side(rgb, 100).shape[:2] == (5, 100) and stored_size(400, 20, 100) == (100, 5)
    assert stored_size(400, 20, 0) == (400, 20) and stored_size(50, 30, 100) == (50, 30)  # never enlarged


@pytest.mark.parametrize("pil_limit", [1000, 10**12])
def test_pixel_cap_works_at_any_value_whatever_pil_limit(pil_limit, monkeypatch):
    """Our own header check decides; PIL's global bomb limit neither preempts nor overrides it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_limit)
    data = _save(Image.fromarray(PHOTO[:64, :64]), "PNG")  # 4,096 pixels
    assert decode_normalised(data, max_pixels=5000, min_side=1).shape == (64, 64, 3)  # above PIL's 1,000
    e = _rejected(data, max_pixels=4000)
    assert e.reason == "too_many_pixels" and e.detail == "64x64 > 4000 pixels"
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # restored


def test_gif_frame_larger_than_its_screen_is_capped():
    data = bytearray(_save(Image.fromarray(PHOTO[:100, :100]).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 8, 8)  # the logical screen claims 8 x 8; the frame is 100 x 100
    assert _rejected(bytes(data), max_pixels=1000).reason == "too_many_pixels"


def _png_with_chunk_damage(offset: int) -> bytes:
    data = bytearray(_save(Image.fromarray(PHOTO[:32, :32]), "PNG"))
    data[offset] ^= 0xFF
    return bytes(data)


def test_reasons_of_broken_inputs_and_no_object_reprs():
    png = _save(Image.fromarray(PHOTO[:32, :32]), "PNG")
    assert _rejected(_png_with_chunk_damage(20)).reason == "decode_error"  # IHDR checksum broken
    idat = png.index(b"IDAT")
    assert _rejected(_png_with_chunk_damage(idat + 12)).reason in ("decode_error", "truncated")  # compressed data
    assert _rejected(b"plain text, no image\n" * 4).reason == "not_an_image"
    assert _rejected(png[:5]).reason == "truncated"  # cut inside the signature
    assert _rejected(png[:len(png) // 2]).reason == "truncated"
    assert _rejected(b"").reason == "empty_file"
    assert _rejected(b"GIF89a" + b"\x00" * 3).reason in ("truncated", "decode_error")
    bmp = bytearray(_save(Image.fromarray(PHOTO[:16, :16]), "BMP"))
    bmp[14:18] = struct.pack("<I", 7)  # an impossible DIB header size
    assert _rejected(bytes(bmp)).reason == "decode_error"
    crc_ok = bytearray(png)  # a valid checksum over a bogus colour type
    ihdr = bytes(crc_ok[16:25]) + b"\x09" + bytes(crc_ok[26:29])
    crc_ok[16:29], crc_ok[29:33] = ihdr, struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    assert _rejected(bytes(crc_ok)).reason == "decode_error"


def test_clean_detail_drops_object_reprs():
    text = "cannot identify image file <_io.BytesIO object at 0x7f5a034c3b00>"
    assert clean_detail(text) == "cannot identify image file <object>"
    assert ImageRejected("decode_error", text).detail == "cannot identify image file <object>"
