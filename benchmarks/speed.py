"""Speed and memory of aecodec on one image, against Pillow's JPEG 2000 at the same rate, in one run.

    python -m benchmarks.speed IMAGE.png [--repeat 5] [--threads 2] [--quality 4] [--out speed.json]

In process: the median of `--repeat` calls of `aecodec.compress` / `aecodec.decompress` after one
warm-up (the weights and graphs loaded), and of Pillow's JPEG 2000 encode / decode (OpenJPEG,
irreversible 9/7 wavelet with the colour transform, at aecodec's rate). Whole commands: `aecodec
compress` / `aecodec decompress` and the same JPEG 2000 work as `python -c`, each under
`/usr/bin/time -v` (start-up included: wall seconds and peak RSS, medians of `--repeat`).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def median_time(fn, repeat: int) -> float:
    """The median of `repeat` wall-clock timings of `fn()` after one untimed call, in seconds."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def best_time(fn, repeat: int) -> float:
    """The shortest of `repeat` wall-clock timings of `fn()`, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def jpeg2000(image: Image.Image, bpp: float) -> bytes:
    """OpenJPEG at its best for PSNR: the irreversible 9/7 wavelet and the colour transform, at `bpp`."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG2000", irreversible=True, mct=1, quality_mode="rates",
               quality_layers=[24 / bpp])
    return buffer.getvalue()


def timed(cmd: list[str], repeat: int) -> dict:
    """Medians of wall seconds and peak RSS (MB) of `cmd` under /usr/bin/time -v."""
    walls, peaks = [], []
    for _ in range(repeat):
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
        walls.append(sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":")))))
        peaks.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1000)
    return {"wall_s": round(statistics.median(walls), 3), "peak_rss_mb": round(statistics.median(peaks), 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=float, default=4.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import aecodec
    from aecodec.runtime import set_threads

    set_threads(args.threads)
    image = Image.open(args.image).convert("RGB")
    data = aecodec.compress(image, args.quality)
    bpp = len(data) * 8 / (image.width * image.height)
    j2k = jpeg2000(image, bpp)
    rows: dict = {"image": f"{args.image.name} ({image.width}x{image.height})", "threads": args.threads,
                  "quality": args.quality, "aecodec_bpp": round(bpp, 4),
                  "jpeg2000_bpp": round(len(j2k) * 8 / (image.width * image.height), 4)}
    rows["in_process_s"] = {
        "aecodec.compress": median_time(lambda: aecodec.compress(image, args.quality), args.repeat),
        "aecodec.decompress": median_time(lambda: aecodec.decompress(data), args.repeat),
        "jpeg2000 encode": median_time(lambda: jpeg2000(image, bpp), args.repeat),
        "jpeg2000 decode": median_time(lambda: Image.open(io.BytesIO(j2k)).load(), args.repeat),
    }
    with tempfile.TemporaryDirectory() as tmp:
        aec, jp2, png = Path(tmp) / "x.aec", Path(tmp) / "x.jp2", Path(tmp) / "x.png"
        aec.write_bytes(data)
        jp2.write_bytes(j2k)
        cli = [sys.executable, "-m", "aecodec.cli"]
        q = ["-q", str(args.quality)]
        pillow = [sys.executable, "-c"]
        rows["whole_command"] = {
            "aecodec compress": timed(cli + ["compress", str(args.image), "-o", str(aec), *q, "--force"], args.repeat),
            "aecodec decompress": timed(cli + ["decompress", str(aec), "-o", str(png), "--force"], args.repeat),
            "jpeg2000 encode (python -c)": timed(pillow + [
                f"from PIL import Image; Image.open({str(args.image)!r}).convert('RGB').save({str(jp2)!r}, "
                f"irreversible=True, mct=1, quality_mode='rates', quality_layers=[{24 / bpp}])"], args.repeat),
            "jpeg2000 decode (python -c)": timed(pillow + [
                f"from PIL import Image; Image.open({str(jp2)!r}).save({str(png)!r})"], args.repeat),
        }
    for name, seconds in rows["in_process_s"].items():
        rows["in_process_s"][name] = round(seconds, 4)
    print(json.dumps(rows, indent=1))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
