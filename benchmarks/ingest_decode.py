"""Per-image cost of ingest's decode -> shrink -> encode, and of proposed changes to it, measured
on the photos `benchmarks/ingest.py` makes (longer side 480-1600) and on camera-size photos
(4000 x 3000, made here), one thread, rounds alternating the variants.

  current       core.images: decode_normalised -> resize_max_side -> encode_image (q95, 4:4:4)
  no-copy       the same pixels and bytes with two copies fewer: EXIF transpose only when the tag
                says so (PIL's exif_transpose copies the whole image otherwise), and the image stays a
                PIL image from decode to encode (no array round trip). Checked byte-identical.
  draft         + JPEG reduce-on-decode (`Image.draft`): the decoder scales by 1/2, 1/4 or 1/8 in the
                DCT while staying >= the stored size, then Lanczos to the exact size. Other bytes.
  420           no-copy + draft, encoded with 4:2:0 chroma at q95 (OpenCV's and img2dataset's default).
  area          PIL decode and encode, OpenCV INTER_AREA for the shrink (img2dataset's filter).
  opencv        cv2.imdecode (applies EXIF) -> cv2.resize INTER_AREA -> cv2.imencode q95: what
                img2dataset does per image.
Each figure: best round's ms per image; bytes and PSNR (dB) of the decoded output against `current`.

    python benchmarks/ingest_decode.py [--photos 48] [--camera 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps
from skimage.metrics import peak_signal_noise_ratio

from core.images import decode_normalised, encode_image, resize_max_side, stored_size

MAX_SIDE, QUALITY, MAX_PIXELS, MIN_SIDE = 1024, 95, 64_000_000, 16
OUT = Path(__file__).resolve().parent / "out"


def current(data: bytes) -> bytes:
    rgb = decode_normalised(data, max_pixels=MAX_PIXELS, min_side=MIN_SIDE)
    return encode_image(resize_max_side(rgb, MAX_SIDE), "jpg", QUALITY)


def _open(data: bytes, draft: bool) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    target = stored_size(*im.size, MAX_SIDE)
    if draft and im.format == "JPEG" and target != im.size:
        im.draft("RGB", target)  # DCT-domain downscale, never below the requested size
    im.load()
    if im.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even when nothing turns
        im = ImageOps.exif_transpose(im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _save(im: Image.Image, subsampling: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=QUALITY, subsampling=subsampling)
    return buf.getvalue()


def pil_variant(draft: bool, reducing_gap: float | None, subsampling: int):
    def run(data: bytes) -> bytes:
        im = _open(data, draft)
        size = stored_size(*im.size, MAX_SIDE) if not draft else None
        if draft:  # the size comes from the header: draft changed im.size
            with Image.open(io.BytesIO(data)) as head:
                w, h = head.size
                if head.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                    w, h = h, w
            size = stored_size(w, h, MAX_SIDE)
        if size != im.size:
            im = im.resize(size, Image.LANCZOS, reducing_gap=reducing_gap)
        return _save(im, subsampling)
    return run


def pil_area(draft: bool, subsampling: int):
    """PIL decode (header checks, EXIF) and encode, OpenCV's INTER_AREA shrink in between."""
    def run(data: bytes) -> bytes:
        with Image.open(io.BytesIO(data)) as head:
            w, h = head.size
            if head.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        im = _open(data, draft)
        size = stored_size(w, h, MAX_SIDE)
        if size != im.size:
            im = Image.fromarray(cv2.resize(np.asarray(im), size, interpolation=cv2.INTER_AREA))
        return _save(im, subsampling)
    return run


def opencv(data: bytes) -> bytes:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    size = stored_size(w, h, MAX_SIDE)
    if size != (w, h):
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])[1].tobytes()


VARIANTS = {
    "current": current,
    "no-copy": pil_variant(False, None, 0),
    "no-copy + draft": pil_variant(True, None, 0),
    "no-copy + draft + 4:2:0": pil_variant(True, None, 2),
    "no-copy + draft + area": pil_area(True, 0),
    "no-copy + draft + area + 4:2:0": pil_area(True, 2),
    "opencv (img2dataset's path)": opencv,
}


def camera_photos(n: int) -> list[bytes]:
    """4000 x 3000 JPEGs (q90) from upscaled skimage photos with grain, as a phone would give."""
    import skimage.data

    rng = np.random.default_rng(1)
    out = []
    for i, name in zip(range(n), ["astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry"] * n):
        img = getattr(skimage.data, name)()[..., :3]
        big = cv2.resize(img, (4000, 3000), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big += rng.normal(0, 3, (3000, 4000, 1)).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def measure(label: str, inputs: list[bytes], rounds: int) -> None:
    best = dict.fromkeys(VARIANTS, float("inf"))
    outputs = {}
    names = list(VARIANTS)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            outputs[name] = [VARIANTS[name](d) for d in inputs]
            best[name] = min(best[name], time.perf_counter() - t0)
    ref = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in outputs["current"]]
    shrunk = sum(1 for a, d in zip(ref, inputs) if a.shape[:2] != Image.open(io.BytesIO(d)).size[::-1]
                 and max(Image.open(io.BytesIO(d)).size) > MAX_SIDE)
    print(f"\n{label}: {len(inputs)} images ({shrunk} shrunk to {MAX_SIDE}), {rounds} rounds, one thread")
    base = best["current"] / len(inputs) * 1e3
    for name in VARIANTS:
        ms = best[name] / len(inputs) * 1e3
        nbytes = sum(map(len, outputs[name])) / sum(map(len, outputs["current"]))
        same = all(a == b for a, b in zip(outputs[name], outputs["current"]))
        psnr = []  # over the images whose output differs from current's
        for a, b in zip(ref, outputs[name]):
            arr = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
            if arr.shape == a.shape and not np.array_equal(a, arr):
                psnr.append(peak_signal_noise_ratio(a, arr, data_range=255))
        q = "identical bytes" if same else (f"PSNR vs current {np.median(psnr):5.1f} dB (median of the {len(psnr)} "
                                            f"that differ)" if psnr else "other bytes, same pixels")
        print(f"  {name:31s} {ms:7.1f} ms/image  {base / ms:5.2f}x current   bytes {nbytes:4.2f}   {q}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=48, help="photos from benchmarks/ingest.py's folder")
    ap.add_argument("--camera", type=int, default=6, help="4000 x 3000 photos made here")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    folders = sorted(OUT.glob("ingest-photos-*"))
    if folders and args.photos:
        files = sorted(folders[0].glob("*.jpg"))[:args.photos]
        measure(f"photos of {folders[0].name}", [f.read_bytes() for f in files], args.rounds)
    else:
        print("no photo folder yet: run benchmarks/ingest.py first (it makes them); camera photos only")
    if args.camera:
        measure("camera photos 4000 x 3000", camera_photos(args.camera), args.rounds)


if __name__ == "__main__":
    main()
