"""Rate-distortion of aecodec (real .aec files) against JPEG 2000, measured in one run.

    python -m benchmarks.evaluate ../shared/data/kodak --out-dir /tmp/rd [--update-manifest]
    AECODEC_WEIGHTS=DIR python -m benchmarks.evaluate ...      # evaluate other weights

The quick half of the full benchmark (benchmarks/run.py): the same measurements (benchmarks/classical.py,
resumable JSON per codec) for aecodec at qualities 1..8 and JPEG 2000 (OpenJPEG, irreversible, mct=1,
rates mode) only, then the Bjøntegaard delta rate of aecodec against it (benchmarks/bdrate.py).
`--update-manifest` records the result in the weights' manifest.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks import classical
from benchmarks.bdrate import bd_psnr, bd_rate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--update-manifest", action="store_true", help="record the result in the weights' manifest")
    args = ap.parse_args(argv)

    from aecodec.weights import find_weights

    weights = find_weights()
    start = time.time()
    classical.run(args.image_dir, args.out_dir, ["jpeg2000", "aecodec"], jobs=args.jobs)
    dataset = args.image_dir.resolve().name
    docs = {name: json.loads((args.out_dir / f"{dataset}-{name}.json").read_text()) for name in ("aecodec", "jpeg2000")}
    curves = {name: [(m["bpp"], m["psnr"]) for m in doc["mean"]] for name, doc in docs.items()}
    result = {"images": docs["aecodec"]["images_in_folder"],
              "bd_rate_vs_jpeg2000": bd_rate(curves["jpeg2000"], curves["aecodec"]),
              "bd_psnr_vs_jpeg2000": bd_psnr(curves["jpeg2000"], curves["aecodec"]),
              "jpeg2000_version": docs["jpeg2000"]["version"]}
    print(f"model {weights.model_id.hex()} (step {weights.manifest.get('steps')}), {result['images']} images, "
          f"{time.time() - start:.0f} s")
    for name, doc in docs.items():
        key = doc["setting_name"]
        for m in doc["mean"]:
            print(f"  {name} {key} {m[key]}: {m['bpp']:.4f} bpp  {m['psnr']:.2f} dB")
    print(f"BD-rate vs JPEG 2000: {result['bd_rate_vs_jpeg2000']:+.2f}%  (BD-PSNR {result['bd_psnr_vs_jpeg2000']:+.2f} dB)")
    if args.update_manifest:
        from aecodec.weights import update_manifest

        def mean(doc: dict) -> list[dict]:
            return [{doc["setting_name"]: m[doc["setting_name"]], "bpp": round(m["bpp"], 4), "psnr": round(m["psnr"], 3)}
                    for m in doc["mean"]]

        update_manifest(weights, {"kodak": {**result, "date": time.strftime("%Y-%m-%d"), "bpp": "real .aec file size * 8 / pixels",
                                            "command": "python -m benchmarks.evaluate KODAK --out-dir DIR --update-manifest",
                                            "aecodec_mean": mean(docs["aecodec"]), "jpeg2000_mean": mean(docs["jpeg2000"])}})


if __name__ == "__main__":
    main()
