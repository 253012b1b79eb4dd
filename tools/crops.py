"""Training images in memory and random crops of them: shared by train.py and train_heads.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_images(paths: list[Path], min_size: int) -> list[torch.Tensor]:
    """Decode every image once into uint8 CHW tensors; the crops are small, so all fit in memory."""
    images = []
    for path in paths:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        if min(a.shape[:2]) >= min_size:
            images.append(torch.from_numpy(a.copy()).permute(2, 0, 1))
    return images


def random_crops(images: list[torch.Tensor], batch: int, crop: int, gen: torch.Generator,
                 device: torch.device) -> torch.Tensor:
    """`batch` random crops with random horizontal and vertical flips, as float in [0,1] on the device."""
    crops = []
    for i in torch.randint(len(images), (batch,), generator=gen).tolist():
        img = images[i]
        top = torch.randint(img.shape[1] - crop + 1, (1,), generator=gen).item()
        left = torch.randint(img.shape[2] - crop + 1, (1,), generator=gen).item()
        c = img[:, top : top + crop, left : left + crop]
        flips = torch.rand(2, generator=gen)
        if flips[0] < 0.5:
            c = c.flip(2)
        if flips[1] < 0.5:
            c = c.flip(1)
        crops.append(c)
    x = torch.stack(crops).to(device, non_blocking=True).float().div_(255)
    return x.contiguous(memory_format=torch.channels_last)
