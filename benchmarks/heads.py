"""Denoising and super-resolution benchmark of aecodec's heads against the usual baselines.

    python -m benchmarks.heads --kodak ../shared/data/kodak --sr-eval ../shared/data/sr-eval \
        --out benchmarks/results/heads/heads.json --jobs 2

Denoising (Kodak 24, CBSD68; Gaussian noise of sigma 15, 25, 50, seeded by image and sigma, clipped and
rounded to 8 bits as a noisy PNG would be): PSNR-RGB against the clean image of the noisy input, OpenCV's
fastNlMeansDenoisingColored (h and hColor tuned per sigma on 4 CBSD68 images, see `tune_nlm`), CBM3D
(`bm3d.bm3d_rgb`, its default profile, told the true sigma; about 30 s an image and sigma on Kodak here,
so `--bm3d-sigmas CBSD68:25` limits it on a set), and aecodec's `denoise` at quality 8 told
the true sigma: as it is (the head, then the collaborative filter), with `--fast` (the head alone), and
without its refiner (the decoded file of `compress --denoise`). On Kodak also with
the estimated sigma, and the rate: `compress --denoise` against plain `compress` of the
noisy image, both at quality 4, PSNR against the clean image.

Super-resolution x2 (Set5, Set14): the high-resolution image cropped to even sides, reduced with
Pillow's bicubic (antialiased, like MATLAB's imresize); PSNR on BT.601 luma with 2 border pixels
cropped. Bicubic enlargement of the reduced image; aecodec's `upscale` (coded at quality 8 or 4, decoded
at twice the size on the original pixels); `decompress --scale 2` of the file (the decoded pixels as
base); and bicubic enlargement of the decoded file (what the head adds over decoding then resizing).

Results are kept per image in the output JSON, which a rerun resumes; the summary (means) is rewritten
at the end. Published figures (SRCNN, EDSR on Set5) are quoted for reference, not measured here.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIGMAS = (15, 25, 50)
QUALITY = 8.0
RATE_QUALITY = 4.0
NLM_H = (0.4, 0.55, 0.7, 0.85, 1.0)  # h = factor * sigma, tried by `tune_nlm`
PUBLISHED = {"SRCNN x2 Set5 (Y)": 36.66, "EDSR x2 Set5 (Y)": 38.11}  # as quoted in the issue


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma in 16..235 from 8-bit RGB, as MATLAB's rgb2ycbcr (unrounded)."""
    return 16 + rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = 2) -> float:
    crop = (slice(border, -border), slice(border, -border))
    return psnr(luma(a)[crop], luma(b)[crop])


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def add_noise(clean: np.ndarray, sigma: float, name: str) -> np.ndarray:
    """Seeded by the image's name and sigma, so every method and every run sees the same noise."""
    rng = np.random.default_rng(zlib.crc32(f"{name}:{sigma}".encode()))
    return np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def nlm(noisy: np.ndarray, h: float) -> np.ndarray:
    """OpenCV's colour non-local means (which works in Lab from BGR)."""
    import cv2

    bgr = np.ascontiguousarray(noisy[:, :, ::-1])
    return cv2.fastNlMeansDenoisingColored(bgr, None, h, h, 7, 21)[:, :, ::-1]


def cbm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    out = bm3d.bm3d_rgb(noisy.astype(np.float64) / 255, sigma / 255)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def tune_nlm(images: list[Path]) -> dict[int, float]:
    """Best h (= hColor) per sigma, as a multiple of sigma, by mean PSNR on the given images."""
    best = {}
    cleans = [(p.name, rgb(p)) for p in images]
    for sigma in SIGMAS:
        scores = {f: np.mean([psnr(nlm(add_noise(c, sigma, n), f * sigma), c) for n, c in cleans]) for f in NLM_H}
        best[sigma] = max(scores, key=scores.get)
    return best


def baselines(path: Path, nlm_h: dict[int, float], bm3d_sigmas: tuple[int, ...]) -> dict[str, dict]:
    """Noisy input, OpenCV NLM and CBM3D (at `bm3d_sigmas`, as it is slow) for each sigma: they depend
    on no weights, so they are kept apart."""
    clean = rgb(path)
    rows = {}
    for sigma in SIGMAS:
        noisy = add_noise(clean, sigma, path.name)
        rows[str(sigma)] = {"noisy": psnr(noisy, clean), "nlm": psnr(nlm(noisy, nlm_h[sigma] * sigma), clean)}
        if sigma in bm3d_sigmas:
            start = time.perf_counter()
            rows[str(sigma)].update(bm3d=psnr(cbm3d(noisy, sigma), clean), bm3d_seconds=time.perf_counter() - start)
    return rows


