"""Turn a folder of photos into a folder of training crops, or of whole photos re-encoded to travel.

Large photos are downsampled by a random factor (short side to 512..768 px), which removes sensor
noise and JPEG artifacts that a codec should not learn to reproduce; then up to --max-crops
non-overlapping crops are cut from a randomly shifted grid. Crops are named `{photo}_{i}`, so that
train.py can hold out whole photos for validation; an input that already is one crop keeps its name.

    python tools/prepare_data.py ~/Pictures data/train
    python tools/prepare_data.py ../shared/data/train .gpudata/train --max-crops 1 \
        --format jpeg --exclude-validation        # compact copy for a GPU call (JPEG q95 4:4:4)
    python tools/prepare_data.py ../shared/data/train .gpudata/denoise --shrink 176 \
        --format jpeg                             # smaller still, for the denoising head (128 px crops)
    python tools/prepare_data.py ../shared/data/photos .gpudata/photos --whole --scale 0.8 \
        --format avif --quality 78                # whole photos for tools/train_gpu.sh (AVIF 4:4:4)
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
from pathlib import Path

from PIL import Image

IMAGE_EXTENSIONS = {".png", ".webp", ".jpg", ".jpeg", ".avif", ".bmp", ".tif", ".tiff", ".ppm"}


def photo_of(path: Path) -> str:
    """The photo a crop was cut from: its name without the trailing `_<crop index>`."""
    return re.sub(r"_\d+$", "", path.stem)


def is_validation(path: Path) -> bool:
    """Hold out 1 photo in 20 (all of its crops), chosen by a hash of its name: stable across runs."""
    return int(hashlib.sha1(photo_of(path).encode()).hexdigest(), 16) % 20 == 0


def image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def crops_of(img: Image.Image, rng: random.Random, size: int, max_crops: int) -> list[Image.Image]:
    """Downsample if the short side exceeds 768 px, then cut crops from a randomly shifted grid."""
    w, h = img.size
    if min(w, h) > 768:
        short = rng.randint(512, 768)
        scale = short / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
        w, h = img.size
    nx, ny = w // size, h // size
    if nx * ny == 0:
        return []
    ox, oy = rng.randint(0, w - nx * size), rng.randint(0, h - ny * size)
    cells = rng.sample([(i, j) for i in range(nx) for j in range(ny)], min(max_crops, nx * ny))
    return [img.crop((ox + i * size, oy + j * size, ox + (i + 1) * size, oy + (j + 1) * size)) for i, j in cells]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--max-crops", type=int, default=6)
    p.add_argument("--format", choices=["png", "jpeg", "avif"], default="png", help="jpeg and avif: 4:4:4 at --quality")
    p.add_argument("--quality", type=int, default=95, help="of jpeg (95: about 43 dB) and avif (78: about 40 dB on these photos)")
    p.add_argument("--whole", action="store_true", help="whole photos, not crops, resized by --scale (Lanczos)")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--exclude-validation", action="store_true", help="skip the photos train.py holds out")
    p.add_argument("--shrink", type=int, default=0, metavar="N",
                   help="a folder of crops: one random NxN crop of each, named as its input (so that its photo stays "
                        "held out or not); of the held-out photos, the first 16 crops are copied whole, to validate on")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    args.dst.mkdir(parents=True, exist_ok=True)
    written, validation = 0, 0
    for path in image_files(args.src):
        held_out = is_validation(path)
        if args.exclude_validation and held_out:
            continue
        rng = random.Random(f"{args.seed}:{path.name}")
        with Image.open(path) as im:
            img = im.convert("RGB")
        if args.whole:
            size = (round(img.width * args.scale), round(img.height * args.scale))
            named = [(path.stem, img if args.scale == 1 else img.resize(size, Image.LANCZOS))]
        elif args.shrink:
            if held_out and validation == 16:
                continue
            validation += held_out
            x, y = rng.randint(0, img.width - args.shrink), rng.randint(0, img.height - args.shrink)
            named = [(path.stem, img if held_out else img.crop((x, y, x + args.shrink, y + args.shrink)))]
        else:
            # An input that already is one crop keeps its name (and so its photo's validation split).
            named = [(path.stem if img.size == (args.crop, args.crop) else f"{path.stem}_{i}", crop)
                     for i, crop in enumerate(crops_of(img, rng, args.crop, args.max_crops))]
        for stem, crop in named:
            if args.format == "png":
                crop.save(args.dst / f"{stem}.png", compress_level=6)
            elif args.format == "jpeg":
                crop.save(args.dst / f"{stem}.jpg", quality=args.quality, subsampling=0)
            else:
                crop.save(args.dst / f"{stem}.avif", quality=args.quality, subsampling="4:4:4", speed=6)
            written += 1
    size = sum(f.stat().st_size for f in args.dst.iterdir())
    print(f"wrote {written} {'photos' if args.whole else 'crops'} to {args.dst} ({size / 2**20:.1f} MiB in all)")


if __name__ == "__main__":
    main()
