"""Sensor-style noise: `GaussianNoise` (sigma U(10,50)), `PoissonNoise`, `SPNoise` (salt and pepper)."""

from __future__ import annotations

import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, pick, sub_range, to_uint8


def _sample_gauss(rng, severity, shape):
    return {"sigma": pick(rng, *sub_range(10.0, 50.0, severity), 2)}


def _apply_gauss(image, p, rng):
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(p["sigma"])
    return to_uint8(image.astype(np.float32) + noise)


# Photon counts: peak = expected count at full white (the common corruption benchmark's
# levels); fewer photons = more relative noise.
def _sample_poisson(rng, severity, shape):
    return {"peak": by_severity((60.0, 25.0, 12.0, 5.0, 3.0), severity)}


def _apply_poisson(image, p, rng):
    peak = p["peak"]
    counts = rng.poisson(image.astype(np.float64) / 255.0 * peak)
    return to_uint8(counts / peak * 255.0)


def _sample_sp(rng, severity, shape):
    return {"amount": by_severity((0.01, 0.02, 0.04, 0.07, 0.10), severity), "salt_ratio": 0.5}


def _apply_sp(image, p, rng):
    h, w = image.shape[:2]
    u = rng.random((h, w), dtype=np.float32)
    out = image.copy()
    salt_cut = p["amount"] * p["salt_ratio"]
    out[u < salt_cut] = 255
    out[(u >= salt_cut) & (u < p["amount"])] = 0
    return out


OPS = (
    DegradationOp("GaussianNoise", _sample_gauss, _apply_gauss, "additive Gaussian noise, sigma U(10,50)",
                  stochastic=True),
    DegradationOp("PoissonNoise", _sample_poisson, _apply_poisson, "shot noise with `peak` photons at white",
                  stochastic=True),
    DegradationOp("SPNoise", _sample_sp, _apply_sp, "salt-and-pepper noise on `amount` of the pixels",
                  stochastic=True),
)
