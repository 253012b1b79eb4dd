"""One self-contained HTML report from the benchmark results: RD plots, BD-rates, speed, crops, heads.

    python -m benchmarks.report benchmarks/results/kodak --images ../shared/data/kodak \
        --anchors ../shared/anchors/compressai-kodak [--heads benchmarks/results/heads/heads.json] [--check]

Reads every `<dataset>-<codec>.json` written by `benchmarks.classical` (aecodec included) in the
results folder and writes `report.html` (plots and crops embedded, no external files), the plots as
PNG and SVG, and `bd-rates.json`. BD-rates are against JPEG 2000 (benchmarks/bdrate.py: pchip on
log-rate over the overlapping quality range). `--check` renders the page in headless Chromium and
fails unless every image loaded and every table is there.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bdrate import bd_rate
from benchmarks.codecs import CODECS

ANCHOR = "jpeg2000"
OURS = "aecodec"
METRICS = (("psnr", "PSNR-RGB (dB)"), ("msssim_db", "MS-SSIM (dB)"))
# Published curves from CompressAI's results folder, drawn dashed for reference.
PUBLISHED = {"compressai-mbt2018-mean_mse_cpu.json": "mbt2018-mean (published, converged)",
             "compressai-bmshj2018-hyperprior_mse_cpu.json": "bmshj2018-hyperprior (published, converged)"}


def load_results(folder: Path) -> dict[str, dict]:
    docs = {}
    for path in sorted(folder.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "codec" in doc and doc.get("mean"):
            docs[doc["codec"]] = doc
    if ANCHOR not in docs:
        raise SystemExit(f"no {ANCHOR} results in {folder}: run benchmarks.classical first")
    return docs


def reader_name(doc: dict) -> str:
    """What readers call the codec of a results file: "JPEG XL (libjxl 0.11.1, effort 7)", not "jxl"."""
    codec = CODECS.get(doc["codec"])
    return codec.label(doc) if codec else doc["codec"]


def curve(doc: dict, metric: str) -> list[tuple[float, float]]:
    return [(m["bpp"], m[metric]) for m in doc["mean"] if m.get(metric) is not None and m["bpp"] > 0]


def bd_table(docs: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    table = {}
    for name, doc in docs.items():
        row = {}
        for metric, _ in METRICS:
            try:
                row[metric] = bd_rate(curve(docs[ANCHOR], metric), curve(doc, metric))
            except ValueError:
                row[metric] = None  # no overlap, or too few points
        table[name] = row
    return table


def load_published(anchors: Path | None) -> dict[str, list[tuple[float, float, float]]]:
    out = {}
    if anchors is None:
        return out
    for file, label in PUBLISHED.items():
        path = anchors / file
        if path.exists():
            r = json.loads(path.read_text())["results"]
            msssim_db = [-10 * np.log10(1 - v) for v in r["ms-ssim-rgb"]]
            out[label] = list(zip(r["bpp"], r["psnr-rgb"], msssim_db))
    return out


def plot(docs: dict[str, dict], published: dict, metric: str, label: str, out: Path) -> bytes:
    """Draw one RD plot, save it as PNG and SVG beside the report, return the PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "aecodec"  # the same results give the same SVG bytes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for name, doc in docs.items():
        pts = sorted(curve(doc, metric))
        ours = name == OURS
        ax.plot(*zip(*pts), marker="o", markersize=3 if not ours else 5, linewidth=2.6 if ours else 1.2,
                color="black" if ours else None, label=reader_name(doc), zorder=3 if ours else 2)
    for name, pts in published.items():
        column = 1 if metric == "psnr" else 2
        ax.plot([p[0] for p in pts], [p[column] for p in pts], linestyle="--", linewidth=1.2, label=name)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(label)
    ax.set_xlim(0, 2.2)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{label} on {docs[ANCHOR]['dataset']} (mean over images)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".svg"), metadata={"Date": None})
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out.with_suffix(".png").write_bytes(buf.getvalue())
    plt.close(fig)
    return buf.getvalue()


