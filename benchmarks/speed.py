"""Speed and memory of aecodec against the classical codecs' decoders and encoders, in one run.

    python -m benchmarks.speed IMAGE.png [IMAGE.png ...] [--qualities 1,4,8] [--repeat 5] [--threads 2]
        [--out speed.json] [--markdown speed.md]

For each image and quality, in process (medians of `--repeat` calls after one warm-up, the weights
and graphs loaded): `aecodec.compress` / `aecodec.decompress` on `--threads` threads, and the
decoders of JPEG 2000, WebP, AVIF and JPEG XL (`benchmarks.codecs`, at their best settings, one
thread each) on files of the same image at the nearest rate they reach; JPEG 2000 is also timed
encoding, since it is the bar's anchor. Where aecodec's time goes: the stages of one decode and one
encode (cumulative seconds of the functions named in STAGES, under cProfile), and the time to open
each graph's session. Whole commands:
`aecodec compress` / `aecodec decompress` and a Python process doing the same work with Pillow's
JPEG 2000 (reading or writing a PNG at aecodec's zlib level), each under `/usr/bin/time -v`
(start-up included; wall seconds and peak RSS, medians of `--repeat`), and where one of each goes
(its stages under cProfile, start-up and imports included).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import codecs

# Stages of a decode and an encode: (label, module file, function) as cProfile names them.
STAGES = {
    "decode": [("container parse", "container.py", "parse"), ("entropy decoding", "entropy.py", "decode"),
               ("h_s (integer, exact)", "integer.py", "__call__"), ("g_s", "runtime.py", "synthesise")],
    "encode": [("g_a", "runtime.py", "analyse"), ("h_a", "runtime.py", "hyper_analyse"),
               ("h_s (integer, exact)", "integer.py", "__call__"), ("entropy coding", "entropy.py", "encode"),
               ("container build", "container.py", "build")],
}
# Stages of a whole command (`python -m cProfile -m aecodec.cli ...`): start-up and imports are the
# process's time outside the command's own function; g_a and g_s include opening their session.
COMMAND_STAGES = {
    "decompress": [("weights (verify, map)", "weights.py", "load_coding_model"),
                   ("entropy decoding", "entropy.py", "decode"), ("h_s build (integer)", "integer.py", "__init__"),
                   ("h_s run (integer)", "integer.py", "__call__"), ("g_s (with its session)", "runtime.py", "synthesise"),
                   ("PNG write", "transcode.py", "save_image")],
    "compress": [("weights (verify, map)", "weights.py", "load_coding_model"), ("file read", "cli.py", "_read"),
                 ("PNG decode", "ImageFile.py", "load"),
                 ("g_a (with its session)", "runtime.py", "analyse"), ("h_a (with its session)", "runtime.py", "hyper_analyse"),
                 ("h_s build (integer)", "integer.py", "__init__"), ("h_s run (integer)", "integer.py", "__call__"),
                 ("entropy coding", "entropy.py", "encode")],
}
CLASSICAL = ("jpeg2000", "webp", "avif", "jxl")


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
    return codecs.jpeg2000.encode(np.asarray(image.convert("RGB")), bpp)


def at_rate(codec: codecs.Codec, img: np.ndarray, bpp: float) -> bytes:
    """The codec's file of `img` nearest to `bpp`: JPEG 2000 is asked the rate; the others' setting is
    bisected between the ends of their sweep (size grows along it)."""
    if codec.name == "jpeg2000":
        return codec.encode(img, bpp)
    pixels = img.shape[0] * img.shape[1]
    lo, hi = float(codec.settings[0]), float(codec.settings[-1])
    integer = all(isinstance(s, int) for s in codec.settings)
    best = None
    for _ in range(12):
        mid = (lo + hi) / 2
        data = codec.encode(img, round(mid) if integer else mid)
        if best is None or abs(len(data) * 8 / pixels - bpp) < abs(len(best) * 8 / pixels - bpp):
            best = data
        if len(data) * 8 / pixels < bpp:
            lo = mid
        else:
            hi = mid
    return best


def timed(cmd: list[str], repeat: int) -> dict:
    """Medians of wall seconds and peak RSS (MB) of `cmd` under /usr/bin/time -v, after one warm-up."""
    walls, peaks = [], []
    for i in range(repeat + 1):
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        if not i:
            continue
        clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
        walls.append(sum(float(part) * 60**i for i, part in enumerate(reversed(clock.split(":")))))
        peaks.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 1000)
    return {"wall_s": round(statistics.median(walls), 3), "peak_rss_mb": round(statistics.median(peaks), 1)}


def _cumulative(stats: dict, file: str, name: str) -> float:
    return sum(v[3] for (f, _, n), v in stats.items() if f.endswith(file) and n == name)


def command_stages(cmd: list[str], kind: str) -> dict:
    """Seconds of each stage of one whole command (`cmd` after `python -m aecodec.cli`) under cProfile,
    the start-up and imports, and the whole process's wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "profile"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "aecodec.cli", *cmd],
                       check=True, capture_output=True)
        wall = time.perf_counter() - t
        stats = pstats.Stats(str(out)).stats
    command = _cumulative(stats, "cli.py", "_run")
    row = {"start-up and imports": round(wall - command, 4)}
    for label, file, name in COMMAND_STAGES[kind]:
        row[label] = round(_cumulative(stats, file, name), 4)
    row["rest"] = round(wall - sum(row.values()), 4)
    row["all"] = round(wall, 4)
    return row


