"""Denoising and super-resolution heads on the codec's frozen backbone.

Super-resolution (decoder side): from g_s's last hidden layer (N channels at half the decoded size)
and the decoded image, three convolutions and a pixel shuffle predict what bicubic enlargement lacks.
It works on any .aec file: the bits are those of the ordinary file. `upscale`, which has the original
image, gives the head the original in place of the decoded one.

Denoising: residual adapters after g_a's three GDN layers, told the noise level, move the latent of a
noisy image towards the latent of the clean one, so that the encoder spends its bits on the signal and
the file decodes with the ordinary decoder (`compress --denoise`). `denoise` then runs a small
full-resolution refiner on the noisy image and the decoded one to restore fine detail.

The backbone is frozen: with the heads off, the codec gives the same bits and pixels as without them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor

SCALE = 2  # the super-resolution factor the head is trained for
SIGMA_UNIT = 50.0  # noise levels (8-bit units) are fed to the networks divided by this
G_S_REACH = 30  # pixels of the image that the backbone's g_s sees beyond a pixel
STRIDE = 16  # pixels per latent element: window margins are whole elements


@dataclass(frozen=True)
class HeadConfig:
    """Everything needed to rebuild a head; stored in its weights file."""

    kind: str  # "super-resolution" or "denoising"
    N: int = 128  # channels of the backbone's transforms
    channels: int = 64  # hidden channels of the head's convolutions at the backbone's resolutions
    refine_channels: int = 32  # hidden channels of the denoising refiner
    refine_layers: int = 4  # convolutions of the denoising refiner
    refine_fold: int = 1  # the refiner works on the image folded by this factor (pixel unshuffle), as FFDNet
    # A second refiner after the first (0 channels: none), with the same inputs but the first one's output
    # in place of the decoded image: it adds capacity to a trained head without changing what it does at first.
    second_channels: int = 0
    second_layers: int = 8
    second_fold: int = 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HeadConfig":
        return cls(**json.loads(text))


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def _quiet_last(seq: nn.Sequential, scale: float = 0.1) -> None:
    """Scale down the last convolution so that a fresh head starts close to doing nothing (at 0: nothing)."""
    last = [m for m in seq if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.zero_()


def _level_map(sigma: Tensor, like: Tensor) -> Tensor:
    """Noise levels (B,) in 8-bit units -> a (B,1,H,W) plane the size of `like`."""
    return (sigma.to(like.dtype) / SIGMA_UNIT).view(-1, 1, 1, 1).expand(-1, 1, *like.shape[2:])


class SuperResolution(nn.Module):
    """x2: bicubic enlargement of a base image plus the detail predicted from g_s's hidden features.

    The base is the decoded image (`decompress --scale 2`), or the original image when there is one
    (`upscale`), which spares the enlargement the coding loss; a flag plane tells the head which."""

    # Pixels of window context g_s needs around a window of the enlarged image's latent: g_s's reach
    # (30 px), then 3 convolutions at half the coded size (6 px), rounded up to whole latent elements.
    margin = 48

    def __init__(self, config: HeadConfig = HeadConfig("super-resolution")):
        super().__init__()
        self.config = config
        r = 2 * SCALE  # the features are at half the base's size
        c = config.channels
        self.unshuffle = nn.PixelUnshuffle(2)  # the base, folded to the features' size: 12 channels
        self.body = nn.Sequential(_conv(config.N + 13, c), nn.ReLU(inplace=True), _conv(c, c), nn.ReLU(inplace=True),
                                  _conv(c, 3 * r * r), nn.PixelShuffle(r))
        _quiet_last(self.body)

    def forward(self, features: Tensor, base: Tensor, original: bool | Tensor) -> Tensor:
        """(B,N,H/2,W/2) features and the (B,3,H,W) base -> (B,3,2H,2W), not clamped. `original`: whether
        the base is the original image (a bool, or a (1,) tensor of 0 or 1 in an exported graph)."""
        flag = torch.zeros_like(features[:, :1]) + torch.as_tensor(original, dtype=features.dtype).reshape(-1, 1, 1, 1)
        detail = self.body(torch.cat([features, self.unshuffle(base), flag], 1))
        return F.interpolate(base, scale_factor=SCALE, mode="bicubic", align_corners=False) + detail


def _refiner(channels: int, layers: int, fold: int, scale: float = 0.1) -> nn.Sequential:
    """Noisy image, estimate and noise level (7 channels) -> correction of the estimate, folded by `fold`."""
    seq: list[nn.Module] = [nn.PixelUnshuffle(fold)] if fold > 1 else []
    seq += [_conv(7 * fold * fold, channels), nn.ReLU(inplace=True)]
    for _ in range(layers - 2):
        seq += [_conv(channels, channels), nn.ReLU(inplace=True)]
    seq += [_conv(channels, 3 * fold * fold)] + ([nn.PixelShuffle(fold)] if fold > 1 else [])
    refiner = nn.Sequential(*seq)
    _quiet_last(refiner, scale)
    return refiner


def _correction(refiner: nn.Sequential, fold: int, noisy: Tensor, estimate: Tensor, sigma: Tensor) -> Tensor:
    inputs = torch.cat([noisy, estimate, _level_map(sigma, noisy)], 1)
    h, w = inputs.shape[2:]
    if h % fold or w % fold:  # the fold needs whole blocks: repeat the last row and column
        inputs = F.pad(inputs, (0, -w % fold, 0, -h % fold), mode="replicate")
    return refiner(inputs)[:, :, :h, :w]


class Denoising(nn.Module):
    """Adapters for g_a (encoder side) and a full-resolution refiner (for `denoise` only), optionally
    followed by a second refiner."""

    # Pixels of window context for g_a with the adapters: its receptive field reaches 58 px.
    analysis_margin = 64

    def __init__(self, config: HeadConfig = HeadConfig("denoising")):
        super().__init__()
        self.config = config
        n, c = config.N, config.channels

        def adapter() -> nn.Sequential:
            seq = nn.Sequential(_conv(n + 1, c), nn.ReLU(inplace=True), _conv(c, n))
            _quiet_last(seq)
            return seq

        self.adapters = nn.ModuleList(adapter() for _ in range(3))
        self.refiner = _refiner(config.refine_channels, config.refine_layers, config.refine_fold)
        if config.second_channels:  # it starts as nothing, so a trained head grown by it does what it did
            self.second = _refiner(config.second_channels, config.second_layers, config.second_fold, scale=0.0)

    @property
    def reach(self) -> int:
        """How far (pixels) the refiners look beyond the pixel they correct: 3x3 convolutions on the image
        folded by f see f pixels further each, plus f - 1 for where the pixel lies in its block."""
        c = self.config
        stages = [(c.refine_layers, c.refine_fold)] + ([(c.second_layers, c.second_fold)] if c.second_channels else [])
        return sum(layers * fold + fold - 1 for layers, fold in stages)

    @property
    def refine_margin(self) -> int:
        """Pixels of window context for g_s then the refiners (48 for one 4-layer refiner)."""
        return -(-(G_S_REACH + self.reach) // STRIDE) * STRIDE

    def analyse(self, g_a: nn.Sequential, x: Tensor, sigma: Tensor) -> Tensor:
        """g_a with an adapter after each GDN: noisy pixels (B,3,H,W), noise levels (B,) -> latent."""
        adapters = iter(self.adapters)
        h = x
        for layer in g_a:
            h = layer(h)
            if isinstance(layer, GDN):
                h = h + next(adapters)(torch.cat([h, _level_map(sigma, h)], 1))
        return h

    def refine(self, noisy: Tensor, decoded: Tensor, sigma: Tensor) -> Tensor:
        """The decoded (denoised) image plus the detail the refiner finds in the noisy one; not clamped."""
        refined = decoded + _correction(self.refiner, self.config.refine_fold, noisy, decoded, sigma)
        if self.config.second_channels:
            refined = refined + _correction(self.second, self.config.second_fold, noisy, refined, sigma)
        return refined


HEADS = {"super-resolution": SuperResolution, "denoising": Denoising}


def build_head(config: HeadConfig) -> nn.Module:
    return HEADS[config.kind](config)
