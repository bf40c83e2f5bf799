"""The sampler's ring: every image id gets a seeded 64-bit place, and sampling walks the ring.

A task's queries are the images that follow the task's own starting place; a query's contexts are
the pool images that follow it; sample keys sort by the query's place. So an image added to the
corpus lands at one place: it can join the samples around that place and push one query off the
end of a task's walk, and every other sample stays as it was, under the same key (a seeded shuffle
of positions, by contrast, re-draws every sample when one image is added).

Places come from the id's own digest (image ids are 32 hex digits of SHA-256) mixed with the
seed by splitmix64's finaliser, all in numpy: 10^7 ids take well under a second. An id that is not
hex (tests, hand-made records) is hashed with SHA-256 instead.
"""

from __future__ import annotations

import hashlib

import numpy as np

_HEX = np.full(256, 255, np.uint8)
for _k, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _k
for _k, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _k


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit over the output."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def digest64(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def places(ids, seed: int) -> np.ndarray:
    """uint64 ring place of each id (a list, numpy or Arrow array of strings) under `seed`."""
    if hasattr(ids, "to_numpy"):
        ids = ids.to_numpy(zero_copy_only=False)
    raw = np.asarray(ids, dtype="S")
    salt = np.uint64(digest64(f"vicl-ring/{seed}"))
    if len(raw) == 0:
        return np.zeros(0, np.uint64)
    value = np.zeros(len(raw), np.uint64)
    hexed = np.zeros(len(raw), bool)
    if raw.dtype.itemsize >= 16:
        nibbles = _HEX[np.frombuffer(raw.tobytes(), np.uint8).reshape(len(raw), raw.dtype.itemsize)[:, :16]]
        hexed = (nibbles != 255).all(axis=1)
        for k in range(16):
            value = (value << np.uint64(4)) | nibbles[:, k].astype(np.uint64)
    for k in np.nonzero(~hexed)[0].tolist():  # each id by itself: its place never depends on the others
        value[k] = digest64(raw[k].decode("utf-8", "surrogateescape"))
    return _mix(value ^ salt)


def place(image_id: str, seed: int) -> int:
    return int(places([image_id], seed)[0])


def pair_order(candidate_places: np.ndarray, query_place: int) -> np.ndarray:
    """A seeded order of candidates that depends on the query: sort keys, one per candidate."""
    return _mix(candidate_places ^ _mix(np.uint64(query_place) ^ np.uint64(0x9E3779B97F4A7C15)))


def walk(members: np.ndarray, member_places: np.ndarray, start: int) -> np.ndarray:
    """`members` in ring order from the first one at or after `start` (wrapping round), ties by
    member (positions are sorted ids, so ties go by id)."""
    order = np.lexsort((members, member_places))
    ordered = members[order]
    first = int(np.searchsorted(member_places[order], np.uint64(start)))
    return np.roll(ordered, -first)
