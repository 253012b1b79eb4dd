"""Encoder effort: the latents of one image optimized for that image's own rate-distortion cost.

g_a gives each image a latent that is good on average. Here y and z are refined by gradient descent
on `lambda(quality) * 255^2 * MSE + bits`, with the decoder and the entropy models frozen, so the file
still decodes with the ordinary decoder. Rounding is made differentiable by stochastic Gumbel
annealing (Yang, Bamler, Mandt 2020, "Improving Inference for Neural Image Compression"): each value
is a random soft mix of its floor and ceiling, which hardens as the temperature falls. The codec then
rounds hard and codes through the exact integer h_s, and keeps whichever file, this one or g_a's,
has the lower true cost.

Needs torch (the `train` extra). The whole image is optimized at once, so its size is bounded.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np

from .errors import AecError, require

STEPS = {0: 0, 1: 50, 2: 150, 3: 400}  # Adam steps of each effort level
MAX_PIXELS = 1 << 21  # the optimization holds the whole image's activations for the gradient
LEARNING_RATE = 0.02
TEMPERATURE = 0.5  # held for the first HOLD of the steps, then decayed 20-fold
HOLD = 0.3
SEED = 0  # the Gumbel noise is seeded: the same input, effort and thread count give the same bytes


@lru_cache(maxsize=1)
def _model():
    from .torch_weights import load_model
    from .weights import find_weights

    return load_model(find_weights()).eval().requires_grad_(False)


def check_effort(effort: int, width: int, height: int) -> None:
    if effort not in STEPS:
        raise AecError(f"effort must be one of {', '.join(map(str, STEPS))}, got {effort!r}")
    if effort and width * height > MAX_PIXELS:
        raise AecError(f"effort {effort} optimizes the whole image at once and takes at most {MAX_PIXELS:,} pixels; "
                       f"this one has {width * height:,}: use effort 0")
    if effort:
        require("train", f"effort {effort}", "torch", "compressai")


def lambda_of(lambdas: tuple[float, ...], quality: float) -> float:
    """The rate-distortion weight of a real quality, interpolated in log space like the gains."""
    q = min(max(quality, 1.0), len(lambdas)) - 1
    lo = min(int(math.floor(q)), len(lambdas) - 2)
    return math.exp((1 - (q - lo)) * math.log(lambdas[lo]) + (q - lo) * math.log(lambdas[lo + 1]))


def refine(colour: np.ndarray, latent: np.ndarray, quality: float, steps: int,
           progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 pixels and g_a's latent (M, rows, cols) before the gain -> (gained y, z), refined."""
    import torch

    model = _model()
    height, width = colour.shape[:2]
    rows, cols = latent.shape[1:]
    padded = np.pad(colour, ((0, rows * 16 - height), (0, cols * 16 - width), (0, 0)), mode="edge")
    x = torch.from_numpy(padded.transpose(2, 0, 1).astype(np.float32) / np.float32(255))[None]
    q = torch.tensor([quality])
    gain, inv_gain = model.gains(q)
    weight = lambda_of(model.config.lambdas, quality) * 255**2
    generator = torch.Generator().manual_seed(SEED)
    eb, gc = model.entropy_bottleneck, model.gaussian_conditional
    medians = eb._get_medians().reshape(1, -1, 1, 1)

    def soft_round(v: torch.Tensor, tau: float) -> torch.Tensor:
        low = torch.floor(v)
        r = (v - low).clamp(1e-6, 1 - 1e-6)
        logits = torch.stack([-torch.atanh(r) / tau, -torch.atanh(1 - r) / tau], -1)
        u = torch.rand(logits.shape, generator=generator).clamp_min(1e-9)
        return low + torch.softmax(logits - torch.log(-torch.log(u)), -1)[..., 1]

    def cost(y: torch.Tensor, z: torch.Tensor, tau: float) -> torch.Tensor:
        z_hat = soft_round(z - medians, tau) + medians
        z_likelihood = eb.likelihood_lower_bound(eb._likelihood(z_hat.transpose(0, 1).reshape(z.shape[1], 1, -1))[0])
        scales, means = model.h_s(z_hat).chunk(2, 1)
        y_hat = soft_round(y - means, tau) + means
        y_likelihood = gc.likelihood_lower_bound(gc._likelihood(y_hat, gc.lower_bound_scale(scales), means))
        bits = -(torch.log2(y_likelihood).sum() + torch.log2(z_likelihood).sum()) / (height * width)
        x_hat = model.g_s(y_hat * inv_gain)[..., :height, :width]
        return weight * (x_hat - x[..., :height, :width]).square().mean() + bits

    with torch.no_grad():
        y0 = torch.from_numpy(latent)[None] * gain
        z0 = model.h_a(y0)
    y, z = y0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([y, z], lr=LEARNING_RATE)
    for step in range(steps):
        tau = TEMPERATURE * math.exp(-3 * max(0.0, step / steps - HOLD) / (1 - HOLD))
        loss = cost(y, z, tau)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress:
            progress(step + 1, steps)
    return y.detach()[0].numpy(), z.detach()[0].numpy()
