"""A context model for y on the frozen hyperprior: channel groups decoded in turn, a checkerboard in each.

He et al. 2022, "ELIC" (uneven channel groups, each conditioned on the groups before it) with He et
al. 2021's two-pass checkerboard inside each group: the anchors (row + column even) first, from the
hyperprior and the earlier groups, then the rest, also from the anchors around them. So y is coded in
2 * len(groups) passes, each a vectorised call of the range coder.

Every pass corrects the hyperprior's entropy parameters rather than replacing them: a network gives a
shift of the Gaussian table index (in table steps) and of the mean, its last layer starting at zero, so
an untrained model codes exactly as the hyperprior alone. The table index it corrects is the integer
one the coder picks from the hyperprior's scale, so training sees what coding sees; at coding time the
shift is rounded to whole tables, in training too (the gradient passes the rounding straight
through): the integer network computes the same sums exactly.

This module is torch, for training; coding runs its integer copy (`integer.IntegerContext`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch import Tensor

from .model import SCALE_LEVELS, SCALE_MAX, SCALE_MIN

STEP = (math.log(SCALE_MAX) - math.log(SCALE_MIN)) / (SCALE_LEVELS - 1)  # log-scale between tables
LIKELIHOOD_BOUND = 1e-9
SLOPE = 0.01  # LeakyReLU, as in h_s
# Inputs in the network's units: powers of two, so that the integer copy scales them exactly.
INDEX_UNIT, VALUE_UNIT = 16.0, 8.0


@dataclass(frozen=True)
class ContextConfig:
    """Everything needed to rebuild the context networks; stored in the weights file's metadata."""

    arch: str = "checkerboard-channel-groups"
    M: int = 192
    groups: tuple[int, ...] = (16, 16, 32, 64, 64)
    hidden: int = 64
    quality: bool = True  # the coding quality is an input of every pass

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ContextConfig":
        fields = json.loads(text)
        fields["groups"] = tuple(fields["groups"])
        return cls(**fields)

    @property
    def starts(self) -> list[int]:
        """The first channel of each group."""
        return [sum(self.groups[:k]) for k in range(len(self.groups))]


def anchors(height: int, width: int) -> Tensor:
    """(height, width) bool: the checkerboard's first pass (row + column even)."""
    i = torch.arange(height)[:, None] + torch.arange(width)[None, :]
    return i % 2 == 0


def table_index(scales: Tensor) -> Tensor:
    """The Gaussian table the coder picks for each scale (`runtime.CodingModel.table_indexes`)."""
    bounds = torch.tensor([SCALE_MIN * math.exp(STEP * i) for i in range(SCALE_LEVELS - 1)], dtype=torch.float64)
    return torch.searchsorted(bounds, scales.double().clamp(min=SCALE_MIN)).to(scales.dtype)


def table_scale(index: Tensor) -> Tensor:
    """The scale of a (real) table index: SCALE_MIN at 0, SCALE_MAX at the last."""
    return SCALE_MIN * torch.exp(STEP * index.clamp(0, SCALE_LEVELS - 1))


def bits(y: Tensor, index: Tensor, means: Tensor, rounded: bool = True) -> Tensor:
    """-log2 likelihood of each rounded y (round(y - mean)) under the Gaussian of its table index;
    the rounding passes gradients straight through to the mean. `rounded=False`: y is already a
    (soft) y_hat, taken as it is (the encoder effort's annealed rounding)."""
    v = y - means
    if rounded:
        v = v + (torch.round(v) - v).detach()
    s = table_scale(index)
    normal = torch.distributions.Normal(0.0, 1.0)
    p = normal.cdf((v + 0.5) / s) - normal.cdf((v - 0.5) / s)
    return -torch.log2(p.clamp(min=LIKELIHOOD_BOUND))


