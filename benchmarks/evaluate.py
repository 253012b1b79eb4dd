"""Rate-distortion of aecodec (real .aec files) against JPEG 2000, measured in one run.

    python -m benchmarks.evaluate ../shared/data/kodak --out benchmarks/results/kodak/rd.json
    AECODEC_WEIGHTS=DIR python -m benchmarks.evaluate ...      # evaluate other weights

For every image and quality 1..8: bpp = whole file size * 8 / pixels, PSNR-RGB of the decoded
image; then JPEG 2000 (OpenJPEG, irreversible, mct=1, rates mode) at its bpp sweep, and the
Bjøntegaard delta rate of aecodec against it on the mean curves (benchmarks/bdrate.py).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import jpeg2000
from benchmarks.bdrate import bd_psnr, bd_rate

QUALITIES = (1, 2, 3, 4, 5, 6, 7, 8)


def _aecodec_image(path: Path) -> list[dict]:
    import torch

    import aecodec

    torch.set_num_threads(1)  # one process per core
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))
    rows = []
    for q in QUALITIES:
        t0 = time.perf_counter()
        data = aecodec.compress(img, quality=q)
        t1 = time.perf_counter()
        out = np.asarray(aecodec.decompress(data))
        t2 = time.perf_counter()
        rows.append({"image": path.name, "quality": q, "bytes": len(data),
                     "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
                     "psnr": jpeg2000.psnr_rgb(img, out), "encode_s": t1 - t0, "decode_s": t2 - t1})
    return rows


def _jpeg2000_image(path: Path) -> list[dict]:
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))
    rows = []
    for t in jpeg2000.BPP_TARGETS:
        n, dec = jpeg2000.encode_decode(img, t)
        rows.append({"image": path.name, "target_bpp": t, "bytes": n,
                     "bpp": n * 8 / (img.shape[0] * img.shape[1]), "psnr": jpeg2000.psnr_rgb(img, dec)})
    return rows


def _mean_curve(rows: list[dict], key: str) -> list[dict]:
    out = []
    for k in sorted({r[key] for r in rows}):
        rs = [r for r in rows if r[key] == k]
        out.append({key: k, "bpp": float(np.mean([r["bpp"] for r in rs])), "psnr": float(np.mean([r["psnr"] for r in rs]))})
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--update-manifest", action="store_true", help="record the result in the weights' manifest")
    args = ap.parse_args(argv)

    paths = sorted(p for p in args.image_dir.iterdir() if p.suffix.lower() in (".png", ".ppm", ".bmp", ".tif", ".tiff"))
    if not paths:
        raise SystemExit(f"no images in {args.image_dir}")
    from aecodec.weights import find_weights

    weights = find_weights()
    start = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        aec = [r for rows in pool.map(_aecodec_image, paths) for r in rows]
        j2k = [r for rows in pool.map(_jpeg2000_image, paths) for r in rows]
    aec_mean, j2k_mean = _mean_curve(aec, "quality"), _mean_curve(j2k, "target_bpp")
    curve = lambda m: [(r["bpp"], r["psnr"]) for r in m]  # noqa: E731
    result = {
        "images": len(paths), "folder": str(args.image_dir), "seconds": round(time.time() - start, 1),
        "model_id": weights.model_id.hex(), "steps": weights.manifest.get("steps"),
        "jpeg2000_version": jpeg2000.features.version_codec("jpg_2000"), "jpeg2000_settings": jpeg2000.SETTINGS,
        "bd_rate_vs_jpeg2000": bd_rate(curve(j2k_mean), curve(aec_mean)),
        "bd_psnr_vs_jpeg2000": bd_psnr(curve(j2k_mean), curve(aec_mean)),
        "aecodec_mean": aec_mean, "jpeg2000_mean": j2k_mean, "aecodec": aec, "jpeg2000": j2k,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"model {result['model_id']} (step {result['steps']}), {len(paths)} images, {result['seconds']} s")
    for r in aec_mean:
        print(f"  aecodec q{r['quality']}: {r['bpp']:.4f} bpp  {r['psnr']:.2f} dB")
    for r in j2k_mean:
        print(f"  jpeg2000 {r['target_bpp']:<5}: {r['bpp']:.4f} bpp  {r['psnr']:.2f} dB")
    print(f"BD-rate vs JPEG 2000: {result['bd_rate_vs_jpeg2000']:+.2f}%  (BD-PSNR {result['bd_psnr_vs_jpeg2000']:+.2f} dB)")
    if args.update_manifest:
        from aecodec.weights import update_manifest

        summary = {k: result[k] for k in ("images", "bd_rate_vs_jpeg2000", "bd_psnr_vs_jpeg2000", "jpeg2000_version")}
        update_manifest(weights, {"kodak": {**summary, "date": time.strftime("%Y-%m-%d"),
                                            "command": "python -m benchmarks.evaluate KODAK --update-manifest",
                                            "aecodec_mean": aec_mean, "jpeg2000_mean": j2k_mean}})


if __name__ == "__main__":
    main()
