"""What the context model costs in time: in-process encode and decode with the hyperprior alone and
with the context model, side by side in one run.

    python -m benchmarks.context_speed IMAGE.png [IMAGE.png ...] [--qualities 1,4,8] [--repeat 7] [--out F]

For each image and quality, the two entropy models' encodes (`aecodec.compress(..., context=...)`) and
decodes (`aecodec.decompress`) are timed in turns, each after one untimed call, the weights loaded;
medians of `--repeat`, and the ratio context / hyperprior of each. The summary is the median ratio
over the images and qualities, and the bytes each model wrote.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--qualities", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import aecodec

    from benchmarks.speed import machine

    rows = []
    for path in args.images:
        img = np.asarray(Image.open(path).convert("RGB"))
        for q in (float(v) for v in args.qualities.split(",")):
            files = {c: aecodec.compress(img, q, context=c) for c in (False, True)}  # also the warm-up
            for c in (False, True):
                aecodec.decompress(files[c])
            times: dict = {(what, c): [] for what in ("encode", "decode") for c in (False, True)}
            for _ in range(args.repeat):
                for c in (False, True):
                    t0 = time.perf_counter()
                    aecodec.compress(img, q, context=c)
                    t1 = time.perf_counter()
                    aecodec.decompress(files[c])
                    times["encode", c].append(t1 - t0)
                    times["decode", c].append(time.perf_counter() - t1)
            row = {"image": path.name, "quality": q, "bytes_hyperprior": len(files[False]), "bytes_context": len(files[True])}
            for what in ("encode", "decode"):
                plain, ours = statistics.median(times[what, False]), statistics.median(times[what, True])
                row.update({f"{what}_s_hyperprior": round(plain, 4), f"{what}_s_context": round(ours, 4),
                            f"{what}_ratio": round(ours / plain, 3)})
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {f"{what}_ratio_median": statistics.median(r[f"{what}_ratio"] for r in rows) for what in ("encode", "decode")}
    doc = {"machine": machine(), "repeat": args.repeat, "rows": rows, "summary": summary}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
