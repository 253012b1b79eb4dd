"""Wall time of aecodec on one image: the CLI (start-up included), the in-process API, and
CompressAI's own compress/decompress of the same architecture (MeanScaleHyperprior(128, 192)).

    python -m benchmarks.speed IMAGE.png [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def best_time(fn, repeat: int) -> float:
    """The shortest of `repeat` wall-clock timings of `fn()`, in seconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    img = np.asarray(Image.open(args.image).convert("RGB"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        aec, png = Path(tmp) / "x.aec", Path(tmp) / "x.png"
        cli = [sys.executable, "-W", "ignore", "-m", "aecodec.cli"]
        rows["CLI compress (start-up included)"] = statistics.median(
            _time_cmd(cli + ["compress", str(args.image), "-o", str(aec), "--force"]) for _ in range(args.repeat))
        rows["CLI decompress (start-up included)"] = statistics.median(
            _time_cmd(cli + ["decompress", str(aec), "-o", str(png), "--force"]) for _ in range(args.repeat))
        rows["CLI info"] = statistics.median(_time_cmd(cli + ["info", str(aec)]) for _ in range(args.repeat))
        rows["python -c 'import torch'"] = _time_cmd([sys.executable, "-c", "import torch"])
        rows["python -c 'import compressai'"] = _time_cmd([sys.executable, "-W", "ignore", "-c", "import compressai"])

    import aecodec

    data = aecodec.compress(img)  # loads the model once
    rows["aecodec.compress (in process)"] = best_time(lambda: aecodec.compress(img), args.repeat)
    rows["aecodec.decompress (in process)"] = best_time(lambda: aecodec.decompress(data), args.repeat)

    from compressai.models import MeanScaleHyperprior

    net = MeanScaleHyperprior(128, 192).eval()
    net.update()
    h, w = img.shape[:2]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
    with torch.inference_mode():
        out = net.compress(x)
        rows["compressai MeanScaleHyperprior.compress"] = best_time(lambda: net.compress(x), args.repeat)
        rows["compressai MeanScaleHyperprior.decompress"] = best_time(
            lambda: net.decompress(out["strings"], out["shape"]), args.repeat)

    print(f"{args.image} ({w}x{h}), torch threads {args.threads}, best of {args.repeat} (CLI: median)")
    for name, seconds in rows.items():
        print(f"  {name:45s} {seconds:7.3f} s")


def _time_cmd(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
