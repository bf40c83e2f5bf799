"""dHash64: a 64-bit perceptual hash of an image, the leakage report's second opinion.

The image is reduced to 9 x 8 grey pixels (area average) and each bit says whether a pixel is
brighter than its left neighbour. Re-encoding, resizing, small brightness or contrast changes
keep the code within a few bits; a different photo lands about 32 bits away. It shares nothing
with the embeddings that build the near-duplicate groups, so it re-checks them independently.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DHASH_BYTES = 8
_WIDTH, _HEIGHT = 9, 8  # 8 horizontal differences per row, 8 rows


def dhash64(rgb: np.ndarray) -> bytes:
    """8 bytes (bits row-major, most significant first) of an (H, W, 3) or (H, W) uint8 image."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or 0 in a.shape[:2]:
        raise ValueError(f"dhash64 wants a non-empty uint8 (H, W, 3) or (H, W) array, got {a.dtype} {a.shape}")
    grey = Image.fromarray(a).convert("L") if a.ndim == 3 else Image.fromarray(a)
    # BOX = the mean over each cell's source area: robust to JPEG noise, no ringing
    small = np.asarray(grey.resize((_WIDTH, _HEIGHT), Image.Resampling.BOX), dtype=np.int16)
    return np.packbits(small[:, 1:] > small[:, :-1]).tobytes()


def hamming(a: bytes, b: bytes) -> int:
    """Bits that differ between two codes of equal length."""
    if len(a) != len(b):
        raise ValueError(f"codes of different lengths: {len(a)} and {len(b)}")
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())
