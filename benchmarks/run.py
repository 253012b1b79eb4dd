"""The whole benchmark in one command: every codec over a folder (resumable), then the report.

    python -m benchmarks.run ../shared/data/kodak --out-dir benchmarks/results/kodak \
        --anchors ../shared/anchors/compressai-kodak --check
    aecodec bench ../shared/data/kodak --out-dir ...        # the same, from a source checkout
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks import classical, report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--codecs", default="all")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--anchors", type=Path, help="CompressAI's published results, drawn dashed")
    ap.add_argument("--check", action="store_true", help="check the report in headless Chromium")
    args = ap.parse_args(argv)

    classical.main([str(args.image_dir), "--out-dir", str(args.out_dir), "--codecs", args.codecs, "--jobs", str(args.jobs)])
    report_args = [str(args.out_dir), "--images", str(args.image_dir)]
    if args.anchors:
        report_args += ["--anchors", str(args.anchors)]
    report.main(report_args + (["--check"] if args.check else []))


if __name__ == "__main__":
    main()
