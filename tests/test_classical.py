"""benchmarks/classical.py: every classical codec round-trips, and the JSON writer resumes."""
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import classical, codecs, jpeg2000

# One middle setting per codec. On a 64x48 image the containers' headers are a large part of the
# file, so the JPEG 2000 target sits a little higher than its sweep's middle.
MIDDLE = {"jpeg-420": 50, "jpeg-444": 50, "jpeg2000": 1.5, "webp": 70, "avif": 72, "heic": 44, "jxl": 2.5}
NEEDS = {"heic": "pillow_heif", "jxl": "imagecodecs"}


def make_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """Gradients + a checkerboard + mild noise, HxWx3 uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    checker = ((xx // 8 + yy // 8) % 2) * 60.0
    r = 40 + 170 * xx / (width - 1) + checker * 0.5
    g = 200 - 150 * yy / (height - 1) + checker * 0.3
    b = 60 + 80 * (xx + yy) / (width + height - 2) + checker
    img = np.dstack([r, g, b]) + rng.normal(0, 3, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def test_every_codec_listed():
    assert set(codecs.CODECS) == set(MIDDLE) | {"aecodec"}  # the explicit list: the classical codecs and ours
    for name in MIDDLE:
        codec = codecs.CODECS[name]
        assert 8 <= len(codec.settings) <= 10, name
        assert len(set(codec.settings)) == len(codec.settings), name
        assert MIDDLE[name] in codec.settings, name
        assert codec.description and codec.setting_name


@pytest.mark.parametrize("name", list(MIDDLE))
def test_roundtrip_middle_setting(name):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    codec = codecs.CODECS[name]
    img = make_image()
    n, dec = codec.encode_decode(img, MIDDLE[name])
    assert dec.shape == img.shape and dec.dtype == np.uint8
    bpp = n * 8 / (img.shape[0] * img.shape[1])
    assert bpp > 0
    assert classical.psnr_rgb(img, dec) > 25
    assert isinstance(codec.version(), str) and codec.version()
    # the forked, timed path gives the same file size and pixels
    info, dec2 = classical.measure(codec, img, MIDDLE[name])
    assert info["bytes"] == n and np.array_equal(dec, dec2)
    assert info["encode_s"] > 0 and info["decode_s"] > 0 and info["peak_rss_growth_kib"] >= 0


def test_jpeg2000_matches_reference_runner():
    img = make_image()
    for bpp in (0.75, 2.0):
        n_ref, dec_ref = jpeg2000.encode_decode(img, bpp)
        n, dec = codecs.CODECS["jpeg2000"].encode_decode(img, bpp)
        assert n == n_ref and np.array_equal(dec, dec_ref)


def test_rate_increases_along_sweep():
    img = make_image(seed=1)
    for name in ("jpeg-420", "webp", "jxl"):
        if name in NEEDS:
            pytest.importorskip(NEEDS[name])
        codec = codecs.CODECS[name]
        sizes = [codec.encode_decode(img, s)[0] for s in (codec.settings[0], codec.settings[-1])]
        assert sizes[0] < sizes[1], name


def test_ms_ssim_and_db():
    img = make_image(176, 192)
    assert classical.ms_ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    noisy = np.clip(img.astype(int) + np.random.default_rng(2).integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    v = classical.ms_ssim(img, noisy)
    assert 0.5 < v < 1.0
    assert classical.msssim_db(v) == pytest.approx(-10 * np.log10(1 - v))
    assert classical.ms_ssim(make_image(), make_image()) is None  # too small for 5 scales


def _folder(tmp_path):
    d = tmp_path / "synth"
    d.mkdir()
    for i in range(2):
        Image.fromarray(make_image(seed=10 + i)).save(d / f"im{i}.png")
    return d


def _counting_codec(log):
    base = codecs.CODECS["jpeg-420"]

    def encode(img, q):
        if img.shape[:2] == (48, 64):  # not the 16x16 warm-up in the parent
            with open(log, "a") as f:  # appended from the forked child, so it counts across processes
                f.write(f"{q}\n")
        return base.encode(img, q)

    return classical.Codec("counting", encode, base.decode, (20, 60, 90), "quality", {"what": "test"},
                           lambda: "test 1")


def test_resume_encodes_nothing_new(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setitem(codecs.CODECS, "counting", _counting_codec(log))
    folder, out = _folder(tmp_path), tmp_path / "out"

    new = classical.run(folder, out, ["counting"], jobs=1, progress=False)
    assert new == {"counting": 6}
    assert len(log.read_text().split()) == 6
    path = out / "synth-counting.json"
    doc = json.loads(path.read_text())
    assert doc["codec"] == "counting" and doc["version"] == "test 1" and doc["dataset"] == "synth"
    assert {"platform", "cpu", "cores"} <= set(doc["machine"])
    assert len(doc["results"]) == 6 and [m["quality"] for m in doc["mean"]] == [20, 60, 90]
    assert all(m["images"] == 2 for m in doc["mean"])
    row = doc["results"][0]
    for k in ("bytes", "bpp", "psnr", "msssim", "msssim_db", "encode_s", "decode_s", "peak_rss_growth_kib"):
        assert k in row
    stamps = [r["measured_at"] for r in doc["results"]]

    new = classical.run(folder, out, ["counting"], jobs=1, progress=False)
    assert new == {"counting": 0}
    assert len(log.read_text().split()) == 6  # no encode at all
    assert [r["measured_at"] for r in json.loads(path.read_text())["results"]] == stamps

    # drop one row: only that one is measured again
    doc["results"] = [r for r in doc["results"] if not (r["image"] == "im1.png" and r["quality"] == 60)]
    path.write_text(json.dumps(doc))
    assert classical.run(folder, out, ["counting"], jobs=1, progress=False) == {"counting": 1}
    assert log.read_text().split()[6:] == ["60"]
    assert len(json.loads(path.read_text())["results"]) == 6


def test_resume_refuses_other_version(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setitem(codecs.CODECS, "counting", _counting_codec(log))
    folder, out = _folder(tmp_path), tmp_path / "out"
    classical.run(folder, out, ["counting"], jobs=1, progress=False)
    path = out / "synth-counting.json"
    doc = json.loads(path.read_text())
    doc["version"] = "test 0"
    path.write_text(json.dumps(doc))
    with pytest.raises(SystemExit):
        classical.run(folder, out, ["counting"], jobs=1, progress=False)


def test_cli_parallel_and_resume(tmp_path, capsys):
    folder, out = _folder(tmp_path), tmp_path / "out"
    classical.main([str(folder), "--out-dir", str(out), "--codecs", "jpeg-420", "--jobs", "2", "--no-progress"])
    doc = json.loads((out / "synth-jpeg-420.json").read_text())
    assert len(doc["results"]) == 2 * len(codecs.CODECS["jpeg-420"].settings)
    capsys.readouterr()
    classical.main([str(folder), "--out-dir", str(out), "--codecs", "jpeg-420", "--jobs", "2", "--no-progress"])
    assert "0 new measurements" in capsys.readouterr().err
    assert json.loads((out / "synth-jpeg-420.json").read_text())["results"] == doc["results"]