def denoised(noisy_image: Image.Image, sigma: float) -> dict:
    """`denoise` at QUALITY, timed in its two parts: the head alone (what `--fast` gives), then the
    collaborative filter that `denoise` runs on the head's output by default."""
    from aecodec import enhance

    start = time.perf_counter()
    fast = enhance.denoise(noisy_image, sigma, quality=QUALITY, collaborative=False)
    middle = time.perf_counter()
    full = enhance.collaborative_filter(noisy_image, fast, sigma)
    return {"fast": np.asarray(fast), "full": np.asarray(full), "fast_seconds": middle - start,
            "seconds": time.perf_counter() - start}


def denoise_image(path: Path, rate: bool) -> dict[str, dict]:
    """aecodec's denoising of each sigma: told the sigma, with and without the collaborative filter, and
    without the refiner; with `rate`, also estimating the sigma, and the rates of plain and denoising
    compression."""
    from aecodec import codec, enhance

    clean = rgb(path)
    rows = {}
    for sigma in SIGMAS:
        noisy_image = Image.fromarray(add_noise(clean, sigma, path.name))
        told = denoised(noisy_image, sigma)
        row = {"aecodec": psnr(told["full"], clean), "aecodec_seconds": told["seconds"],
               "aecodec_fast": psnr(told["fast"], clean), "aecodec_fast_seconds": told["fast_seconds"]}
        estimated = enhance.noise_level(noisy_image)
        row["estimated_sigma"] = estimated
        data = codec.compress(noisy_image, QUALITY, denoise=sigma)
        row["aecodec_no_refiner"] = psnr(np.asarray(codec.decompress(data)), clean)
        if rate:
            row["aecodec_estimated"] = psnr(denoised(noisy_image, min(estimated, 75))["full"], clean)
            pixels = clean.shape[0] * clean.shape[1]
            for key, level in (("plain", None), ("denoise", sigma)):
                data = codec.compress(noisy_image, RATE_QUALITY, denoise=level)
                row[f"rate_{key}_bpp"] = len(data) * 8 / pixels
                row[f"rate_{key}_psnr"] = psnr(np.asarray(codec.decompress(data)), clean)
        rows[str(sigma)] = row
    return rows


