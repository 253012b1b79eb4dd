"""The light coding path (ONNX Runtime and numpy) against the torch codec it replaced, on Kodak.

    python -m benchmarks.light_path ../shared/data/kodak --reference /tmp/ref --out light.json

`--reference` is a checkout of the torch codec (aecodec 0.2 before the light path, commit d9e6abd)
whose `python` (`--reference-python`, default this one) has torch and compressai. For every image and
quality 1..8 both encoders write a file and both decoders read both files:
- bytes: how many files are byte-identical (the encoders' float transforms differ in the last bits,
  so a few latents round the other way);
- symbols: the decoded y and z symbols of the reference's files, by each decoder (must be equal);
- pixels: the largest difference between the two decoders on the same file (must be at most 1);
- rate-distortion: the BD-rate of the light encoder's files against the reference's.
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

from benchmarks.bdrate import bd_rate

QUALITIES = tuple(range(1, 9))

# Run in the reference checkout: encode every (image, quality), decode its own files and ours, and
# save the pixels and the decoded symbols (through that codec's own tables and integer h_s).
_REFERENCE = r"""
import sys, json, numpy as np, torch
from pathlib import Path
from PIL import Image
import aecodec
from aecodec import codec, container, entropy
jobs, folder = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
torch.set_num_threads(2)
weights, model = codec._coding_model()
z_tables, y_tables = codec._tables(model)

def symbols(data):
    c = container.parse(data)
    rows, cols = codec._latent_size(c.header.width, c.header.height)
    tiles = codec._windows(rows // 4, cols // 4, c.header.tile // 64, codec.HYPER_MARGIN)
    z_values = torch.empty(1, model.config.N, rows // 4, cols // 4, dtype=torch.long)
    for (keep, _), s in zip(tiles, c.tiles):
        z = z_values[(..., *codec._slices(keep))]
        z[...] = torch.from_numpy(entropy.decode(s.z, codec._z_indexes(z.shape), z_tables)).reshape(z.shape)
    ys = []
    with torch.inference_mode():
        for (keep, window), s in zip(tiles, c.tiles):
            scales, _ = codec._hyper_synthesis(model, z_values, keep, window, c.header.version)
            ys.append(entropy.decode(s.y, model.table_indexes(scales).numpy(), y_tables))
    return z_values.numpy().ravel(), np.concatenate(ys)

for job in jobs:
    img = np.asarray(Image.open(job["image"]).convert("RGB"))
    data = aecodec.compress(img, quality=job["quality"])
    Path(job["reference_file"]).write_bytes(data)
    np.save(job["reference_pixels"], np.asarray(aecodec.decompress(data)))
    np.save(job["light_pixels_by_reference"], np.asarray(aecodec.decompress(Path(job["light_file"]).read_bytes())))
    z, y = symbols(data)
    np.savez(job["reference_symbols"], z=z, y=y)
"""


def light_symbols(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The z and y symbols of a file as the light decoder reads them."""
    from aecodec import codec, container, entropy, grid

    c = container.parse(data)
    _, model = codec.coding_model()
    rows, cols = codec._latent_size(c.header.width, c.header.height)
    k = model.Z_PER_Y
    tiles = grid.windows(rows // k, cols // k, c.header.tile // container.TILE_ALIGN, codec.HYPER_MARGIN)
    z_values = np.empty((model.N, rows // k, cols // k), dtype=np.int64)
    for (keep, _), s in zip(tiles, c.tiles):
        z = z_values[grid.slices(keep)]
        z[...] = entropy.decode(s.z, codec._z_indexes(z.shape), model.z_tables).reshape(z.shape)
    ys = []
    for (keep, window), s in zip(tiles, c.tiles):
        scales, _ = codec._hyper_synthesis(model, z_values, keep, window, c.header.version)
        ys.append(entropy.decode(s.y, model.table_indexes(scales), model.y_tables))
    return z_values.ravel(), np.concatenate(ys)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image_dir", type=Path)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--reference-python", default=sys.executable)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import aecodec

    paths = sorted(args.image_dir.glob("*.png"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = []
        for path in paths:
            img = np.asarray(Image.open(path).convert("RGB"))
            for q in QUALITIES:
                stem = folder / f"{path.stem}-q{q}"
                (folder / f"{stem.name}.light.aec").write_bytes(aecodec.compress(img, quality=q))
                jobs.append({"image": str(path.resolve()), "quality": q, "light_file": f"{stem}.light.aec",
                             "reference_file": f"{stem}.ref.aec", "reference_pixels": f"{stem}.ref.npy",
                             "light_pixels_by_reference": f"{stem}.light-by-ref.npy",
                             "reference_symbols": f"{stem}.ref-symbols.npz"})
        (folder / "jobs.json").write_text(json.dumps(jobs))
        subprocess.run([args.reference_python, "-W", "ignore", "-c", _REFERENCE, str(folder / "jobs.json"), str(folder)],
                       cwd=args.reference, check=True)
        identical = symbols_equal = 0
        worst = 0
        curves: dict[str, dict[int, list]] = {"light": {q: [] for q in QUALITIES}, "reference": {q: [] for q in QUALITIES}}
        for job in jobs:
            img = np.asarray(Image.open(job["image"]).convert("RGB"))
            light, reference = Path(job["light_file"]).read_bytes(), Path(job["reference_file"]).read_bytes()
            identical += light == reference
            ours_on_reference = np.asarray(aecodec.decompress(reference)).astype(np.int16)
            theirs_on_light = np.load(job["light_pixels_by_reference"]).astype(np.int16)
            ours_on_light = np.asarray(aecodec.decompress(light)).astype(np.int16)
            worst = max(worst, int(np.abs(ours_on_reference - np.load(job["reference_pixels"])).max()),
                        int(np.abs(ours_on_light - theirs_on_light).max()))
            z, y = light_symbols(reference)
            saved = np.load(job["reference_symbols"])
            symbols_equal += bool(np.array_equal(z, saved["z"]) and np.array_equal(y, saved["y"]))
            pixels = img.shape[0] * img.shape[1]
            curves["light"][job["quality"]].append((len(light) * 8 / pixels, psnr(img, ours_on_light)))
            curves["reference"][job["quality"]].append((len(reference) * 8 / pixels, psnr(img, np.load(job["reference_pixels"]))))
    mean = {k: [tuple(np.mean(v, axis=0)) for v in c.values()] for k, c in curves.items()}
    result = {"images": len(paths), "qualities": list(QUALITIES), "files": len(jobs),
              "byte_identical_files": identical, "files_with_identical_symbols": symbols_equal,
              "largest_pixel_difference": worst,
              "bd_rate_light_vs_reference_percent": bd_rate(mean["reference"], mean["light"]),
              "mean_curves": {k: [{"bpp": b, "psnr": p} for b, p in v] for k, v in mean.items()}}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "mean_curves"}, indent=1))


if __name__ == "__main__":
    main()
