"""The rate-distortion benchmark's measurements: every codec of `benchmarks.codecs` (classical codecs and
aecodec) over a folder of images.

    python -m benchmarks.classical ../shared/data/kodak --out-dir benchmarks/results/kodak
    python -m benchmarks.classical IMAGES --out-dir DIR --codecs jpeg-420,jxl --jobs 2

Writes DIR/<dataset>-<codec>.json (dataset = the image folder's name) with the codec's library
versions, its configuration, the machine, one row per (image, setting) and the mean curve per
setting. Re-running skips every (image, setting) already in the file; the file is rewritten after
each image, so an interrupted run resumes where it stopped.

Each row: bytes (whole file as the library writes it, container included), bpp = bytes * 8 / pixels,
PSNR-RGB (dB, peak 255, over all pixels and channels), MS-SSIM (pytorch_msssim on RGB in [0, 255],
data_range=255; null for images under 161 pixels on a side, which it cannot handle) and
MS-SSIM in dB = -10 log10(1 - MS-SSIM), encode and decode wall seconds, and the peak resident
memory growth of the encode + decode (see MEMORY_METHOD), and wall_s (the whole measurement, metrics
included; wall_s_total sums them per codec). Every codec runs single-threaded so that the timings
compare. Mean curves average the per-image values.

The codecs and their configurations: benchmarks/codecs.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import resource
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks import jpeg2000
from benchmarks.codecs import CODECS, THREADS, Codec, check_input

IMAGE_SUFFIXES = (".png", ".ppm", ".bmp", ".tif", ".tiff")
MEMORY_METHOD = (
    "each encode+decode runs in a child forked for it; the child returns its free heap pages to the OS "
    "(glibc malloc_trim(0)) and resets its peak RSS (writes 5 to /proc/self/clear_refs), then "
    "peak_rss_growth_kib = getrusage(RUSAGE_SELF).ru_maxrss after the decode minus VmRSS before the "
    "encode (KiB)"
)
MEMORY_METHOD_FALLBACK = (
    "each encode+decode runs in a child forked for it; /proc/self/clear_refs was not writable, so "
    "peak_rss_growth_kib = ru_maxrss after the decode minus ru_maxrss at the child's start (KiB; can "
    "under-count when the start value exceeds the resident size)"
)
MSSSIM_MIN_SIDE = 161  # pytorch_msssim's 5 scales with an 11-tap window need more than 160 pixels




# ---------------------------------------------------------------------------------------- metrics


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    return jpeg2000.psnr_rgb(a, b)


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """MS-SSIM of two HxWx3 uint8 images on [0, 255] (data_range=255); None if too small for 5 scales."""
    if min(a.shape[:2]) < MSSSIM_MIN_SIDE:
        return None
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    if _TORCH_THREADS is not None and torch.get_num_threads() != _TORCH_THREADS:
        torch.set_num_threads(_TORCH_THREADS)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).to(torch.float32)[None]

    with torch.no_grad():
        return float(_ms_ssim(t(a), t(b), data_range=255, size_average=True))


def msssim_db(v: float | None) -> float | None:
    if v is None:
        return None
    return float("inf") if v >= 1.0 else float(-10.0 * math.log10(1.0 - v))


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_free_heap() -> None:
    """Give the C heap's free pages back to the OS, so that memory freed earlier by this process (e.g.
    by the MS-SSIM of the previous measurement) is not silently reused and left uncounted."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _reset_peak_rss() -> tuple[int, bool]:
    """Reset this process's peak RSS to its current RSS; return (baseline KiB, whether it worked)."""
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss, True
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False


