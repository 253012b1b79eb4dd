"""Noise levels: estimating the one of an image, and checking the one a caller asks to remove."""

from __future__ import annotations

import numpy as np

from .errors import AecError

MAX_SIGMA = 75.0  # the largest noise level accepted (the denoising head's training covers 0..50)


def estimate_sigma(pixels: np.ndarray) -> float:
    """Standard deviation (8-bit units) of white noise in an HxWxC image: the median absolute diagonal
    Haar detail over 0.6745 (Donoho and Johnstone 1994), averaged over the channels. Texture makes it
    read a little high on clean images (about 1-3 on photos)."""
    a = pixels.astype(np.float32)
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    if h == 0 or w == 0:
        return 0.0
    a = a[:h, :w].reshape(h, w, -1)
    detail = (a[0::2, 0::2] - a[0::2, 1::2] - a[1::2, 0::2] + a[1::2, 1::2]) / 2
    return float(np.median(np.abs(detail), axis=(0, 1)).mean() / 0.6745)


def noise_sigma(colour: np.ndarray, denoise: float | str) -> float:
    """The noise level to remove from an HxWx3 image: `denoise` itself (checked), or the estimate for "auto"."""
    if denoise == "auto":
        return min(estimate_sigma(colour), MAX_SIGMA)
    if isinstance(denoise, str) or not 0 <= denoise <= MAX_SIGMA:
        raise AecError(f"noise level must be a number in [0, {MAX_SIGMA:g}] or 'auto', got {denoise!r}")
    return float(denoise)
