"""What the exact (version 2) decoding path costs on Kodak, against the float path of version 1.

    python -m benchmarks.exact_path ../shared/data/kodak --out exact.json

Encodes and decodes every image at qualities 1..8 with real .aec files (format version 2: integer
h_s, windowed transforms) and compares the mean curve, by BD-rate, with the version 1 curve of the
same weights recorded by the benchmark (benchmarks/results/kodak/kodak-aecodec.json: float64 h_s,
one window per 1024 px tile).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

import aecodec
from aecodec import codec
from benchmarks.bdrate import bd_rate

RECORDED = Path(__file__).parent / "results/kodak/kodak-aecodec.json"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    recorded = json.loads(RECORDED.read_text())
    weights, _ = codec.coding_model()
    if weights.model_id.hex() not in recorded["version"]:
        raise SystemExit(f"the recorded curve is of other weights ({recorded['version']}): rerun the benchmark first")
    paths = sorted(args.image_dir.glob("*.png"))
    start, rows = time.time(), []
    for quality in range(1, 9):
        bpp, psnr = [], []
        for path in paths:
            img = np.asarray(Image.open(path).convert("RGB"))
            data = aecodec.compress(img, quality=quality)
            out = np.asarray(aecodec.decompress(data))
            bpp.append(len(data) * 8 / (img.shape[0] * img.shape[1]))
            psnr.append(10 * np.log10(255**2 / np.mean((img.astype(np.float64) - out) ** 2)))
        rows.append({"quality": quality, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(psnr))})
        print(f"q{quality}: {rows[-1]['bpp']:.4f} bpp {rows[-1]['psnr']:.3f} dB ({time.time() - start:.0f} s)", flush=True)
    before = [(m["bpp"], m["psnr"]) for m in recorded["mean"]]
    result = {"weights": weights.model_id.hex(), "window_pixels": codec.WINDOW_PIXELS, "margin": codec.MARGIN, "images": len(paths), "exact": rows, "float_v1": recorded["mean"],
              "bd_rate_exact_vs_float": bd_rate(before, [(r["bpp"], r["psnr"]) for r in rows])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"BD-rate of the exact path against the float path: {result['bd_rate_exact_vs_float']:+.3f}%")


if __name__ == "__main__":
    main()
