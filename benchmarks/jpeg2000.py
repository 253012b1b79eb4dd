"""JPEG 2000 (Pillow / OpenJPEG) anchor: encode at target bpp, decode, measure PSNR."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, features

BPP_TARGETS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
SETTINGS = {"irreversible": True, "mct": 1, "quality_mode": "rates", "quality_layers": "[24 / target_bpp]"}


def encode(img: np.ndarray, bpp: float) -> bytes:
    """Encode an HxWx3 uint8 image at `bpp` with JPEG 2000 (9/7 wavelet + colour transform, rates mode)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB array")
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format="JPEG2000", irreversible=True, mct=1,
                                     quality_mode="rates", quality_layers=[24.0 / bpp])
    return buf.getvalue()


def encode_decode(img: np.ndarray, bpp: float) -> tuple[int, np.ndarray]:
    """Encode at `bpp` and decode; return (bytes, decoded HxWx3 uint8)."""
    data = encode(img, bpp)
    with Image.open(io.BytesIO(data)) as im:
        dec = np.asarray(im.convert("RGB"))
    return len(data), dec


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 255) over all pixels and RGB channels of two uint8 arrays."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    paths = sorted(args.image_dir.glob("*.png"))
    if not paths:
        raise SystemExit(f"no PNG files in {args.image_dir}")
    results = []
    for p in paths:
        with Image.open(p) as im:
            img = np.asarray(im.convert("RGB"))
        h, w = img.shape[:2]
        for t in BPP_TARGETS:
            n, dec = encode_decode(img, t)
            results.append({"image": p.name, "target_bpp": t, "bytes": n,
                            "bpp": n * 8 / (w * h), "psnr": psnr_rgb(img, dec)})
        print(p.name, " ".join(f"{r['bpp']:.3f}/{r['psnr']:.2f}" for r in results[-len(BPP_TARGETS):]), flush=True)
    mean = []
    for t in BPP_TARGETS:
        rs = [r for r in results if r["target_bpp"] == t]
        mean.append({"target_bpp": t, "bpp": float(np.mean([r["bpp"] for r in rs])),
                     "psnr": float(np.mean([r["psnr"] for r in rs]))})
    out = {"codec": "jpeg2000", "version": features.version_codec("jpg_2000"),
           "settings": SETTINGS, "results": results, "mean": mean}
    args.out.write_text(json.dumps(out, indent=2))
    for m in mean:
        print(f"target {m['target_bpp']:<6} bpp {m['bpp']:.4f}  psnr {m['psnr']:.2f}")


if __name__ == "__main__":
    main()