def session_opening(repeat: int) -> dict:
    """Milliseconds to open each graph's ONNX Runtime session (medians of `repeat`, the weights mapped):
    what a command pays once for each graph it needs."""
    from aecodec import codec, runtime

    _, model = codec.coding_model()
    opened = {name: lambda name=name: model._graph(name) for name in ("analysis", "hyper_analysis", "synthesis")}
    opened["float64 matmul (h_s)"] = runtime.MatMul64
    return {name: round(median_time(fn, repeat) * 1000, 1) for name, fn in opened.items()}


def stages(fn, kind: str) -> dict:
    """Seconds of each stage of one call of `fn` (cumulative, under cProfile), and of the whole call."""
    profile = cProfile.Profile()
    t = time.perf_counter()
    profile.runcall(fn)
    total = time.perf_counter() - t
    stats = pstats.Stats(profile).stats
    out = {}
    for label, file, name in STAGES[kind]:
        out[label] = round(_cumulative(stats, file, name), 4)
    out["rest"] = round(total - sum(out.values()), 4)
    out["all"] = round(total, 4)
    return out


def machine() -> str:
    """The CPU's model name and the instruction sets that matter to the kernels."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s+(.+)", text)
    flags = set(re.search(r"Flags:\s+(.+)", text).group(1).split()) if "Flags:" in text else set()
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"]
    return f"{model.group(1).strip() if model else 'unknown CPU'} ({', '.join(f for f in wanted if f in flags)})"


def whole_commands(path: Path, data: bytes, bpp: float, quality: float, repeat: int) -> dict:
    from aecodec.transcode import PNG_LEVEL

    j2k = jpeg2000(Image.open(path), bpp)
    with tempfile.TemporaryDirectory() as tmp:
        aec, jp2, png = Path(tmp) / "x.aec", Path(tmp) / "x.jp2", Path(tmp) / "x.png"
        aec.write_bytes(data)
        jp2.write_bytes(j2k)
        cli = [sys.executable, "-m", "aecodec.cli"]
        pillow = [sys.executable, "-c"]
        rows = {
            "aecodec compress": timed(cli + ["compress", str(path), "-o", str(aec), "-q", str(quality), "--force"], repeat),
            "jpeg2000 encode (python -c)": timed(pillow + [
                f"from PIL import Image; Image.open({str(path)!r}).convert('RGB').save({str(jp2)!r}, "
                f"irreversible=True, mct=1, quality_mode='rates', quality_layers=[{24 / bpp}])"], repeat),
            "aecodec decompress": timed(cli + ["decompress", str(aec), "-o", str(png), "--force"], repeat),
            "jpeg2000 decode (python -c)": timed(pillow + [
                f"from PIL import Image; Image.open({str(jp2)!r}).save({str(png)!r}, compress_level={PNG_LEVEL})"], repeat),
        }
        rows["stages"] = {"compress": command_stages(["compress", str(path), "-o", str(aec), "-q", str(quality), "--force"],
                                                     "compress"),
                          "decompress": command_stages(["decompress", str(aec), "-o", str(png), "--force"], "decompress")}
    rows["ratio compress / jpeg2000"] = round(rows["aecodec compress"]["wall_s"] / rows["jpeg2000 encode (python -c)"]["wall_s"], 2)
    rows["ratio decompress / jpeg2000"] = round(rows["aecodec decompress"]["wall_s"] / rows["jpeg2000 decode (python -c)"]["wall_s"], 2)
    return rows


def markdown(result: dict) -> str:
    lines = [f"# Speed: {result['machine']}, {result['threads']} threads for aecodec, one for the others", "",
             "In process, medians (ms); the classical files at the rate nearest to aecodec's:", "",
             "| image | q | bpp | aecodec decode | encode | " + " | ".join(f"{c} decode" for c in CLASSICAL)
             + " | jpeg2000 encode | decode / jpeg2000 | encode / jpeg2000 |", "|" + "---|" * (8 + len(CLASSICAL))]
    for r in result["in_process"]:
        ms = lambda s: f"{s * 1000:.1f}"  # noqa: E731
        lines.append(f"| {r['image']} | {r['quality']:g} | {r['bpp']:.3f} | {ms(r['aecodec decode'])} | {ms(r['aecodec encode'])} | "
                     + " | ".join(f"{ms(r[c]['decode'])} ({r[c]['bpp']:.3f} bpp)" for c in CLASSICAL)
                     + f" | {ms(r['jpeg2000']['encode'])} | {r['decode ratio']:.1f}x | {r['encode ratio']:.1f}x |")
    lines += ["", f"Medians over the rows: decode {result['median decode ratio']:.1f}x JPEG 2000's, encode "
              f"{result['median encode ratio']:.1f}x.", ""]
    for kind in ("decode", "encode"):
        row = result["stages"][kind]
        lines += [f"Where one {kind} goes ({result['stages']['image']}, ms):", "", "| " + " | ".join(row) + " |",
                  "|" + "---|" * len(row), "| " + " | ".join(f"{v * 1000:.1f}" for v in row.values()) + " |", ""]
    lines += ["Opening a graph's session (ms, medians): " + ", ".join(f"{k} {v}" for k, v in result["session_ms"].items()), ""]
    lines += ["Whole commands (wall s, peak RSS MB, medians):", "", "| image | command | wall s | peak MB |", "|---|---|---|---|"]
    for image, rows in result["whole_command"].items():
        for name, v in rows.items():
            if name == "stages":
                continue
            lines.append(f"| {image} | {name} | {v['wall_s'] if isinstance(v, dict) else v} | "
                         f"{v['peak_rss_mb'] if isinstance(v, dict) else ''} |")
    for image, rows in result["whole_command"].items():
        for kind, row in rows.get("stages", {}).items():
            lines += ["", f"Where one whole `aecodec {kind}` goes ({image}, ms, under cProfile):", "",
                      "| " + " | ".join(row) + " |", "|" + "---|" * len(row),
                      "| " + " | ".join(f"{v * 1000:.0f}" for v in row.values()) + " |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", type=Path, nargs="+")
    ap.add_argument("--qualities", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    import aecodec
    from aecodec.runtime import set_threads

    set_threads(args.threads)
    qualities = [float(q) for q in args.qualities.split(",")]
    result: dict = {"machine": machine(), "threads": args.threads, "in_process": [], "whole_command": {},
                    "versions": {c: codecs.CODECS[c].version() for c in CLASSICAL}}
    for path in args.images:
        image = Image.open(path).convert("RGB")
        img = np.asarray(image)
        for q in qualities:
            data = aecodec.compress(image, q)
            bpp = len(data) * 8 / (image.width * image.height)
            row: dict = {"image": path.stem, "quality": q, "bpp": round(bpp, 4),
                         "aecodec encode": median_time(lambda: aecodec.compress(image, q), args.repeat),
                         "aecodec decode": median_time(lambda: aecodec.decompress(data), args.repeat)}
            for name in CLASSICAL:
                codec = codecs.CODECS[name]
                coded = at_rate(codec, img, bpp)
                row[name] = {"bpp": round(len(coded) * 8 / img.shape[0] / img.shape[1], 4),
                             "decode": median_time(lambda: codec.decode(coded), args.repeat)}
            row["jpeg2000"]["encode"] = median_time(lambda: codecs.JPEG_2000.encode(img, bpp), args.repeat)
            row["decode ratio"] = row["aecodec decode"] / row["jpeg2000"]["decode"]
            row["encode ratio"] = row["aecodec encode"] / row["jpeg2000"]["encode"]
            result["in_process"].append(row)
            print(json.dumps(row), flush=True)
            if q == qualities[len(qualities) // 2]:
                result["whole_command"][path.stem] = whole_commands(path, data, bpp, q, args.repeat)
                print(json.dumps(result["whole_command"][path.stem]), flush=True)
    first = args.images[0]
    image = Image.open(first).convert("RGB")
    data = aecodec.compress(image, qualities[len(qualities) // 2])
    result["stages"] = {"image": first.stem, "decode": stages(lambda: aecodec.decompress(data), "decode"),
                        "encode": stages(lambda: aecodec.compress(image, qualities[len(qualities) // 2]), "encode")}
    result["session_ms"] = session_opening(args.repeat)
    result["median decode ratio"] = statistics.median(r["decode ratio"] for r in result["in_process"])
    result["median encode ratio"] = statistics.median(r["encode ratio"] for r in result["in_process"])
    print(markdown(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(result))


if __name__ == "__main__":
    main()
