"""Collaborative Wiener filtering of a noisy image, guided by a pilot estimate of the clean one.

The denoising head is a local network: it cannot see that a brick or a window repeats across the
image. This stage can (it is the second stage of BM3D, Dabov et al. 2007, with the head's output as
the pilot): for every reference patch it finds the most similar patches in the pilot, stacks them,
and shrinks the stack's 3-D spectrum in the noisy image by the pilot's Wiener gain. Each patch is
estimated many times; the estimates are averaged with weights that favour the confident ones.

Everything is orthonormal (colour, 2-D DCT, Walsh-Hadamard across the stack), so white noise of
standard deviation sigma stays sigma in every coefficient.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# Chosen on held-out training crops (not Kodak) at sigma 25, after the shipped head: step 3 and groups of 16
# gave +0.32 dB over the head; step 4 and groups of 32, +0.37 dB in 0.77x the time; a 16 px search, +0.04 more.
PATCH = 8  # pixels a side of a patch
STEP = 4  # pixels between reference patches
SEARCH = 12  # pixels the search for similar patches reaches each way
GROUP = 32  # patches stacked per reference (a power of two, for the Walsh-Hadamard transform)
BAND_REFERENCES = 8192  # reference patches searched together: bounds the memory of the search
CHUNK = 2048  # reference patches filtered together: bounds the memory of the groups

# Orthonormal opponent colour transform: luminance, then two colour differences.
_COLOUR = torch.tensor([[1 / math.sqrt(3)] * 3,
                        [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
                        [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)]])


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    m = torch.cos(math.pi * (2 * torch.arange(n, dtype=torch.float64)[None] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def _kaiser(n: int, beta: float = 2.0) -> torch.Tensor:
    w = torch.kaiser_window(n, periodic=False, beta=beta)
    return w[:, None] * w[None]


def _positions(size: int) -> torch.Tensor:
    """Reference patch positions along one axis: every STEP pixels, and the last one."""
    last = size - PATCH
    return torch.unique(torch.cat([torch.arange(0, last + 1, STEP), torch.tensor([last])]))


def _matches(padded: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Flat top-left indexes (into the image) of the GROUP patches nearest to each reference patch,
    searched within +-SEARCH pixels of the luminance, `padded` by SEARCH pixels of infinity (so that
    patches crossing the image's edge are never near): shape (len(rows) * len(cols), GROUP)."""
    width = padded.shape[1] - 2 * SEARCH
    lum = padded[SEARCH:-SEARCH, SEARCH:-SEARCH]
    offsets = [(dy, dx) for dy in range(-SEARCH, SEARCH + 1) for dx in range(-SEARCH, SEARCH + 1)]
    top, bottom = int(rows[0]), int(rows[-1]) + PATCH
    distances = []
    for dy, dx in offsets:
        shifted = padded[SEARCH + dy + top:SEARCH + dy + bottom, SEARCH + dx:SEARCH + dx + width]
        square = (lum[top:bottom] - shifted).square()
        # Patch sums, separably: along rows everywhere, then down the columns that hold references.
        across = F.avg_pool2d(square[None, None], (1, PATCH), stride=1)[..., cols]
        box = F.avg_pool2d(across, (PATCH, 1), stride=1)[0, 0]
        distances.append(box[rows - top].flatten())
    distance, nearest = torch.stack(distances, 1).topk(GROUP, dim=1, largest=False)  # (refs, GROUP)
    # In an image with fewer than GROUP patches in reach, the reference itself fills the group.
    shift = torch.tensor(offsets)[nearest].masked_fill_(distance.isinf()[..., None], 0)  # (refs, GROUP, 2)
    ref_rows = rows[:, None].expand(-1, len(cols)).flatten()[:, None]
    ref_cols = cols[None].expand(len(rows), -1).flatten()[:, None]
    return (ref_rows + shift[..., 0]) * width + ref_cols + shift[..., 1]


def clipping_bias(clean: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[clip(clean + noise, 0, 1)] - clean for Gaussian noise of deviation sigma: what clipping to the
    8-bit range adds to the mean of a noisy pixel (positive near black, negative near white)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    low, high = -clean / sigma, (1 - clean) / sigma  # where 0 and 1 lie, in noise deviations
    density_low, density_high = normal.log_prob(low).exp(), normal.log_prob(high).exp()
    inside = clean * (normal.cdf(high) - normal.cdf(low)) + sigma * (density_low - density_high)
    return inside + (1 - normal.cdf(high)) - clean


def collaborative_wiener(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float,
                         progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Denoise `noisy` (C, H, W: 3 colour channels or 1 grey one, values 0..1) with the Wiener gains of
    `pilot` (same shape, an estimate of the clean image); `sigma` is the noise's standard deviation on
    the same 0..1 scale. `progress` is called with (bands done, bands in all).
    The noisy image is taken to be clipped to 0..1, so its bias there (from the pilot) is removed first.
    Images smaller than a patch come back as the pilot."""
    channels, height, width = noisy.shape
    if height < PATCH or width < PATCH:
        return pilot.clone()
    colour = _COLOUR.to(noisy) if channels == 3 else torch.eye(channels)
    z = torch.einsum("ij,jhw->ihw", colour, noisy - clipping_bias(pilot, sigma)).reshape(channels, -1)
    p = torch.einsum("ij,jhw->ihw", colour, pilot)
    dct = _dct_matrix(PATCH)
    dct2, walsh, window = torch.kron(dct, dct), _hadamard(GROUP), _kaiser(PATCH).flatten()  # dct2: on flat patches
    inside = (torch.arange(PATCH)[:, None] * width + torch.arange(PATCH)[None]).flatten()  # a patch's pixels
    both = torch.stack([z, p.reshape(channels, -1)])  # gathered together: the same patches of each
    numerator = torch.zeros_like(z)
    denominator = torch.zeros_like(z)
    rows, cols = _positions(height), _positions(width)
    padded = F.pad(p[:1][None], (SEARCH,) * 4, value=float("inf"))[0, 0]
    band_rows = max(1, BAND_REFERENCES // len(cols))
    bands = range(0, len(rows), band_rows)
    for done, start in enumerate(bands, 1):
        matches = _matches(padded, rows[start:start + band_rows], cols)
        for chunk in matches.split(CHUNK):
            pixels = (chunk[..., None] + inside).flatten(1)
            groups = both[:, :, pixels].reshape(2, channels, len(pixels), GROUP, PATCH * PATCH)
            noisy_spectrum, pilot_spectrum = walsh @ groups @ dct2.T  # (channels, refs, GROUP, PATCH^2) each
            gain = pilot_spectrum.square()
            gain = gain / (gain + sigma ** 2)
            estimate = walsh @ (gain * noisy_spectrum) @ dct2  # the inverses: walsh is symmetric, dct2 orthonormal
            # A group's weight is the inverse of its estimate's noise variance.
            weight = 1 / (sigma ** 2 * gain.square().sum((2, 3)) + 1e-12)  # (channels, refs)
            contribution = weight[..., None, None] * window  # (channels, refs, 1, PATCH^2)
            index = pixels.flatten()
            for c in range(channels):
                numerator[c].index_add_(0, index, (estimate[c] * contribution[c]).flatten())
                denominator[c].index_add_(0, index, contribution[c].expand(-1, GROUP, -1).flatten())
        if progress:
            progress(done, len(bands))
    out = numerator / denominator.clamp_min(1e-12)
    return torch.einsum("ji,jn->in", colour, out).reshape(channels, height, width)
