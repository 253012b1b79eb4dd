import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aecodec import container
from aecodec.cli import main

from conftest import psnr, synthetic_image


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(synthetic_image(80, 120)).save(path)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_compress_then_decompress_with_default_names(png):
    r = run("compress", png, "-q", "8")
    assert r.exit_code == 0, r.output
    aec = png.with_suffix(".aec")
    assert aec.exists() and "bpp" in r.output
    # img.png exists: decompressing to the default name needs --force, and leaves it as it was
    before = png.read_bytes()
    r = run("decompress", aec)
    assert r.exit_code == 1 and "exists" in r.output and "--force" in r.output
    assert png.read_bytes() == before
    r = run("decompress", aec, "--force")
    assert r.exit_code == 0, r.output
    assert psnr(synthetic_image(80, 120), np.asarray(Image.open(png))) > 28


def test_output_name_and_format_from_extension(png, tmp_path):
    run("compress", png)
    out = tmp_path / "decoded.webp"
    r = run("decompress", png.with_suffix(".aec"), "-o", out)
    assert r.exit_code == 0, r.output
    assert Image.open(out).format == "WEBP"
    r = run("decompress", png.with_suffix(".aec"), "-o", tmp_path / "x.xyz")
    assert r.exit_code == 1 and "unknown output format" in r.output


def test_compress_refuses_to_overwrite(png):
    assert run("compress", png).exit_code == 0
    aec = png.with_suffix(".aec")
    first = aec.read_bytes()
    r = run("compress", png, "-q", "1")
    assert r.exit_code == 1 and "exists" in r.output
    assert aec.read_bytes() == first
    assert run("compress", png, "-q", "1", "--force").exit_code == 0
    assert aec.read_bytes() != first


def test_info_shows_header(png):
    run("compress", png, "-q", "2.5")
    r = run("info", png.with_suffix(".aec"))
    assert r.exit_code == 0, r.output
    assert "120x80 RGB" in r.output and "quality:    2.5" in r.output and "CRC ok" in r.output
    assert f"format version {container.VERSION}," in r.output


def test_info_shows_the_files_own_format_version():
    r = run("info", Path(__file__).parent / "data/v1-synthetic-80x144-q3-tile64.aec")
    assert r.exit_code == 0 and "format version 1," in r.output


def test_not_an_image_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is text")
    r = run("compress", bad)
    assert r.exit_code == 1
    assert "not an image" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "bad.aec").exists() and not leftovers(tmp_path)


def test_corrupt_aec_fails_without_partial_output(png, tmp_path):
    run("compress", png)
    aec = png.with_suffix(".aec")
    data = bytearray(aec.read_bytes())
    data[-10] ^= 0xFF
    aec.write_bytes(bytes(data))
    out = tmp_path / "out.png"
    r = run("decompress", aec, "-o", out)
    assert r.exit_code == 1 and "CRC" in r.output
    assert not out.exists() and not leftovers(tmp_path)
    r = run("info", aec)
    assert r.exit_code == 1 and "CRC" in r.output


def test_jpeg_output_of_alpha_image_is_refused(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.dstack([synthetic_image(40, 40), np.full((40, 40), 7, np.uint8)]), "RGBA").save(src)
    run("compress", src)
    r = run("decompress", src.with_suffix(".aec"), "-o", tmp_path / "a.jpg")
    assert r.exit_code == 1 and "alpha" in r.output and not (tmp_path / "a.jpg").exists()


def test_usage_errors(png, tmp_path):
    assert run("compress", tmp_path / "missing.png").exit_code == 2
    assert run("compress", png, "-q", "9").exit_code == 2
    assert run("decompress", png, "-o", png).exit_code == 1  # would overwrite the input
    r = run("--version")
    assert r.exit_code == 0 and f"format version {container.VERSION}" in r.output and "model" in r.output


def test_output_folder_must_exist(png, tmp_path):
    r = run("compress", png, "-o", tmp_path / "nowhere" / "x.aec")
    assert r.exit_code == 1 and "does not exist" in r.output


