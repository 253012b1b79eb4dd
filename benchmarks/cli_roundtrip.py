"""Round-trip a folder of images through the `aecodec` command at qualities 1..8.

    python -m benchmarks.cli_roundtrip ../shared/data/kodak --out cli.json [--jobs 2]

One `aecodec compress` and one `aecodec decompress` batch per quality; bpp is the .aec file size
* 8 / pixels, PSNR-RGB is measured on the decoded PNG files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.jpeg2000 import psnr_rgb


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--qualities", type=lambda v: [int(q) for q in v.split(",")], default=list(range(1, 9)))
    args = ap.parse_args(argv)

    sources = sorted(args.image_dir.glob("*.png"))
    originals = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sources}
    cli = [sys.executable, "-m", "aecodec.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in args.qualities:
            coded, decoded = Path(tmp) / f"q{q}", Path(tmp) / f"d{q}"
            subprocess.run(cli + ["compress", *map(str, sources), "-o", str(coded), "-q", str(q), "-j", str(args.jobs)], check=True)
            subprocess.run(cli + ["decompress", *map(str, sorted(coded.glob("*.aec"))), "-o", str(decoded), "-j", str(args.jobs)], check=True)
            for stem, img in originals.items():
                size = (coded / f"{stem}.aec").stat().st_size
                out = np.asarray(Image.open(decoded / f"{stem}.png").convert("RGB"))
                rows.append({"image": stem, "quality": q, "bytes": size, "bpp": size * 8 / (img.shape[0] * img.shape[1]),
                             "psnr": psnr_rgb(img, out)})
            qs = [r for r in rows if r["quality"] == q]
            print(f"q{q}: {np.mean([r['bpp'] for r in qs]):.4f} bpp  {np.mean([r['psnr'] for r in qs]):.2f} dB "
                  f"({len(qs)} images)", flush=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
