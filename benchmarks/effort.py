"""Encoder effort and the entropy model on Kodak, real files: BD-rate of each setting against
effort 0 with the hyperprior alone, and against JPEG 2000.

    python -m benchmarks.effort ../shared/data/kodak --out effort.json [--efforts 0,1,2,3] [--qualities 1,...,8]
        [--entropy hyperprior,context] [--images kodim01,kodim04,...]

Every (image, quality, effort, entropy model) is compressed with `aecodec.compress(..., effort=E,
context=...)` and decoded with the ordinary decoder: bpp of the whole file, PSNR-RGB, and the encode's
and decode's wall seconds on this machine. The file is rewritten after each row, and a rerun skips
the rows it holds (and rewrites the summary). The summary gives, per setting ("E": effort E with the
hyperprior, "context, effort E" with the context model), over the images and qualities it shares with
effort 0 of the hyperprior: the mean curve, its BD-rate (PSNR) against that baseline's and against the
recorded JPEG 2000 curve of the same images (benchmarks/results/kodak/kodak-jpeg2000.json), and the
median, mean and largest encode and decode seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bdrate import bd_rate

JPEG2000 = Path(__file__).parent / "results/kodak/kodak-jpeg2000.json"


def _jpeg2000_curve(images: set[str]) -> list[tuple[float, float]] | None:
    """The recorded JPEG 2000 curve over these images only (mean per target bpp), or None if any is missing."""
    results = [r for r in json.loads(JPEG2000.read_text())["results"] if r["image"] in images]
    if {r["image"] for r in results} != images:
        return None
    targets = sorted({r["target_bpp"] for r in results})
    return [(float(np.mean([r["bpp"] for r in results if r["target_bpp"] == t])),
             float(np.mean([r["psnr"] for r in results if r["target_bpp"] == t]))) for t in targets]


def summarise(rows: list[dict]) -> dict:
    """Per setting, over the images it shares with effort 0 of the hyperprior at every quality: the mean
    curves of both, the BD-rates, the encode and decode seconds."""
    base = (0, "hyperprior")

    def setting(r: dict) -> tuple[int, str]:
        return r["effort"], r.get("entropy", "hyperprior")

    def pairs(s: tuple[int, str]) -> set[tuple[str, float]]:
        return {(r["image"], r["quality"]) for r in rows if setting(r) == s}

    def curve(s: tuple[int, str], common: set, qualities: list[float]) -> list[tuple[float, float]]:
        sel = [r for r in rows if setting(r) == s and (r["image"], r["quality"]) in common]
        return [(float(np.mean([r["bpp"] for r in sel if r["quality"] == q])),
                 float(np.mean([r["psnr"] for r in sel if r["quality"] == q]))) for q in qualities]

    out: dict = {"efforts": {}}
    for e in sorted({setting(r) for r in rows}, key=lambda s: (s[1] != "hyperprior", s)):
        shared = pairs(e) & pairs(base)
        qualities = sorted({q for _, q in shared})
        images = {i for i, _ in shared if all((i, q) in shared for q in qualities)}  # each at every quality
        common = {(i, q) for i in images for q in qualities}
        if not common:
            continue
        sel = [r for r in rows if setting(r) == e and (r["image"], r["quality"]) in common]
        entry = {"images": sorted(images), "qualities": qualities, "curve": curve(e, common, qualities)}
        for what, key in (("encode", "seconds"), ("decode", "decode_seconds")):
            seconds = [r[key] for r in sel if key in r]
            if seconds:
                entry.update({f"{what}_seconds_median": float(np.median(seconds)),
                              f"{what}_seconds_mean": float(np.mean(seconds)), f"{what}_seconds_max": float(np.max(seconds))})
        if len(qualities) >= 2:
            anchor = _jpeg2000_curve(images) if JPEG2000.exists() else None
            entry["bd_rate_vs_effort_0"] = bd_rate(curve(base, common, qualities), entry["curve"])
            entry["bd_rate_vs_jpeg2000"] = bd_rate(anchor, entry["curve"]) if anchor else None
            entry["effort_0_bd_rate_vs_jpeg2000"] = bd_rate(anchor, curve(base, common, qualities)) if anchor else None
        out["efforts"][str(e[0]) if e[1] == "hyperprior" else f"{e[1]}, effort {e[0]}"] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--efforts", default="0,1,2,3")
    ap.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--entropy", default="hyperprior", help="entropy models: hyperprior, context or both")
    ap.add_argument("--images", help="comma-separated names (without .png): a subset, in this order; default all")
    args = ap.parse_args(argv)

    import aecodec

    efforts = [int(e) for e in args.efforts.split(",")]
    qualities = [float(q) for q in args.qualities.split(",")]
    models = args.entropy.split(",")
    doc = json.loads(args.out.read_text()) if args.out.exists() else {"rows": []}
    done = {(r["image"], r["quality"], r["effort"], r.get("entropy", "hyperprior")) for r in doc["rows"]}
    paths = ([args.image_dir / f"{name}.png" for name in args.images.split(",")] if args.images
             else sorted(args.image_dir.glob("*.png")))
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        for q, e, model in itertools.product(qualities, efforts, models):
            if (path.name, q, e, model) in done:
                continue
            start = time.perf_counter()
            data = aecodec.compress(img, q, effort=e, context=model == "context")
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            decoded = np.asarray(aecodec.decompress(data)).astype(np.float64)
            decode_seconds = time.perf_counter() - start
            doc["rows"].append({"image": path.name, "quality": q, "effort": e, "entropy": model,
                                "seconds": seconds, "decode_seconds": decode_seconds,
                                "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
                                "psnr": float(10 * np.log10(255**2 / np.mean((decoded - img) ** 2)))})
            doc["summary"] = summarise(doc["rows"])
            args.out.write_text(json.dumps(doc, indent=1) + "\n")
            print(json.dumps(doc["rows"][-1]), flush=True)
    doc["summary"] = summarise(doc["rows"]) if doc["rows"] else {}
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["summary"], indent=1))


if __name__ == "__main__":
    main()
