"""The stored-map PNG codec: lossless for every map kind, deterministic, strict about input."""

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from pipelines.images import decode_rgb, encode_png

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
