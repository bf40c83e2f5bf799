"""Lossy coding: `JPEG` (quality 10-40), `compression` (WebP, severity <= 3), `quantization` (severity <= 3)."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, sub_range


def codec_roundtrip(image: np.ndarray, ext: str, flag: int, quality: int) -> np.ndarray:
    """Encode RGB with OpenCV (which expects BGR, so chroma planes are the right ones) and decode."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [flag, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {ext}")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# JPEG: published quality 10-40; severity s takes the s-th slice from the top (higher = worse).
def _sample_jpeg(rng, severity, shape):
    low, high = sub_range(10, 41, 6 - severity)
    return {"quality": int(rng.integers(int(np.ceil(low)), int(np.ceil(high))))}


def _apply_jpeg(image, p, rng):
    return codec_roundtrip(image, ".jpg", cv2.IMWRITE_JPEG_QUALITY, p["quality"])


# compression: not published beyond the cap at 3; WebP so it differs from the JPEG node
# (smearing and ringing rather than 8x8 blocks).
def _sample_webp(rng, severity, shape):
    return {"codec": "webp", "quality": by_severity((20, 10, 3), severity)}


def _apply_webp(image, p, rng):
    return codec_roundtrip(image, ".webp", cv2.IMWRITE_WEBP_QUALITY, p["quality"])


# quantization: uniform per-channel levels, reconstructed at bin centres (banding).
def _sample_quant(rng, severity, shape):
    return {"levels": by_severity((16, 8, 4), severity)}


def _apply_quant(image, p, rng):
    step = 256.0 / p["levels"]
    lut = np.clip(np.floor(np.arange(256) / step) * step + step / 2, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


OPS = (
    DegradationOp("JPEG", _sample_jpeg, _apply_jpeg, "JPEG round trip, quality 10-40"),
    DegradationOp("compression", _sample_webp, _apply_webp, "WebP round trip at low quality", severities=(1, 3)),
    DegradationOp("quantization", _sample_quant, _apply_quant, "uniform colour quantization", severities=(1, 3)),
)