def sr_image(path: Path, dataset: str) -> dict:
    from aecodec import codec, enhance

    with Image.open(path) as im:
        hr_image = im.convert("RGB")
    w, h = hr_image.width // 2 * 2, hr_image.height // 2 * 2
    hr_image = hr_image.crop((0, 0, w, h))
    hr = np.asarray(hr_image)
    lr = hr_image.resize((w // 2, h // 2), Image.Resampling.BICUBIC)
    row = {"dataset": dataset, "image": path.name,
           "bicubic": psnr_y(np.asarray(lr.resize((w, h), Image.Resampling.BICUBIC)), hr)}
    for q in (QUALITY, RATE_QUALITY):
        data = codec.compress(lr, q)
        row[f"q{q:g}_bpp_lr"] = len(data) * 8 / (lr.width * lr.height)
        row[f"upscale_q{q:g}"] = psnr_y(np.asarray(enhance.upscale(lr, quality=q)), hr)
        start = time.perf_counter()
        row[f"decompress_x2_q{q:g}"] = psnr_y(np.asarray(codec.decompress(data, scale=2)), hr)
        row[f"decompress_x2_q{q:g}_seconds"] = time.perf_counter() - start
        row[f"decoded_bicubic_q{q:g}"] = psnr_y(np.asarray(codec.decompress(data).resize((w, h), Image.Resampling.BICUBIC)), hr)
    return row


def _work(task: tuple) -> dict:
    from aecodec.runtime import set_threads

    set_threads(1)
    kind, path, dataset, *args = task
    if kind == "baselines":
        return baselines(path, *args)
    if kind == "denoise":
        return denoise_image(path, *args)
    return sr_image(path, dataset)


def head_costs(image: Path) -> dict:
    """Parameters of each head against the backbone's, and the extra time each costs on one image."""
    from aecodec import codec, enhance
    from aecodec.runtime import set_threads
    from aecodec.torch_weights import load_head, load_model
    from aecodec.weights import find_weights
    from benchmarks.speed import best_time

    model = load_model(find_weights())
    sr, dn = load_head("super-resolution"), load_head("denoising")
    with Image.open(image) as im:
        img = im.convert("RGB")

    set_threads(2)
    data = codec.compress(img, QUALITY)
    noisy = Image.fromarray(add_noise(np.asarray(img), 25, image.name))
    return {
        "image": image.name, "threads": 2,
        "backbone_parameters": sum(p.numel() for p in model.parameters()),
        "sr_parameters": sum(p.numel() for p in sr.parameters()),
        "denoise_adapter_parameters": sum(p.numel() for p in dn.adapters.parameters()),
        "denoise_refiner_parameters": sum(p.numel() for n, p in dn.named_parameters() if not n.startswith("adapters.")),
        "decompress_seconds": best_time(lambda: codec.decompress(data), 3),
        "decompress_x2_seconds": best_time(lambda: codec.decompress(data, scale=2), 3),
        "compress_seconds": best_time(lambda: codec.compress(noisy, QUALITY), 3),
        "compress_denoise_seconds": best_time(lambda: codec.compress(noisy, QUALITY, denoise=25), 3),
        "denoise_seconds": best_time(lambda: enhance.denoise(noisy, 25, quality=QUALITY), 3),
        "denoise_fast_seconds": best_time(lambda: enhance.denoise(noisy, 25, quality=QUALITY, collaborative=False), 3),
    }


def summarise(results: dict) -> dict:
    """Means per set (and sigma) over the images that have every result."""
    summary: dict = {"denoising": {}, "super_resolution": {}}
    by_set: dict[str, list[str]] = {}
    for key in results["denoise"]:
        by_set.setdefault(key.split("/")[0], []).append(key)
    for dataset, keys in by_set.items():
        for sigma in map(str, SIGMAS):
            cells = [{**results["baselines"].get(k, {}).get(sigma, {}), **results["denoise"][k][sigma]} for k in keys]
            fields = [f for f in cells[0] if all(f in c for c in cells)]
            summary["denoising"][f"{dataset} sigma {sigma}"] = {
                "images": len(cells), **{f: round(float(np.mean([c[f] for c in cells])), 4) for f in fields}}
    rows_by_set: dict[str, list[dict]] = {}
    for key, row in results["sr"].items():
        rows_by_set.setdefault(key.split("/")[0], []).append(row)
    for dataset, rows in rows_by_set.items():
        fields = [f for f in rows[0] if f not in ("dataset", "image")]
        summary["super_resolution"][dataset] = {
            "images": len(rows), **{f: round(float(np.mean([r[f] for r in rows])), 4) for f in fields}}
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kodak", type=Path, required=True)
    ap.add_argument("--sr-eval", type=Path, required=True, help="folder with Set5, Set14, CBSD68")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1, help="images in parallel (processes, 1 thread each)")
    ap.add_argument("--only", choices=("denoise", "sr"), help="run one part")
    ap.add_argument("--baselines-only", action="store_true", help="only the denoising baselines (no aecodec weights needed)")
    ap.add_argument("--bm3d-sigmas", nargs="*", default=[], metavar="SET:S,S",
                    help="run CBM3D at these sigmas only for a set (e.g. CBSD68:25); default: every sigma")
    args = ap.parse_args(argv)

    from aecodec.files import atomic_write
    from aecodec.weights import HEAD_NAMES, find_weights

    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    backbone = find_weights().manifest["model_id"]
    key = {kind: f"{backbone}+{find_weights(name).manifest['model_id']}" for kind, name in HEAD_NAMES.items()}
    old = results.get("weights", {})
    for kind, part in (("denoising", "denoise"), ("super-resolution", "sr")):
        if old.get(kind) != key[kind]:  # other weights: that head's results start over; the baselines stay
            results[part] = {}
            results.pop("costs", None)
    results.update(weights=key)
    results.setdefault("baselines", {})

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        results["summary"] = summarise(results)
        results["published"] = PUBLISHED
        atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(results, indent=1) + "\n"))

    tasks = []
    if args.only != "sr":
        cbsd = sorted((args.sr_eval / "CBSD68").glob("*.png"))
        if "nlm_h" not in results:
            results["nlm_h"] = {str(k): v for k, v in tune_nlm(cbsd[:4]).items()}
            print(f"NLM h/sigma per sigma (tuned on 4 CBSD68 images): {results['nlm_h']}", flush=True)
        nlm_h = {int(k): v for k, v in results["nlm_h"].items()}
        bm3d_sigmas = {name: tuple(int(v) for v in values.split(",")) for name, values in
                       (item.split(":") for item in args.bm3d_sigmas)}
        for dataset, files in (("kodak", sorted(args.kodak.glob("*.png"))), ("CBSD68", cbsd)):
            for p in files:
                if f"{dataset}/{p.name}" not in results["baselines"]:
                    tasks.append(("baselines", p, dataset, nlm_h, bm3d_sigmas.get(dataset, SIGMAS)))
                if f"{dataset}/{p.name}" not in results["denoise"] and not args.baselines_only:
                    tasks.append(("denoise", p, dataset, dataset == "kodak"))
    if args.only != "denoise" and not args.baselines_only:
        for dataset in ("Set5", "Set14"):
            tasks += [("sr", p, dataset) for p in sorted((args.sr_eval / dataset).glob("*.png"))
                      if f"{dataset}/{p.name}" not in results["sr"]]
    print(f"{len(tasks)} tasks to run", flush=True)
    pool = ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"))
    for task, row in zip(tasks, pool.map(_work, tasks)):
        kind, path, dataset = task[:3]
        results["sr" if kind == "sr" else kind][f"{dataset}/{path.name}"] = row
        save()
        print(f"{kind} {dataset}/{path.name} done", flush=True)
    pool.shutdown()
    if "costs" not in results and not args.baselines_only:
        results["costs"] = head_costs(args.kodak / "kodim23.png")
    save()
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