def measure(codec: Codec, img: np.ndarray, setting: Any) -> tuple[dict, np.ndarray]:
    """Encode and decode `img` in a forked child; return its timings, size and memory, and the decoded image."""
    check_input(img)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: do the work, send the result, never return into the caller's code
        status = 1
        try:
            os.close(rfd)
            try:
                base, exact = _reset_peak_rss()
                t0 = time.perf_counter()
                data = codec.encode(img, setting)
                t1 = time.perf_counter()
                dec = codec.decode(data)
                t2 = time.perf_counter()
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                payload = ("ok", {"bytes": len(data), "encode_s": t1 - t0, "decode_s": t2 - t1,
                                  "peak_rss_growth_kib": max(0, peak - base), "memory_exact": exact}, dec)
            except BaseException:  # noqa: BLE001 - reported to the parent
                payload = ("error", traceback.format_exc(), None)
            with os.fdopen(wfd, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as f:
        raw = f.read()
    _, wstatus = os.waitpid(pid, 0)
    if not raw:
        raise RuntimeError(f"{codec.name} at {setting}: child died (wait status {wstatus})")
    kind, info, dec = pickle.loads(raw)
    if kind != "ok":
        raise RuntimeError(f"{codec.name} at {setting} failed in the child:\n{info}")
    if not isinstance(dec, np.ndarray) or dec.dtype != np.uint8 or dec.shape != img.shape:
        raise ValueError(f"{codec.name} at {setting}: decoded {getattr(dec, 'dtype', type(dec))} "
                         f"{getattr(dec, 'shape', '')}, expected uint8 {img.shape}")
    return info, dec


def load_image(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def measure_image(path: str, codec_name: str, settings: Sequence) -> list[dict]:
    """All (setting) rows of one image for one codec. Runs in a worker (or the main process)."""
    codec = CODECS[codec_name]
    img = load_image(Path(path))
    h, w = img.shape[:2]
    # imports, plugin registration and library set-up happen here once, not inside the timed children
    codec.encode_decode(np.ascontiguousarray(img[:16, :16]), settings[0])
    rows = []
    for s in settings:
        t0 = time.perf_counter()
        info, dec = measure(codec, img, s)
        m = ms_ssim(img, dec)
        rows.append({"image": Path(path).name, codec.setting_name: s, "width": w, "height": h,
                     "bytes": info["bytes"], "bpp": info["bytes"] * 8 / (w * h), "psnr": psnr_rgb(img, dec),
                     "msssim": m, "msssim_db": msssim_db(m), "encode_s": info["encode_s"],
                     "decode_s": info["decode_s"], "peak_rss_growth_kib": info["peak_rss_growth_kib"],
                     "memory_exact": info["memory_exact"], "wall_s": time.perf_counter() - t0,
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return rows


_TORCH_THREADS: int | None = None  # set by _worker_init: MS-SSIM then uses one thread per process


def _worker_init() -> None:
    global _TORCH_THREADS
    _TORCH_THREADS = 1


# -------------------------------------------------------------------------------------- reporting


def machine_info() -> dict:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu or platform.processor(),
            "cores": os.cpu_count(), "usable_cores": usable, "numpy": np.__version__}


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def mean_curve(codec: Codec, rows: list[dict]) -> list[dict]:
    """Per setting, the mean over images of each per-image metric (images = how many were averaged)."""
    key = codec.setting_name
    out = []
    for s in codec.settings:
        rs = [r for r in rows if r[key] == s]
        if not rs:
            continue
        entry = {key: s, "images": len(rs)}
        for m in ("bpp", "psnr", "msssim", "msssim_db", "encode_s", "decode_s", "peak_rss_growth_kib"):
            vals = [r[m] for r in rs]
            entry[m] = None if any(v is None for v in vals) else _mean(vals)
        entry["peak_rss_growth_kib_max"] = max(r["peak_rss_growth_kib"] for r in rs)
        out.append(entry)
    return out


def _row_key(codec: Codec, row: dict) -> tuple[str, str]:
    return row["image"], json.dumps(row[codec.setting_name])


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _sort_rows(codec: Codec, rows: list[dict]) -> list[dict]:
    order = {json.dumps(s): i for i, s in enumerate(codec.settings)}
    return sorted(rows, key=lambda r: (r["image"], order.get(json.dumps(r[codec.setting_name]), len(order))))


def list_images(image_dir: Path) -> list[Path]:
    return sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def run(image_dir: Path, out_dir: Path, codec_names: Sequence[str], jobs: int = 1, overwrite: bool = False,
        progress: bool = True) -> dict[str, int]:
    """Measure every missing (image, setting) of each codec; return how many rows each codec gained."""
    from tqdm import tqdm

    image_dir, out_dir = Path(image_dir), Path(out_dir)
    paths = list_images(image_dir)
    if not paths:
        raise SystemExit(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
    dataset = image_dir.resolve().name
    out_dir.mkdir(parents=True, exist_ok=True)

    docs: dict[str, dict] = {}
    tasks: list[tuple[str, str, list]] = []
    for name in codec_names:
        codec = CODECS[name]
        path = out_dir / f"{dataset}-{name}.json"
        header = {"codec": name, "version": codec.version(), "settings": codec.description,
                  "setting_name": codec.setting_name, "setting_values": list(codec.settings)}
        rows: list[dict] = []
        if path.exists() and not overwrite:
            old = json.loads(path.read_text())
            for k in ("version", "settings"):
                if old.get(k) != header[k]:
                    raise SystemExit(f"{path}: its {k} {old.get(k)!r} differs from now {header[k]!r}; "
                                     "move it away or pass --overwrite")
            rows = old.get("results", [])
        done = {_row_key(codec, r) for r in rows}
        docs[name] = {"dataset": dataset, "folder": str(image_dir), **header, "machine": machine_info(),
                      "threads": THREADS, "memory_method": MEMORY_METHOD,
                      "metrics": "bpp = bytes*8/(w*h); psnr = PSNR-RGB (peak 255); msssim = pytorch_msssim.ms_ssim "
                                 "on [0,255] float32 RGB, data_range=255; msssim_db = -10*log10(1-msssim); "
                                 "mean = average of per-image values",
                      "images_in_folder": len(paths), "results": rows, "mean": mean_curve(codec, rows),
                      "_path": path, "_new": 0}
        for p in paths:
            todo = [s for s in codec.settings if (p.name, json.dumps(s)) not in done]
            if todo:
                tasks.append((str(p), name, todo))

    def save(name: str) -> None:
        doc = docs[name]
        codec = CODECS[name]
        doc["results"] = _sort_rows(codec, doc["results"])
        doc["mean"] = mean_curve(codec, doc["results"])
        doc["wall_s_total"] = round(sum(r.get("wall_s", 0.0) for r in doc["results"]), 2)
        if any(not r.get("memory_exact", True) for r in doc["results"]):
            doc["memory_method"] = MEMORY_METHOD_FALLBACK
        doc["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _write_json(doc["_path"], {k: v for k, v in doc.items() if not k.startswith("_")})

    tqdm.monitor_interval = 0  # no monitor thread: measure() forks, keep this process single-threaded
    bar = tqdm(total=sum(len(t[2]) for t in tasks), unit="enc", file=sys.stderr, disable=not progress,
               desc=f"{dataset} {','.join(codec_names)}")

    def collect(task: tuple[str, str, list], rows: list[dict]) -> None:
        name = task[1]
        docs[name]["results"].extend(rows)
        docs[name]["_new"] += len(rows)
        save(name)
        bar.update(len(task[2]))

    try:
        if jobs <= 1:
            _worker_init()
            for t in tasks:
                collect(t, measure_image(*t))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: workers start clean (no inherited threads), each then forks per measurement
            with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
                futs = {pool.submit(measure_image, *t): t for t in tasks}
                for f in as_completed(futs):
                    collect(futs[f], f.result())
    finally:
        bar.close()
    for name in codec_names:
        if docs[name]["_new"] == 0:  # nothing new: still refresh the file if missing
            if not docs[name]["_path"].exists():
                save(name)
    return {name: docs[name]["_new"] for name in codec_names}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--codecs", default="all", help=f"comma-separated, from {','.join(CODECS)} (default all available)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one image at a time each (default 1)")
    ap.add_argument("--overwrite", action="store_true", help="discard results already in the JSON files")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    if args.codecs == "all":
        names = [n for n, c in CODECS.items() if c.available()]
        for n in CODECS:
            if n not in names:
                print(f"skipping {n}: needs {', '.join(CODECS[n].requires)}", file=sys.stderr)
    else:
        names = [n.strip() for n in args.codecs.split(",") if n.strip()]
        unknown = [n for n in names if n not in CODECS]
        if unknown:
            raise SystemExit(f"unknown codec(s) {unknown}; known: {', '.join(CODECS)}")
        missing = [n for n in names if not CODECS[n].available()]
        if missing:
            raise SystemExit(f"codec(s) {missing} need {[CODECS[n].requires for n in missing]} installed")
    t0 = time.time()
    new = run(args.image_dir, args.out_dir, names, jobs=args.jobs, overwrite=args.overwrite,
              progress=not args.no_progress)
    print(f"{sum(new.values())} new measurements in {time.time() - t0:.1f} s", file=sys.stderr)
    dataset = args.image_dir.resolve().name
    for n in names:
        doc = json.loads((args.out_dir / f"{dataset}-{n}.json").read_text())
        print(f"{n}  ({doc['version']})")
        for m in doc["mean"]:
            ms = "   n/a" if m["msssim_db"] is None else f"{m['msssim_db']:6.2f}"
            print(f"  {doc['setting_name']} {m[doc['setting_name']]!s:<6} bpp {m['bpp']:.4f}  psnr {m['psnr']:.2f}  "
                  f"ms-ssim {ms} dB  enc {m['encode_s']:.3f}s dec {m['decode_s']:.3f}s  [{m['images']} img]")


if __name__ == "__main__":
    main()
