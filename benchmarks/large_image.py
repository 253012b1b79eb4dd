"""A 6000x4000 photo through the CLI: peak RSS and wall time both ways, time against pixels, seams.

    python -m benchmarks.large_image ../shared/data/kodak --out large.json [--quality 4] [--context]

The photo is a mosaic of the folder's images (Kodak: 768x512 each, portraits turned), placed with an offset so that
no edge between them falls near a tile or window border. Each size runs `aecodec compress` and
`aecodec decompress` under `/usr/bin/time -v` (start-up included).

Seams, on the largest size: PSNR of the pixels within 16 px of the coding-tile borders and of the
window borders, against PSNR elsewhere. Content alone moves such figures (a band is a small sample),
so two controls show what the borders do: the pixels that differ when the image is coded with its
tile borders elsewhere (tiles of 960 px), and when the file is decoded with windows of another budget
(768x768 px, so other borders). None should.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec import codec, grid

BAND = 16  # pixels either side of a border
SIZES = ((1500, 1000), (3000, 2000), (6000, 4000))


def mosaic(paths: list[Path], width: int, height: int, offset: tuple[int, int] = (-100, -200)) -> np.ndarray:
    """The images side by side (row-major, cycling), shifted by `offset`, cut to width x height."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    images = [np.rot90(a) if a.shape[0] > a.shape[1] else a for a in images]  # portraits turned
    h, w = images[0].shape[:2]
    out = np.empty((height, width, 3), dtype=np.uint8)
    i = 0
    for top in range(offset[1], height, h):
        for left in range(offset[0], width, w):
            img = images[i % len(images)]
            i += 1
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + h, height), min(left + w, width)
            out[y0:y1, x0:x1] = img[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def timed(cmd: list[str]) -> dict:
    """Run under /usr/bin/time -v: wall seconds and peak RSS in MB."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":"))))
    return {"wall_s": round(seconds, 2), "peak_rss_mb": round(rss / 1024, 1)}


def band_mask(height: int, width: int, row_borders: set[int], col_borders: set[int]) -> np.ndarray:
    """Pixels within BAND of the given borders (rows and columns, in pixels)."""
    near = lambda n, borders: np.array([any(abs(i - b) < BAND for b in borders) for i in range(n)])  # noqa: E731
    return near(height, row_borders)[:, None] | near(width, col_borders)[None, :]


def borders(boxes: list[grid.Box], height: int, width: int, factor: int) -> tuple[set[int], set[int]]:
    """The inner edges of boxes on a grid `factor` pixels an element: (rows, columns)."""
    rows = {b[0] * factor for b in boxes} | {b[2] * factor for b in boxes}
    cols = {b[1] * factor for b in boxes} | {b[3] * factor for b in boxes}
    return rows - {0, height}, cols - {0, width}


def window_boxes(height: int, width: int) -> list[grid.Box]:
    """The kept boxes of the decoder's g_s windows for an image of this size, in latent elements."""
    rows, cols = codec._latent_size(width, height)
    budget = codec.WINDOW_PIXELS // codec.STRIDE**2
    return [keep for keep, _ in grid.fitted_windows(rows, cols, budget, codec.MARGIN // codec.STRIDE)]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64))[mask]
    return float(10 * np.log10(255**2 / np.mean(err**2)))


def seams(img: np.ndarray, data: bytes, out: np.ndarray, quality: float, context: bool) -> dict:
    height, width = img.shape[:2]
    tile_grid = [(t, left, t + codec.DEFAULT_TILE, left + codec.DEFAULT_TILE)
                 for t in range(0, height, codec.DEFAULT_TILE) for left in range(0, width, codec.DEFAULT_TILE)]
    tiles = band_mask(height, width, *borders(tile_grid, height, width, 1))
    windows = band_mask(height, width, *borders(window_boxes(height, width), height, width, codec.STRIDE))
    rest = ~(tiles | windows)
    moved = np.asarray(aecodec.decompress(aecodec.compress(img, quality, tile=960, context=context)))
    budget = codec.WINDOW_PIXELS
    try:
        codec.WINDOW_PIXELS = 768 * 768
        other_windows = np.asarray(aecodec.decompress(data))
    finally:
        codec.WINDOW_PIXELS = budget
    return {
        "psnr_all": psnr(img, out, np.ones((height, width), bool)),
        "psnr_near_tile_borders": psnr(img, out, tiles),
        "psnr_near_window_borders": psnr(img, out, windows),
        "psnr_elsewhere": psnr(img, out, rest),
        "tile_960_pixels_differing": int((moved != out).any(axis=2).sum()),
        "window_768x768_pixels_differing": int((other_windows != out).any(axis=2).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--context", action="store_true", help="code y with the context model")
    args = ap.parse_args(argv)
    paths = sorted(args.image_dir.glob("*.png"))
    cli = [sys.executable, "-W", "ignore", "-m", "aecodec.cli"]
    result: dict = {"quality": args.quality, "context": args.context, "tile": codec.DEFAULT_TILE, "window_pixels": codec.WINDOW_PIXELS,
                    "margin": codec.MARGIN, "band_px": BAND, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        src, aec, dec = Path(tmp) / "photo.png", Path(tmp) / "photo.aec", Path(tmp) / "decoded.png"
        for width, height in SIZES:
            img = mosaic(paths, width, height)
            Image.fromarray(img).save(src, compress_level=1)
            enc = timed(cli + ["compress", str(src), "-o", str(aec), "-q", str(args.quality), "--force"]
                        + (["--context"] if args.context else []))
            de = timed(cli + ["decompress", str(aec), "-o", str(dec), "--force"])
            row = {"size": f"{width}x{height}", "megapixels": width * height / 1e6,
                   "bpp": round(aec.stat().st_size * 8 / (width * height), 4), "compress": enc, "decompress": de}
            if (width, height) == SIZES[-1]:
                row["seams"] = seams(img, aec.read_bytes(), np.asarray(Image.open(dec)), args.quality, args.context)
            result["sizes"].append(row)
            print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
