"""Whole training photos resident on the device as uint8, and random crops cut there.

A batch is cut without host work or host synchronisation: the photo (weighted by how many crop
positions it has), the position and the flips are drawn on the device, the crop is one gather from
the padded stack of photos, and a scale jitter (one factor per batch, from a host RNG that never waits
for the device) shrinks a larger crop to the training size with an antialiased filter.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def decode(paths: list[Path], threads: int = 8) -> list[np.ndarray]:
    """Every photo as an HxWx3 uint8 array, portrait ones turned to landscape so that the padded stack
    stays small (Pillow releases the GIL while decoding: threads help)."""
    def one(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        return a.transpose(1, 0, 2) if a.shape[0] > a.shape[1] else a
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))


class PhotoBank:
    """Photos of any sizes (each at least `crop` px on both sides) padded into one (N,3,H,W) uint8 tensor."""

    def __init__(self, photos: list[np.ndarray], device: torch.device):
        if not photos:
            raise ValueError("no photos")
        height, width = max(p.shape[0] for p in photos), max(p.shape[1] for p in photos)
        stack = torch.zeros(len(photos), 3, height, width, dtype=torch.uint8)
        for i, p in enumerate(photos):
            stack[i, :, : p.shape[0], : p.shape[1]] = torch.from_numpy(p.copy()).permute(2, 0, 1)
        self.photos = stack.to(device)
        self.sizes = torch.tensor([p.shape[:2] for p in photos], device=device)  # (N, 2): height, width
        self.device = device
        self.min_side = min(min(p.shape[:2]) for p in photos)
        self.pixels = sum(p.shape[0] * p.shape[1] for p in photos)

    def __len__(self) -> int:
        return len(self.photos)

    def crops(self, batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """`batch` random size x size crops with random flips, uint8 (B,3,size,size), channels_last."""
        if size > self.min_side:
            raise ValueError(f"crops of {size} px do not fit the smallest photo ({self.min_side} px)")
        room = (self.sizes - size + 1).clamp_min(1)  # crop positions along each axis
        i = torch.multinomial(room.prod(1).float(), batch, replacement=True, generator=gen)
        u = torch.rand(batch, 4, device=self.device, generator=gen)
        top = (u[:, 0] * room[i, 0]).long()
        left = (u[:, 1] * room[i, 1]).long()
        ramp = torch.arange(size, device=self.device)
        # A flip reverses the order in which the rows (or columns) are gathered.
        rows = top[:, None] + torch.where(u[:, 2:3] < 0.5, ramp, size - 1 - ramp)
        cols = left[:, None] + torch.where(u[:, 3:4] < 0.5, ramp, size - 1 - ramp)
        # Advanced indexes around a slice put their dimensions first: (B, size, size, 3), which permuted
        # to (B,3,size,size) is already channels_last in memory.
        return self.photos[i[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def batch(self, batch: int, size: int, gen: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """Float crops in [0,1] (B,3,size,size), channels_last: cut at `scale` times `size` and shrunk."""
        source = min(round(size * scale), self.min_side)
        x = self.crops(batch, source, gen).float().div_(255)
        if source != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp_(0, 1)
        return x.contiguous(memory_format=torch.channels_last)


class ScaleJitter:
    """One scale factor per batch, log-uniform in [1, max_scale]: a host RNG, so no device round trip."""

    def __init__(self, max_scale: float, seed: int):
        self.log_max = math.log(max_scale)
        self.rng = random.Random(seed)

    def __call__(self) -> float:
        return math.exp(self.rng.uniform(0.0, self.log_max)) if self.log_max > 0 else 1.0
