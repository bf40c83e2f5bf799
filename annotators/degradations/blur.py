"""Blur and sharpening: motion `blur`, `GaussianBlur`, `Defocus`, `oversharpen`."""

from __future__ import annotations

import cv2
import numpy as np

from annotators.degradations.spec import DegradationOp, by_severity, pick, size_scale, sub_range, to_uint8


def motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of `length` px at `angle_deg` (0 = horizontal)."""
    size = length if length % 2 == 1 else length + 1
    kernel = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.cos(np.deg2rad(angle_deg)) * (length - 1) / 2, -np.sin(np.deg2rad(angle_deg)) * (length - 1) / 2
    cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1, cv2.LINE_AA)
    return kernel / kernel.sum()


def disk_kernel(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    kernel = (x * x + y * y <= radius * radius).astype(np.float32)
    return cv2.GaussianBlur(kernel, (3, 3), 0.5) / kernel.sum()


# blur: not published; a linear motion blur so it differs from GaussianBlur and Defocus.
def _sample_motion(rng, severity, shape):
    length = max(3, round(by_severity((7, 11, 15, 21, 29), severity) * size_scale(shape)))
    return {"length": length, "angle": pick(rng, 0.0, 180.0, 2)}


def _apply_motion(image, p, rng):
    return cv2.filter2D(image, -1, motion_kernel(p["length"], p["angle"]), borderType=cv2.BORDER_REFLECT)


# GaussianBlur: published window 15, sigma U(2, 4); severity picks a fifth of that range.
def _sample_gaussian(rng, severity, shape):
    return {"ksize": 15, "sigma": pick(rng, *sub_range(2.0, 4.0, severity))}


def _apply_gaussian(image, p, rng):
    return cv2.GaussianBlur(image, (p["ksize"], p["ksize"]), p["sigma"], borderType=cv2.BORDER_REFLECT)


# Defocus: disk (lens aperture) kernel; radii follow the common corruption benchmark, at 512 px.
def _sample_defocus(rng, severity, shape):
    radius = by_severity((3.0, 4.5, 6.0, 8.0, 10.0), severity) * size_scale(shape)
    return {"radius": round(max(1.0, radius), 3)}


def _apply_defocus(image, p, rng):
    return cv2.filter2D(image, -1, disk_kernel(p["radius"]), borderType=cv2.BORDER_REFLECT)


# oversharpen: unsharp mask with a strong gain, which overshoots at edges (halos).
def _sample_sharpen(rng, severity, shape):
    return {"amount": by_severity((1.0, 1.5, 2.0, 3.0, 4.0), severity), "sigma": round(2.0 * size_scale(shape), 3)}


def _apply_sharpen(image, p, rng):
    x = image.astype(np.float32)
    blurred = cv2.GaussianBlur(x, (0, 0), max(p["sigma"], 0.5), borderType=cv2.BORDER_REFLECT)
    return to_uint8(x + p["amount"] * (x - blurred))


OPS = (
    DegradationOp("blur", _sample_motion, _apply_motion, "linear motion blur (length px, angle deg)"),
    DegradationOp("GaussianBlur", _sample_gaussian, _apply_gaussian, "Gaussian blur, window 15, sigma U(2,4)"),
    DegradationOp("Defocus", _sample_defocus, _apply_defocus, "defocus (disk kernel) blur"),
    DegradationOp("oversharpen", _sample_sharpen, _apply_sharpen, "unsharp mask with overshoot"),
)
