"""Encoder effort: the latents of one image optimized for that image's own rate-distortion cost.

g_a gives each image a latent that is good on average. Here y and z are refined by gradient descent
on `lambda(quality) * 255^2 * MSE + bits`, with the decoder and the entropy models frozen, so the file
still decodes with the ordinary decoder. Rounding is made differentiable by stochastic Gumbel
annealing (Yang, Bamler, Mandt 2020, "Improving Inference for Neural Image Compression"): each value
is a random soft mix of its floor and ceiling, which hardens as the temperature falls. The codec then
rounds hard and codes through the exact integer h_s, and keeps whichever file, this one or g_a's,
has the lower true cost.

One coding tile is refined at a time, in the order they are coded, so memory is bounded by the tile.
A tile's cost counts the pixels g_s makes from its y (the tile and `margin` y elements around it)
and the bits of the y whose means and scales its z moves (`hyper_margin` z elements around it).
Its neighbours stand as the decoder will see them, hard-rounded: refined before it, g_a's after it.
What is left out, the pixels of a neighbour's y re-rounded against the means this z moves, costs
little: on kodim07 at quality 3 in 256-pixel tiles, effort 1 saves 5.6% of the true cost against
6.1% in one tile, and errs no more along the tile edges (MSE 51.6 within 8 pixels, against 52.2).

With the context model (`context=True`), the tile's own y is counted in the context model's bits, pass
by pass as it will be coded, and rounded around the context model's means; its neighbours' y, whose
means its z moves, is still counted with the hyperprior's bits (an approximation: they are coded
with the context model too).

Needs torch (the `train` extra). On a GPU, and on a CPU with bfloat16 units (AMX or AVX-512 BF16),
g_s runs in bfloat16 (its last layer in float32), in channels-last layout: on our CPU a step on
768x512 takes 0.21 s instead of 0.68 s, for the same true cost within 0.1% (kodim01 and kodim07).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from . import grid
from .errors import AecError, require
from .grid import Box

STEPS = {0: 0, 1: 50, 2: 150, 3: 400}  # Adam steps of each effort level (per coding tile)
LEARNING_RATE = 0.04  # held for the first HOLD of the steps, then decayed linearly to 5% of it
TEMPERATURE = 0.5  # held for the first HOLD of the steps, then decayed 20-fold
HOLD = 0.3
SEED = 0  # the Gumbel noise is seeded: the same input, effort and thread count give the same bytes


@lru_cache(maxsize=1)
def _model():
    import torch

    from .torch_weights import load_model
    from .weights import find_weights

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(find_weights()).eval().requires_grad_(False).to(device)
    model.g_s.to(memory_format=torch.channels_last)  # oneDNN's fast layout for the convolutions
    return model


@lru_cache(maxsize=1)
def _context_model(device):
    """The installed context model in torch (`aecodec.context`), frozen."""
    from safetensors.torch import load_file

    from .context import ContextConfig, ContextModel
    from .weights import CONTEXT_NAME, _on_backbone

    weights = _on_backbone(CONTEXT_NAME, None, "train_context.py")
    model = ContextModel(ContextConfig.from_json(json.dumps(weights.manifest["config"])))
    model.load_state_dict(load_file(str(weights.path)))
    return model.eval().requires_grad_(False).to(device)


def _bfloat16(device) -> bool:
    import torch

    if device.type == "cuda":
        return True
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def check_effort(effort: int) -> None:
    if effort not in STEPS:
        raise AecError(f"effort must be one of {', '.join(map(str, STEPS))}, got {effort!r}")
    if effort:
        require("train", f"effort {effort}", "torch", "compressai")


def lambda_of(lambdas: tuple[float, ...], quality: float) -> float:
    """The rate-distortion weight of a real quality, interpolated in log space like the gains."""
    q = min(max(quality, 1.0), len(lambdas)) - 1
    lo = min(math.floor(q), len(lambdas) - 2)
    return math.exp((1 - (q - lo)) * math.log(lambdas[lo]) + (q - lo) * math.log(lambdas[lo + 1]))


class _Region(NamedTuple):
    """The boxes that refining one coding tile works on (in y elements, or z where named so)."""

    keep_y: Box  # the y being refined
    seen_y: Box  # the pixels g_s makes from them: the distortion counts over these
    window_y: Box  # what g_s needs for those pixels
    outer_z: Box  # the y (in z elements) whose means, so bits, this z moves, and the window's
    outer_y: Box
    context_z: Box  # what h_s needs for the outer means


def _region(keep: Box, k: int, y_grid: tuple[int, int], z_grid: tuple[int, int], hyper_margin: int,
            margin: int) -> _Region:
    keep_y = grid.scaled(keep, k)
    seen_y = grid.grow(keep_y, margin, *y_grid)
    outer_z = grid.grow(keep, max(hyper_margin, -(-2 * margin // k)), *z_grid)  # one h_s gives both
    return _Region(keep_y, seen_y, grid.grow(seen_y, margin, *y_grid), outer_z, grid.scaled(outer_z, k),
                   grid.grow(outer_z, hyper_margin, *z_grid))


def refine(colour: np.ndarray, latent: np.ndarray, quality: float, steps: int, tiles: list[Box],
           hyper_margin: int, margin: int,
           progress: Callable[[int, int], None] | None = None, context: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 pixels and g_a's latent (M, rows, cols) before the gain -> (gained y, z), refined
    tile by tile. `tiles` are the coding tiles in z elements, `hyper_margin` (z elements) covers h_s,
    `margin` (y elements) covers g_s; `context`: for files coded with the context model."""
    import torch

    refiner = _Refiner(colour, latent, quality, context)
    done = 0
    # cuDNN's fastest algorithms are not deterministic: the same bytes every time on a GPU too
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        for keep in tiles:
            optimizer = refiner.start(keep, hyper_margin, margin)
            for step in range(steps):
                annealed = max(0.0, step / steps - HOLD) / (1 - HOLD)
                optimizer.param_groups[0]["lr"] = LEARNING_RATE * (1 - 0.95 * annealed)
                loss = refiner.cost(TEMPERATURE * math.exp(-3 * annealed))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if progress:
                    progress(done, steps * len(tiles))
            refiner.finish()
    return refiner.y_all[0].cpu().numpy(), refiner.z_all[0].cpu().numpy()


