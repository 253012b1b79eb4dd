import numpy as np
import pytest

from benchmarks.bdrate import bd_psnr, bd_rate
from benchmarks.jpeg2000 import encode_decode, psnr_rgb

ANCHOR = [(0.125, 26.0), (0.25, 28.1), (0.5, 30.9), (1.0, 34.2), (2.0, 38.5)]


def test_identical_curves_zero():
    assert abs(bd_rate(ANCHOR, ANCHOR)) < 1e-9
    assert abs(bd_psnr(ANCHOR, ANCHOR)) < 1e-9


def test_rate_scaled_090_gives_minus_10_percent():
    test = [(r * 0.9, q) for r, q in ANCHOR]
    assert bd_rate(ANCHOR, test) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(test, ANCHOR) == pytest.approx(100 / 0.9 - 100, abs=1e-6)


def test_linear_curve_shift_one_db():
    anchor = [(b, 30.0 + 5.0 * np.log2(b)) for b in (0.25, 0.5, 1.0, 2.0)]
    test = [(b, q + 1.0) for b, q in anchor]
    assert bd_psnr(anchor, test) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(test, anchor) == pytest.approx(-1.0, abs=1e-9)
    assert bd_rate(anchor, test) < 0


def test_no_overlap_or_too_few_points_raises():
    far = [(0.1, 50.0), (0.2, 55.0)]
    with pytest.raises(ValueError):
        bd_rate(ANCHOR, far)
    with pytest.raises(ValueError):
        bd_psnr(ANCHOR, [(10.0, 40.0), (20.0, 45.0)])
    with pytest.raises(ValueError):
        bd_rate(ANCHOR, [(0.5, 31.0)])


def test_jpeg2000_roundtrip_hits_target():
    h, w = 96, 128
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], axis=-1)
    texture = 20 * np.sin(x[..., None] / 3.0 + np.array([0, 1, 2])) * np.cos(y[..., None] / 5.0)
    img = np.clip(base + texture + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    n, dec = encode_decode(img, 1.0)
    assert dec.shape == img.shape and dec.dtype == np.uint8
    bpp = n * 8 / (w * h)
    assert abs(bpp - 1.0) / 1.0 < 0.15, bpp
    assert psnr_rgb(img, dec) > 25.0
    assert psnr_rgb(img, img) == float("inf")