def speed_rows(docs: dict[str, dict]) -> list[tuple[str, float, float, float]]:
    """Per codec: encode and decode seconds per megapixel, and peak memory growth (MiB), over all runs."""
    rows = []
    for name, doc in docs.items():
        runs = doc["results"]
        mp = np.array([r["width"] * r["height"] / 1e6 for r in runs])
        enc = float(np.mean([r["encode_s"] for r in runs] / mp))
        dec = float(np.mean([r["decode_s"] for r in runs] / mp))
        mem = max(r.get("peak_rss_growth_kib", 0) for r in runs) / 1024
        rows.append((reader_name(doc), enc, dec, mem))
    return sorted(rows, key=lambda r: r[1])


def crops(docs: dict[str, dict], bd: dict, images: Path, image: str, box: tuple[int, int, int, int]) -> list[tuple[str, bytes]]:
    """Crops of one image at about aecodec's bpp near 0.5: aecodec, JPEG 2000, the best other codec."""
    src = np.asarray(Image.open(images / image).convert("RGB"))
    h, w = src.shape[:2]
    others = [n for n in docs if n not in (OURS, ANCHOR) and bd[n]["psnr"] is not None]
    best = min(others, key=lambda n: bd[n]["psnr"]) if others else None
    ours = [r for r in docs[OURS]["results"] if r["image"] == image] if OURS in docs else []
    target = min(ours, key=lambda r: abs(r["bpp"] - 0.5))["bpp"] if ours else 0.5
    out = [("original", src)]
    for name in [n for n in (OURS, ANCHOR, best) if n and n in docs]:
        doc = docs[name]
        key = doc["setting_name"]
        runs = [r for r in doc["results"] if r["image"] == image]
        setting = target if name == ANCHOR else min(runs, key=lambda r: abs(r["bpp"] - target))[key]
        size, decoded = CODECS[name].encode_decode(src, setting)
        psnr = 10 * np.log10(255**2 / np.mean((src.astype(float) - decoded) ** 2))
        out.append((f"{reader_name(doc)}: {size * 8 / (w * h):.3f} bpp, {psnr:.2f} dB", decoded))
    left, top, right, bottom = box
    result = []
    for label, pixels in out:
        buf = io.BytesIO()
        Image.fromarray(pixels[top:bottom, left:right]).resize(((right - left) * 2, (bottom - top) * 2), Image.NEAREST).save(buf, "PNG")
        result.append((label, buf.getvalue()))
    return result


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def render(docs, bd, plots, speed, crop_list, crop_image, heads: str = "") -> str:
    e = html.escape
    dataset = docs[ANCHOR]["dataset"]
    machine = docs[ANCHOR].get("machine", {})

    def pct(v):
        return "n/a" if v is None else f"{v:+.1f}%"

    bd_rows = "".join(
        f"<tr><td>{e(reader_name(docs[n]))}</td><td>{pct(bd[n]['psnr'])}</td><td>{pct(bd[n]['msssim_db'])}</td>"
        f"<td>{e(docs[n].get('version', ''))}</td></tr>"
        for n in sorted(docs, key=lambda n: (bd[n]["psnr"] is None, bd[n]["psnr"] or 0)))
    speed_html = "".join(f"<tr><td>{e(n)}</td><td>{a:.3f}</td><td>{b:.3f}</td><td>{m:.0f}</td></tr>" for n, a, b, m in speed)
    settings = "".join(f"<tr><td>{e(reader_name(d))}</td><td><code>{e(json.dumps(d.get('settings', {})))}</code></td></tr>"
                       for d in docs.values())
    figs = "".join(f'<figure><img src="{data_uri(png)}" alt="{e(label)}"><figcaption>{e(label)}</figcaption></figure>'
                   for label, png in plots)
    crop_html = "".join(f'<figure><img src="{data_uri(png)}" alt="{e(label)}"><figcaption>{e(label)}</figcaption></figure>'
                        for label, png in crop_list)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>aecodec rate-distortion report: {e(dataset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} figure img {{ max-width: 100%; }} code {{ font-size: 0.8em; }}
.crops img {{ image-rendering: pixelated; }}
</style></head>
<body>
<h1>aecodec against classical codecs on {e(dataset)}</h1>
<p>{docs[ANCHOR]['images_in_folder']} images. bpp is the size of the whole file; PSNR-RGB and MS-SSIM are computed on the
8-bit decoded images and averaged over images per setting. Dashed curves are published figures of converged
CompressAI models, drawn for reference; they were not measured here. Machine: {e(str(machine.get('cpu', '')))},
{e(str(machine.get('cores', '')))} cores; every codec runs on one thread.</p>
<h2>Rate-distortion</h2>
{figs}
<h2>BD-rate against JPEG 2000</h2>
<p>Average bitrate difference at equal quality (negative: fewer bits than JPEG 2000); pchip interpolation of
log-rate over the overlapping quality range.</p>
<table id="bd-rates"><tr><th>codec</th><th>BD-rate (PSNR)</th><th>BD-rate (MS-SSIM)</th><th>version</th></tr>{bd_rows}</table>
<h2>Speed on this machine</h2>
<table id="speed"><tr><th>codec</th><th>encode s/MP</th><th>decode s/MP</th><th>peak memory growth (MiB)</th></tr>{speed_html}</table>
<h2>Side by side at about equal bpp ({e(crop_image)}, 2x enlarged)</h2>
<div class="crops">{crop_html}</div>
{heads}
<h2>Settings</h2>
<table id="settings"><tr><th>codec</th><th>settings</th></tr>{settings}</table>
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""


def heads_section(path: Path | None) -> str:
    """Tables of `benchmarks.heads` results (denoising, super-resolution, costs), or nothing."""
    if path is None:
        return ""
    doc = json.loads(path.read_text())
    e = html.escape
    summary = doc["summary"]

    def cells(row: dict, keys: tuple[str, ...]) -> str:
        return "".join(f"<td>{row[k]:.2f}</td>" if k in row else "<td>n/a</td>" for k in keys)

    dn_keys = ("noisy", "nlm", "bm3d", "aecodec", "aecodec_estimated", "aecodec_fast", "aecodec_no_refiner",
               "estimated_sigma", "bm3d_seconds", "aecodec_seconds", "aecodec_fast_seconds")
    dn_rows = "".join(f"<tr><td>{e(name)}</td><td>{row['images']}</td>{cells(row, dn_keys)}</tr>"
                      for name, row in summary["denoising"].items())
    rate_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{row['rate_plain_bpp']:.3f}</td><td>{row['rate_plain_psnr']:.2f}</td>"
        f"<td>{row['rate_denoise_bpp']:.3f}</td><td>{row['rate_denoise_psnr']:.2f}</td></tr>"
        for name, row in summary["denoising"].items() if "rate_plain_bpp" in row)
    sr_keys = ("bicubic", "upscale_q8", "decompress_x2_q8", "decoded_bicubic_q8", "upscale_q4", "decompress_x2_q4",
               "decoded_bicubic_q4")
    sr_rows = "".join(f"<tr><td>{e(name)}</td><td>{row['images']}</td>{cells(row, sr_keys)}</tr>"
                      for name, row in summary["super_resolution"].items())
    published = ", ".join(f"{e(k)} {v:.2f} dB" for k, v in doc.get("published", {}).items())
    costs = doc.get("costs", {})
    cost_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" if isinstance(v, float) else
                        f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in costs.items())
    return f"""<h2>Denoising and super-resolution heads</h2>
<p>Measured by <code>benchmarks/heads.py</code> (its docstring gives the protocol). Denoising: mean PSNR-RGB (dB)
against the clean images; aecodec at quality 8, told the true sigma, or the sigma it estimates; <code>--fast</code>
is the head without the collaborative filter. Seconds: one image, one thread (the benchmark runs images in parallel).</p>
<table id="denoising"><tr><th>set, noise</th><th>images</th><th>noisy</th><th>OpenCV NLM</th><th>CBM3D</th>
<th>aecodec denoise</th><th>aecodec, estimated sigma</th><th>aecodec --fast</th><th>aecodec, no refiner</th>
<th>estimated sigma</th><th>CBM3D s</th><th>aecodec s</th><th>aecodec --fast s</th></tr>{dn_rows}</table>
<p>Rate: the noisy image coded at quality 4, plainly and with <code>--denoise</code> (PSNR against the clean image).</p>
<table id="denoise-rate"><tr><th>set, noise</th><th>plain bpp</th><th>plain PSNR</th><th>--denoise bpp</th><th>--denoise PSNR</th></tr>{rate_rows}</table>
<p>Super-resolution x2: mean PSNR on BT.601 luma, 2 border pixels cropped. Published, for reference: {published}.</p>
<table id="super-resolution"><tr><th>set</th><th>images</th><th>bicubic</th><th>upscale q8</th><th>decompress --scale 2, q8</th>
<th>decoded q8, bicubic</th><th>upscale q4</th><th>decompress --scale 2, q4</th><th>decoded q4, bicubic</th></tr>{sr_rows}</table>
<p>Costs (seconds are the best of 3 on {e(str(costs.get('image', '')))}, {costs.get('threads', '')} threads):</p>
<table id="head-costs">{cost_rows}</table>
"""