class _Refiner:
    """The latents of one image, and the true cost of one tile's as they are refined."""

    stride = 16  # pixels per y element

    def __init__(self, colour: np.ndarray, latent: np.ndarray, quality: float, context: bool = False):
        import torch

        self.model = model = _model()
        self.device = next(model.parameters()).device
        self.context = _context_model(self.device) if context else None
        self.quality = torch.tensor([float(quality)], device=self.device)
        self.half = _bfloat16(self.device)
        self.target = torch.from_numpy(colour.transpose(2, 0, 1).astype(np.float32) / np.float32(255)).to(self.device)
        gain, self.inv_gain = (g.to(self.device) for g in model.gains(torch.tensor([quality])))
        self.weight = lambda_of(model.config.lambdas, quality) * 255**2
        self.generator = torch.Generator(self.device).manual_seed(SEED)
        self.medians = model.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        with torch.no_grad():
            self.y_all = torch.from_numpy(latent).to(self.device)[None] * gain
            self.z_all = model.h_a(self.y_all)
        self.k = self.y_all.shape[2] // self.z_all.shape[2]  # y elements per z element

    def start(self, keep: Box, hyper_margin: int, margin: int):
        """Begin on the tile `keep` (z elements): its y and z become the parameters of an optimizer."""
        import torch

        self.keep = keep
        self.r = r = _region(keep, self.k, self.y_all.shape[2:], self.z_all.shape[2:], hyper_margin, margin)
        pixels = grid.scaled(r.seen_y, self.stride)
        self.x = self.target[:, pixels[0]:pixels[2], pixels[1]:pixels[3]]  # cut to the image
        self.z_context = self._hard(self.z_all[grid.slices(r.context_z)], self.medians)
        self.y_outer = self.y_all[grid.slices(r.outer_y)]
        self.y = self.y_all[grid.slices(r.keep_y)].clone().requires_grad_(True)
        self.z = self.z_all[grid.slices(keep)].clone().requires_grad_(True)
        return torch.optim.Adam([self.y, self.z], lr=LEARNING_RATE)

    def finish(self) -> None:
        """The tile's refined latents into the image's: its neighbours see them from now on."""
        import torch

        with torch.no_grad():
            self.y_all[grid.slices(self.r.keep_y)], self.z_all[grid.slices(self.keep)] = self.y, self.z

    def cost(self, tau: float):
        """lambda * MSE over the pixels and channels + bits per pixel, at temperature `tau`."""
        import torch

        from .model import float32

        model, r, k, x = self.model, self.r, self.k, self.x
        eb, gc = model.entropy_bottleneck, model.gaussian_conditional
        z_hat = self._soft_round(self.z - self.medians, tau) + self.medians
        z_likelihood = eb.likelihood_lower_bound(eb._likelihood(z_hat.transpose(0, 1).reshape(z_hat.shape[1], 1, -1))[0])
        z_context = self.z_context.clone()
        z_context[grid.slices(self.keep, r.context_z)] = z_hat
        scales, means = model.h_s(z_context).chunk(2, 1)
        scales, means = (p[grid.slices(r.outer_z, r.context_z, k)] for p in (gc.lower_bound_scale(scales), means))
        y_hat = self._hard(self.y_outer, means)  # the neighbours: hard, against the means this z gives them
        inner = grid.slices(r.keep_y, r.outer_y)
        inner_means, own_bits = means[inner], 0
        if self.context is not None:  # the tile's y as the context model codes it
            from .context import bits as context_bits
            from .context import table_index

            index = table_index(scales[inner])
            shift, inner_means = self.context.parameters_of(self.y, index, inner_means, self.quality)
        y_hat[inner] = self._soft_round(self.y - inner_means, tau) + inner_means
        if self.context is not None:
            own_bits = context_bits(y_hat[inner], index + shift, inner_means, rounded=False).sum()
        y_bits = -torch.log2(gc.likelihood_lower_bound(gc._likelihood(y_hat, scales, means)))
        if self.context is not None:  # the hyperprior's bits only for the neighbours
            outside = torch.ones_like(y_bits)
            outside[inner] = 0
            y_bits = y_bits * outside
        bits = y_bits.sum() + own_bits - torch.log2(z_likelihood).sum()
        y_window = (y_hat[grid.slices(r.window_y, r.outer_y)] * self.inv_gain).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.half):
            x_hat = float32(model.g_s[-1], model.g_s[:-1](y_window))
        x_hat = x_hat[grid.slices(r.seen_y, r.window_y, self.stride)][..., :x.shape[1], :x.shape[2]]
        return (self.weight * (x_hat[0] - x).square().sum() / 3 + bits) / (x.shape[1] * x.shape[2])

    def _soft_round(self, v, tau: float):
        """Floor or ceiling of each value, a random soft mix of the two that hardens as tau falls."""
        import torch

        low = torch.floor(v)
        r = (v - low).clamp(1e-6, 1 - 1e-6)
        logits = torch.stack([-torch.atanh(r) / tau, -torch.atanh(1 - r) / tau], -1)
        u = torch.rand(logits.shape, generator=self.generator, device=self.device).clamp_min(1e-9)
        return low + torch.softmax(logits - torch.log(-torch.log(u)), -1)[..., 1]

    @staticmethod
    def _hard(v, offset):
        import torch

        return torch.round(v - offset) + offset
