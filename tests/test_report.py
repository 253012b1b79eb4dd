import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks import report

from conftest import synthetic_image


def fake_results(folder, image_name, width=256, height=192):
    """Result files in benchmarks.classical's format, with made-up but plausible curves."""
    curves = {"jpeg2000": (1.0, "target_bpp", [0.25, 0.5, 1.0, 2.0]),
              "jpeg-444": (1.3, "quality", [20, 50, 80, 92]),
              "aecodec": (0.9, "quality", [1, 3, 5, 8])}
    for name, (factor, key, settings) in curves.items():
        rows = []
        for i, s in enumerate(settings):
            bpp = [0.25, 0.5, 1.0, 2.0][i] * factor
            psnr = 30 + 4 * np.log2(bpp / factor / 0.5)
            rows.append({"image": image_name, key: s, "width": width, "height": height, "bpp": bpp, "psnr": psnr,
                         "msssim": 1 - 10 ** (-(psnr - 18) / 10), "msssim_db": psnr - 18, "encode_s": 0.1,
                         "decode_s": 0.05, "peak_rss_growth_kib": 2048})
        mean = [{key: r[key], "images": 1, **{m: r[m] for m in ("bpp", "psnr", "msssim", "msssim_db")}} for r in rows]
        doc = {"codec": name, "dataset": "synthetic", "version": "test", "settings": {"sweep": key},
               "setting_name": key, "images_in_folder": 1, "machine": {"cpu": "test", "cores": 2},
               "results": rows, "mean": mean}
        (folder / f"synthetic-{name}.json").write_text(json.dumps(doc))


def test_bd_rates_follow_the_curves(tmp_path):
    fake_results(tmp_path, "a.png")
    bd = report.bd_table(report.load_results(tmp_path))
    assert bd["jpeg2000"]["psnr"] == pytest.approx(0, abs=1e-9)
    assert bd["aecodec"]["psnr"] == pytest.approx(-10, abs=1e-6)   # 0.9x the rate at every quality
    assert bd["jpeg-444"]["msssim_db"] == pytest.approx(30, abs=1e-6)


def fake_heads(path):
    """Per-image rows as benchmarks.heads writes them, two images a set, summarised by its own code."""
    from benchmarks import heads

    def baseline_row(offset):
        return {str(s): {"noisy": 20.0 - s / 10, "nlm": 27.0 + offset, "bm3d": 29.0 + offset} for s in heads.SIGMAS}

    def denoise_row(offset):
        return {str(s): {"aecodec": 28.0 + offset, "aecodec_estimated": 27.9, "aecodec_no_refiner": 27.5,
                         "estimated_sigma": s + 1.0, "rate_plain_bpp": 3.0, "rate_plain_psnr": 25.0,
                         "rate_denoise_bpp": 1.0, "rate_denoise_psnr": 29.0} for s in heads.SIGMAS}

    def sr_row(dataset, image, offset):
        keys = ("bicubic", "upscale_q8", "decompress_x2_q8", "decoded_bicubic_q8", "upscale_q4", "decompress_x2_q4",
                "decoded_bicubic_q4")
        return {"dataset": dataset, "image": image, **{k: 30.0 + i + offset for i, k in enumerate(keys)}}

    results = {"baselines": {f"kodak/{i}": baseline_row(i) for i in range(2)},
               "denoise": {f"kodak/{i}": denoise_row(i) for i in range(2)},
               "sr": {f"Set5/{i}": sr_row("Set5", str(i), 2 * i) for i in range(2)},
               "published": heads.PUBLISHED, "costs": {"image": "a.png", "threads": 2, "sr_parameters": 1000}}
    results["summary"] = heads.summarise(results)
    assert results["summary"]["denoising"]["kodak sigma 25"]["bm3d"] == 29.5
    path.write_text(json.dumps(results))


def test_report_is_written_and_renders_in_chromium(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(synthetic_image(192, 256)).save(images / "a.png")
    fake_results(tmp_path, "a.png")
    fake_heads(tmp_path / "heads.json")
    report.main([str(tmp_path), "--images", str(images), "--crop-image", "a.png", "--crop-box", "0,0,96,96",
                 "--heads", str(tmp_path / "heads.json")])
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 + 4  # two plots, original + three codecs
    assert 'id="bd-rates"' in page and "-10.0%" in page
    assert 'id="denoising"' in page and "<td>29.50</td>" in page and "<td>32.00</td>" in page  # bm3d at sigma 25, Set5 upscale q8
    assert (tmp_path / "rd-psnr.svg").exists() and (tmp_path / "rd-msssim_db.png").exists()
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    tables = ("bd-rates", "speed", "settings", "denoising", "denoise-rate", "super-resolution", "head-costs")
    assert "6/6 images loaded" in report.check_in_chromium(tmp_path / "report.html", tables)