def test_batch_reports_failures_and_goes_on(tmp_path):
    for i in range(2):
        Image.fromarray(synthetic_image(40, 56, seed=i)).save(tmp_path / f"ok{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    outdir = tmp_path / "out"
    r = run("compress", tmp_path / "ok0.png", tmp_path / "broken.png", tmp_path / "ok1.png", "-o", outdir)
    assert r.exit_code == 1
    assert "broken.png is not an image" in r.output and "2 files" in r.output and "1 failed" in r.output
    assert sorted(p.name for p in outdir.iterdir()) == ["ok0.aec", "ok1.aec"]

    r = run("decompress", outdir / "ok0.aec", outdir / "ok1.aec", "-o", tmp_path / "dec", "--json")
    assert r.exit_code == 0, r.output
    import json

    report = json.loads(r.output[r.output.index("{"):])
    assert report["summary"]["files"] == 2 and not report["failed"]
    assert {f["size"] for f in report["files"]} == {"56x40"}


def test_batch_in_parallel(tmp_path):
    images = [synthetic_image(48, 64, seed=i) for i in range(2)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
    r = run("compress", tmp_path / "p0.png", tmp_path / "p1.png", "-o", tmp_path / "out", "-j", "2", "-q", "8")
    assert r.exit_code == 0, r.output
    r = run("decompress", tmp_path / "out" / "p0.aec", tmp_path / "out" / "p1.aec", "-o", tmp_path / "dec", "-j", "2")
    assert r.exit_code == 0, r.output
    for i, img in enumerate(images):
        assert psnr(img, np.asarray(Image.open(tmp_path / "dec" / f"p{i}.png"))) > 28


def test_batch_output_name_clash_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in "ab":
        Image.fromarray(synthetic_image(8, 8)).save(tmp_path / d / "x.png")
    r = run("compress", tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", "-o", tmp_path / "out")
    assert r.exit_code == 1 and "would both be written" in r.output


def test_rate_control_options(png, tmp_path):
    r = run("compress", png, "-o", tmp_path / "s.aec", "--size", "3KB")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.aec").stat().st_size <= 3000 and "encodes" in r.output
    assert run("compress", png, "--size", "12 parsecs").exit_code == 2
    assert run("compress", png, "--bpp", "1", "--psnr", "30").exit_code == 2
    r = run("compress", png, "-o", tmp_path / "t.aec", "--size", "100B", "--strict")
    assert r.exit_code == 1 and "asked at most 100 bytes" in r.stderr and "--strict" in r.stderr
    assert not (tmp_path / "t.aec").exists()
    assert run("compress", png, "--strict").exit_code == 2  # --strict needs a target


def test_rate_control_reports_a_missed_target(png, tmp_path):
    """Written at the nearest quality, with one line on stderr and in --json; --strict makes it an error."""
    r = run("compress", png, "-o", tmp_path / "low.aec", "--bpp", "0.001")
    assert r.exit_code == 0 and (tmp_path / "low.aec").exists()
    warning = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "asked 0.001 bpp, reached" in warning[0] and "lowest quality (1)" in warning[0]
    r = run("compress", png, "-o", tmp_path / "high.aec", "--psnr", "99", "--json")
    assert r.exit_code == 0
    result = json.loads(r.stdout)["files"][0]
    assert result["quality"] == 8 and "asked 99 dB" in result["missed"] and "highest quality (8)" in result["missed"]
    met = json.loads(run("compress", png, "-o", tmp_path / "met.aec", "--psnr", "10", "--json").stdout)["files"][0]
    assert met["missed"] is None
    copy = tmp_path / "copy.png"
    copy.write_bytes(png.read_bytes())
    (tmp_path / "out").mkdir()
    r = run("compress", png, copy, "-o", tmp_path / "out", "--bpp", "0.001", "--strict")
    assert r.exit_code == 1 and r.stderr.count("--strict: nothing written") == 2 and not any((tmp_path / "out").iterdir())


def test_progress_bar_only_for_large_images(png, tmp_path):
    assert "compressing" not in run("compress", png, "-o", tmp_path / "small.aec").stderr
    large = tmp_path / "large.png"
    Image.fromarray(synthetic_image(1040, 1100)).save(large)  # 3x3 windows
    r = run("compress", large, "-q", "1")
    assert r.exit_code == 0 and "compressing" in r.stderr


def test_heads_from_the_command_line(png, tmp_path):
    r = run("compress", png, "-q", "7")
    assert r.exit_code == 0, r.output
    big = tmp_path / "big.png"
    r = run("decompress", png.with_suffix(".aec"), "--scale", "2", "-o", big)
    assert r.exit_code == 0, r.output
    assert Image.open(big).size == (240, 160) and "240x160" in r.output

    r = run("upscale", png)
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "img.x2.png").size == (240, 160)

    noisy = tmp_path / "noisy.png"
    rng = np.random.default_rng(0)
    Image.fromarray(np.clip(synthetic_image(80, 120) + rng.normal(0, 20, (80, 120, 3)), 0, 255).astype(np.uint8)).save(noisy)
    r = run("denoise", noisy)
    assert r.exit_code == 0, r.output
    assert "noise sigma" in r.output and Image.open(tmp_path / "noisy.denoised.png").size == (120, 80)
    r = run("denoise", noisy, "--fast", "-o", tmp_path / "fast.png")
    assert r.exit_code == 0, r.output
    fast, full = (np.asarray(Image.open(tmp_path / name)) for name in ("fast.png", "noisy.denoised.png"))
    assert fast.shape == full.shape and not np.array_equal(fast, full)  # --fast skips the collaborative filter
    r = run("compress", noisy, "--denoise", "--sigma", "20", "-o", tmp_path / "clean.aec")
    assert r.exit_code == 0 and "noise sigma 20.0" in r.output, r.output
    assert run("decompress", tmp_path / "clean.aec").exit_code == 0  # the ordinary decoder


@pytest.mark.parametrize("args, message", [
    (["--sigma", "10"], "--sigma goes with --denoise"),
    (["--denoise", "--bpp", "1"], "--denoise works with --quality"),
    (["--denoise", "--sigma", "90"], "0<=x<=75"),
])
def test_denoise_option_errors(png, args, message):
    r = run("compress", png, *args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_a_fresh_process_prints_no_warnings(png, tmp_path):
    """The command as a user starts it: no warnings from the libraries' imports on stderr."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from aecodec.cli import main; main()", "denoise", str(png), "-o",
                        str(tmp_path / "w.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr
