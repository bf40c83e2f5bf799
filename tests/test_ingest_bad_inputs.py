"""Done-when 4: a folder mixing good photos with broken and odd files."""

import io
import struct
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import skimage.data
from PIL import Image

from core.images import decode_rgb
from pipelines.stages.ingest import run_ingest
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A valid tiny PNG whose IHDR is rewritten (with a correct CRC) to claim another size."""
    data = bytearray(_save(Image.new("RGB", (8, 8)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _broken_ihdr_checksum(png: bytes) -> bytes:
    data = bytearray(png)
    data[29] ^= 0xFF  # the IHDR chunk's CRC no longer matches: a PNG with a corrupt chunk
    return bytes(data)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    astronaut = Image.fromarray(skimage.data.astronaut()).resize((128, 128))
    chelsea = Image.fromarray(skimage.data.chelsea()).resize((150, 100))
    coffee = _save(Image.fromarray(skimage.data.coffee()), "JPEG", quality=90)

    files = {
        "good_astronaut.jpg": _save(astronaut, "JPEG", quality=92),
        "good_chelsea.png": _save(chelsea, "PNG"),
        "bad_truncated.jpg": coffee[: len(coffee) // 2],
        "bad_empty.jpg": b"",
        "bad_text.png": b"this is not an image, just text\n" * 4,
        "bad_one_pixel.png": _save(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
        "bad_bomb.png": _png_claiming(30000, 30000),
        "bad_png_chunk.png": _broken_ihdr_checksum(_save(chelsea, "PNG")),
    }
    gradient = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    files["odd_16bit.png"] = _save(Image.fromarray(gradient), "PNG")
    files["odd_cmyk.jpg"] = _save(chelsea.convert("CMYK"), "JPEG", quality=95)
    palette = chelsea.convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    files["odd_palette_alpha.png"] = _save(palette, "PNG", transparency=0)
    # 80 wide x 40 high as stored, red block top-left; EXIF orientation 6 = display rotated 90 deg clockwise.
    raw = np.full((40, 80, 3), 255, np.uint8)
    raw[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    files["odd_exif_rotated.jpg"] = _save(Image.fromarray(raw), "JPEG", quality=95, exif=exif.tobytes())
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def ingested(mixed_folder, tmp_path_factory, ray_local):
    work = tmp_path_factory.mktemp("ingest")
    params = small_params(work, sources=[{"kind": "folder", "path": str(mixed_folder)}],
                          ingest={"max_side": 0, "image_format": "png", "part_size": 4})
    store = NodeStore(params.paths.store)
    summary = run_ingest(params, store)
    rows = [r for p in store.image_parts() for r in pq.read_table(p).to_pylist()]
    return summary, rows, store


def _by_name(rows):
    import json
    import os

    return {os.path.basename(json.loads(r["meta"])["source"]): r for r in rows}


def test_every_good_image_once_every_bad_one_failed(ingested):
    summary, rows, store = ingested
    by_name = _by_name(rows)
    assert len(by_name) == len(rows) == 12  # every input has exactly one row
    ok = {n for n, r in by_name.items() if r["error"] is None}
    assert ok == {"good_astronaut.jpg", "good_chelsea.png", "odd_16bit.png", "odd_cmyk.jpg",
                  "odd_palette_alpha.png", "odd_exif_rotated.jpg"}
    assert {k: summary[k] for k in ("parts", "ok", "failed")} == {"parts": 3, "ok": 6, "failed": 6}
    failures = store.failures().to_pylist()
    reasons = {f["source"].rsplit("/", 1)[-1]: f["reason"] for f in failures}
    assert reasons == {"bad_truncated.jpg": "truncated", "bad_empty.jpg": "empty_file",
                       "bad_text.png": "not_an_image", "bad_one_pixel.png": "too_small",
                       "bad_bomb.png": "too_many_pixels", "bad_png_chunk.png": "decode_error"}
    for f in failures:  # no object reprs: identical runs give identical failure tables
        assert " at 0x" not in (f["detail"] or ""), f


def test_normalised_to_oriented_8bit_rgb(ingested):
    _, rows, _ = ingested
    by_name = _by_name(rows)
    for name, row in by_name.items():
        if row["error"] is None:
            arr = decode_rgb(row["data"])
            assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, name
            assert (row["height"], row["width"]) == arr.shape[:2]
    rotated = decode_rgb(by_name["odd_exif_rotated.jpg"]["data"])
    assert rotated.shape[:2] == (80, 40)  # portrait after applying the orientation
    assert rotated[3, 36, 0] > 200 and rotated[3, 36, 1] < 60  # the red block moved to the top-right
    sixteen = decode_rgb(by_name["odd_16bit.png"]["data"])
    assert sixteen[0, 1, 0] == (16 >> 8) and sixteen[63, 63, 0] == ((63 * 64 + 63) * 16) >> 8
    assert (sixteen[..., 0] == sixteen[..., 2]).all()
    palette = decode_rgb(by_name["odd_palette_alpha.png"]["data"])
    assert (palette == 255).all(axis=2).any()  # transparent index composited on white


def test_image_id_is_content_hash_of_source_bytes(ingested, mixed_folder):
    from core.images import content_id

    _, rows, _ = ingested
    row = _by_name(rows)["good_chelsea.png"]
    assert row["image_id"] == content_id((mixed_folder / "good_chelsea.png").read_bytes())
