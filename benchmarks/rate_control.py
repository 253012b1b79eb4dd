"""How close `--bpp` rate control gets on a folder of images, and how many encodes it needs.

    python -m benchmarks.rate_control ../shared/data/kodak --out rate_control.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGETS = (0.25, 0.5, 1.0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import aecodec

    rows = []
    for path in sorted(args.image_dir.glob("*.png")):
        img = np.asarray(Image.open(path).convert("RGB"))
        pixels = img.shape[0] * img.shape[1]
        low = len(aecodec.compress(img, quality=1)) * 8 / pixels
        high = len(aecodec.compress(img, quality=8)) * 8 / pixels
        for target in TARGETS:
            t = time.perf_counter()
            r = aecodec.compress_to(img, bpp=target)
            rows.append({"image": path.name, "target": target, "bpp": r.bpp, "quality": r.quality,
                         "encodes": r.encodes, "seconds": time.perf_counter() - t,
                         "reachable": low <= target <= high, "error": abs(r.bpp / target - 1)})
        print(path.name, " ".join(f"{r['target']}->{r['bpp']:.4f} ({r['encodes']})" for r in rows[-len(TARGETS):]), flush=True)
    summary = []
    for target in TARGETS:
        rs = [r for r in rows if r["target"] == target]
        ok = [r for r in rs if r["reachable"]]
        summary.append({"target": target, "images": len(rs), "reachable": len(ok),
                        "mae_reachable": float(np.mean([r["error"] for r in ok])) if ok else None,
                        "mae_all": float(np.mean([r["error"] for r in rs])),
                        "mean_encodes": float(np.mean([r["encodes"] for r in rs])),
                        "mean_seconds": float(np.mean([r["seconds"] for r in rs]))})
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    for s in summary:
        mae = f"{100 * s['mae_reachable']:.2f}%" if s["mae_reachable"] is not None else "n/a"
        print(f"target {s['target']}: {s['reachable']}/{s['images']} reachable, MAE {mae} on those, "
              f"{100 * s['mae_all']:.2f}% on all; {s['mean_encodes']:.1f} encodes, {s['mean_seconds']:.1f} s per image")


if __name__ == "__main__":
    main()
