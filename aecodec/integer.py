"""The hyper-synthesis h_s as an integer network, so that every machine picks the same tables.

Learned codecs break when the encoder and the decoder compute slightly different scales and so pick
different probability tables: the rest of the image decodes to noise. Here h_s runs on integers
(Ballé, Johnston, Minnen 2019, "Integer Networks for Data Compression with Latent-Variable Models"),
derived from the trained float network after training:

- weights: per output channel, `round(w * 2^e)` with the largest `e` that keeps |w| below 2^15;
- activations: integers with `ACT_BITS` fractional bits, clamped to +-`ACT_LIMIT`;
- biases: rounded to the scale of their layer's sums.

Every convolution then sums integers held in float64 whose partial sums stay below 2^53 (checked
when the network is built), so the result is exact whatever the summation order, thread count,
kernel or machine. Everything else is elementwise IEEE arithmetic (multiplications by powers of two,
one multiplication by the LeakyReLU slope, rounding), which is reproducible everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

WEIGHT_BITS = 15  # |integer weight| < 2^15: 16-bit weights
ACT_BITS = 12  # fractional bits of every activation (and of z_hat)
ACT_LIMIT = float(1 << 24)  # |integer activation| <= 2^24: real values within +-4096
_EXACT = float(1 << 53)  # float64 holds every integer below this exactly


@dataclass(frozen=True)
class _Layer:
    weight: Tensor  # integer-valued float64, the module's layout
    bias: Tensor  # integer-valued float64, (C_out,)
    to_real: Tensor  # (1, C_out, 1, 1) powers of two: integer sum -> real value
    module: nn.Module  # the float layer, for its kind, stride and padding
    slope: float | None  # LeakyReLU after it, or None for the output layer


def _exponents(weight: Tensor, out_dim: int) -> list[int]:
    """Per output channel, the largest e with max|w| * 2^e < 2^WEIGHT_BITS (exact, via frexp)."""
    peak = weight.abs().transpose(0, out_dim).reshape(weight.shape[out_dim], -1).amax(dim=1)
    return [WEIGHT_BITS - math.frexp(float(m))[1] if m > 0 else 0 for m in peak]


class IntegerHyperSynthesis:
    """z symbols (integers, before the medians) -> (scales, means) of y, exactly, in float64."""

    def __init__(self, h_s: nn.Sequential, medians: Tensor):
        layers: list[_Layer] = []
        modules = list(h_s)
        for i, module in enumerate(modules):
            if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                continue
            after = modules[i + 1] if i + 1 < len(modules) else None
            slope = after.negative_slope if isinstance(after, nn.LeakyReLU) else None
            out_dim = 1 if isinstance(module, nn.ConvTranspose2d) else 0
            w = module.weight.detach().double()
            exps = _exponents(w, out_dim)
            shape = [1] * w.ndim
            shape[out_dim] = -1
            scale = torch.tensor([math.ldexp(1.0, e) for e in exps], dtype=torch.float64)
            weight = torch.round(w * scale.reshape(shape))
            bias_scale = torch.tensor([math.ldexp(1.0, e + ACT_BITS) for e in exps], dtype=torch.float64)
            bias = torch.round(module.bias.detach().double() * bias_scale)
            to_real = torch.tensor([math.ldexp(1.0, -e - ACT_BITS) for e in exps], dtype=torch.float64)
            per_output = weight.abs().transpose(0, out_dim).reshape(weight.shape[out_dim], -1).sum(dim=1)
            if float((per_output * ACT_LIMIT + bias.abs()).max()) >= _EXACT:
                raise ValueError(f"h_s layer {i}: integer sums could reach 2^53; the weights are out of range")
            layers.append(_Layer(weight, bias, to_real.reshape(1, -1, 1, 1), module, slope))
        self._layers = layers
        self._medians = torch.round(medians.detach().double().reshape(1, -1, 1, 1) * (1 << ACT_BITS))

    def __call__(self, z_values: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, h, w) integer symbols `round(z - median)` -> (scales, means), each (B, M, 4h, 4w)."""
        a = (z_values.double() * (1 << ACT_BITS) + self._medians).clamp_(-ACT_LIMIT, ACT_LIMIT)
        for layer in self._layers:
            m = layer.module
            if isinstance(m, nn.ConvTranspose2d):
                s = F.conv_transpose2d(a, layer.weight, layer.bias, m.stride, m.padding, m.output_padding)
            else:
                s = F.conv2d(a, layer.weight, layer.bias, m.stride, m.padding)
            if layer.slope is None:
                return (s * layer.to_real).chunk(2, 1)
            s = torch.where(s >= 0, s, s * layer.slope)
            a = torch.round(s * (layer.to_real * (1 << ACT_BITS))).clamp_(-ACT_LIMIT, ACT_LIMIT)
        raise ValueError("h_s has no output layer")