def check_in_chromium(report: Path, tables: tuple[str, ...]) -> str:
    """Render the report in headless Chromium; return the summary, raise if images or tables are missing."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise SystemExit("chromium not found (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
        dom = subprocess.run([exe, *flags, "--dump-dom", report.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        subprocess.run([exe, *flags, "--window-size=1200,2400", f"--screenshot={report.with_suffix('.png')}",
                        report.resolve().as_uri()], capture_output=True, timeout=120)
    import re

    m = re.search(r'data-images="(\d+)/(\d+)"', dom)
    found = [t for t in tables if f'id="{t}"' in dom]
    if not m or m.group(1) != m.group(2) or m.group(2) == "0" or len(found) != len(tables):
        raise SystemExit(f"report check failed: images {m.group(0) if m else 'not counted'}, tables {found} of {tables}")
    return f"Chromium rendered {report.name}: {m.group(1)}/{m.group(2)} images loaded, tables {', '.join(found)}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--images", type=Path, required=True, help="the image folder the results were measured on")
    ap.add_argument("--anchors", type=Path, help="CompressAI's published results folder (drawn dashed)")
    ap.add_argument("--crop-image", default="kodim23.png")
    ap.add_argument("--crop-box", default="256,128,448,320", help="left,top,right,bottom")
    ap.add_argument("--check", action="store_true", help="render the report in headless Chromium and check it")
    ap.add_argument("--heads", type=Path, help="results of benchmarks.heads (JSON) to add to the report")
    args = ap.parse_args(argv)

    docs = load_results(args.results)
    bd = bd_table(docs)
    published = load_published(args.anchors)
    plots = [(label, plot(docs, published, metric, label, args.results / f"rd-{metric}")) for metric, label in METRICS]
    speed = speed_rows(docs)
    box = tuple(int(v) for v in args.crop_box.split(","))
    crop_list = crops(docs, bd, args.images, args.crop_image, box)
    report = args.results / "report.html"
    report.write_text(render(docs, bd, plots, speed, crop_list, args.crop_image, heads_section(args.heads)))
    (args.results / "bd-rates.json").write_text(json.dumps(bd, indent=1) + "\n")
    print(f"wrote {report}")
    for name, row in sorted(bd.items(), key=lambda kv: (kv[1]["psnr"] is None, kv[1]["psnr"] or 0)):
        fmt = lambda v: "n/a" if v is None else f"{v:+.1f}%"  # noqa: E731
        print(f"  {name:10s} BD-rate PSNR {fmt(row['psnr']):>8}  MS-SSIM {fmt(row['msssim_db']):>8}")
    for name, enc, dec, mem in speed:
        print(f"  {name:10s} encode {enc:.3f} s/MP  decode {dec:.3f} s/MP  memory {mem:.0f} MiB")
    if args.check:
        heads = ("denoising", "denoise-rate", "super-resolution", "head-costs") if args.heads else ()
        print(check_in_chromium(report, ("bd-rates", "speed", "settings", *heads)))


if __name__ == "__main__":
    main()