class ContextModel(nn.Module):
    """Per group k of c channels: `channel[k]` (3x3) sees the hyperprior's index and mean of the group,
    every earlier group's y_hat and the quality; `spatial[k]` (3x3) sees the group's anchors (second
    pass only); `out[k]` turns their sum into (index shift, mean shift) for the group."""

    def __init__(self, config: ContextConfig = ContextConfig()):
        super().__init__()
        if sum(config.groups) != config.M:
            raise ValueError(f"groups {config.groups} do not add up to the {config.M} channels of y")
        self.config = config
        h, q = config.hidden, int(config.quality)
        self.channel = nn.ModuleList(nn.Conv2d(2 * c + s + q, h, 3, padding=1)
                                     for c, s in zip(config.groups, config.starts))
        self.spatial = nn.ModuleList(nn.Conv2d(c, h, 3, padding=1, bias=False) for c in config.groups)
        self.out = nn.ModuleList(
            nn.Sequential(nn.LeakyReLU(SLOPE), nn.Conv2d(h, h, 1), nn.LeakyReLU(SLOPE), nn.Conv2d(h, 2 * c, 1))
            for c in config.groups)
        with torch.no_grad():  # an untrained model is the hyperprior alone
            for seq in self.out:
                seq[-1].weight.zero_()
                seq[-1].bias.zero_()

    def forward(self, y: Tensor, scales: Tensor, means: Tensor, quality: Tensor) -> dict[str, Tensor]:
        """Training and evaluation path: gained y and the hyperprior's (scales, means), all (B, M, H, W),
        qualities (B,) -> bits of every element of y under the context model ("bits") and under the
        hyperprior alone ("hyperprior"), and y_hat."""
        index0 = table_index(scales)
        shift, mean = self.parameters_of(y, index0, means, quality)
        return {"bits": bits(y, index0 + shift, mean), "hyperprior": bits(y, index0, means),
                "y_hat": torch.round(y - mean) + mean}

    def parameters_of(self, y: Tensor, index0: Tensor, means: Tensor, quality: Tensor) -> tuple[Tensor, Tensor]:
        """(index shift in whole tables, mean) of every element, computed pass by pass as the decoder
        will: each pass sees only y_hat already decoded (rounded around its own mean)."""
        b, _, height, width = y.shape
        first = anchors(height, width).to(y.device)
        shifts, outs, decoded = [], [], []
        for k, (c, s) in enumerate(zip(self.config.groups, self.config.starts)):
            part = slice(s, s + c)
            inputs = [index0[:, part] / INDEX_UNIT, means[:, part] / VALUE_UNIT] + [d / VALUE_UNIT for d in decoded]
            if self.config.quality:
                inputs.append((quality.to(y.dtype) / VALUE_UNIT).view(-1, 1, 1, 1).expand(b, 1, height, width))
            context = self.channel[k](torch.cat(inputs, 1))
            shift_a, mean_a = self._correct(k, context, index0[:, part], means[:, part])
            y_hat_a = torch.where(first, _round_around(y[:, part], mean_a), torch.zeros_like(mean_a))
            shift_b, mean_b = self._correct(k, context + self.spatial[k](y_hat_a / VALUE_UNIT), index0[:, part],
                                            means[:, part])
            shift, mean = torch.where(first, shift_a, shift_b), torch.where(first, mean_a, mean_b)
            shifts.append(shift)
            outs.append(mean)
            decoded.append(_round_around(y[:, part], mean))
        return torch.cat(shifts, 1), torch.cat(outs, 1)

    def _correct(self, k: int, context: Tensor, index0: Tensor, means: Tensor):
        d_index, d_mean = self.out[k](context).chunk(2, 1)
        d_index = d_index + (torch.round(d_index) - d_index).detach()
        d_index = (index0 + d_index).clamp(0, SCALE_LEVELS - 1) - index0
        return d_index, means + d_mean


def _round_around(y: Tensor, mean: Tensor) -> Tensor:
    """round(y - mean) + mean, the gradient passed straight through to the mean."""
    v = y - mean
    return v + (torch.round(v) - v).detach() + mean
