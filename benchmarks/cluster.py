"""Batches on a Dask cluster against `-j` on one machine, in one run: whole commands, start-up included.

    python -m benchmarks.cluster KODAK --out cluster.json [--images 200] [--tiny 20000] [--workers 2]

Throughput: `--images` copies of the folder's images (cycled) compressed by `aecodec compress FILES -o
OUT -j W` and by `aecodec compress FOLDER -o OUT --cluster local:W` (cluster start-up, worker checks
and weight loading included), images per second side by side, then the cluster command again on the
finished job (a rerun that skips everything). Scale: `--tiny` images of 16x16 pixels in folders of
1,000, on `--cluster local:W`, with the peak RSS of the command, which holds the scheduler (a
LocalCluster's scheduler runs in the submitting process) and the listing.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.speed import machine


def timed(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one run of `cmd` under /usr/bin/time -v, and its output."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return {"wall_s": round(sum(float(p) * 60**i for i, p in enumerate(reversed(clock.split(":")))), 2),
            "peak_rss_mb": round(rss / 1024, 1), "exit": r.returncode, "stdout": r.stdout.strip()[-400:]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--tiny", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quality", default="4")
    args = ap.parse_args(argv)
    cli = [sys.executable, "-W", "ignore", "-m", "aecodec.cli", "compress", "-q", args.quality]
    w = str(args.workers)
    result: dict = {"machine": machine(), "workers": args.workers, "images": args.images, "tiny": args.tiny}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photos"
        src.mkdir()
        originals = sorted(args.image_dir.glob("*.png"))
        files = [src / f"{i:04d}-{originals[i % len(originals)].name}" for i in range(args.images)]
        for i, f in enumerate(files):
            shutil.copyfile(originals[i % len(originals)], f)
        local = timed(cli + [*map(str, files), "-o", str(Path(tmp) / "j"), "-j", w])
        dask = timed(cli + [str(src), "-o", str(Path(tmp) / "c"), "--cluster", f"local:{w}"])
        rerun = timed(cli + [str(src), "-o", str(Path(tmp) / "c"), "--cluster", f"local:{w}"])
        same = all((Path(tmp) / "j" / f.with_suffix(".aec").name).read_bytes()
                   == (Path(tmp) / "c" / f.with_suffix(".aec").name).read_bytes() for f in files)
        result["throughput"] = {
            f"-j {w}": {**local, "images_per_s": round(args.images / local["wall_s"], 3)},
            f"--cluster local:{w}": {**dask, "images_per_s": round(args.images / dask["wall_s"], 3)},
            "rerun (all skipped)": rerun,
            "engine_overhead": round(dask["wall_s"] / local["wall_s"] - 1, 4),
            "identical_files": same}
        print(json.dumps(result["throughput"], indent=1), flush=True)
        shutil.rmtree(src)

        if not args.tiny:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            return
        tiny = Path(tmp) / "tiny"
        rng = np.random.default_rng(0)
        for i in range(args.tiny):
            folder = tiny / f"{i // 1000:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        run = timed(cli + [str(tiny), "-o", str(Path(tmp) / "t"), "--cluster", f"local:{w}"])
        coded = sum(1 for _ in (Path(tmp) / "t").rglob("*.aec"))
        result["tiny_files"] = {**run, "files_per_s": round(args.tiny / run["wall_s"], 1), "outputs": coded}
        print(json.dumps(result["tiny_files"], indent=1), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
