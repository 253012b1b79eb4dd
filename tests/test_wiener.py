"""The collaborative Wiener filter that follows the denoising head: what clipping does to noise, that it
uses the pilot's gains and repeated patches, and that bands, odd sizes and grey images leave no trace."""

import numpy as np
import pytest
from conftest import noisy, psnr, synthetic_image

from aecodec import wiener


def planes(image: np.ndarray) -> np.ndarray:
    return image.transpose(2, 0, 1).astype(np.float32) / 255


def pixels(a: np.ndarray) -> np.ndarray:
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def test_clipping_bias_matches_sampled_noise():
    clean = np.array([0.0, 0.03, 0.2, 0.5, 0.9, 0.97, 1.0])
    samples = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, (200_000, len(clean))), 0, 1)
    bias = wiener.clipping_bias(clean, 0.1)
    assert np.allclose(bias, samples.mean(0) - clean, atol=1e-3)
    assert bias[0] > 0.03 and bias[-1] < -0.03 and abs(bias[3]) < 1e-6


def test_a_clean_pilot_gives_a_near_clean_image():
    clean = synthetic_image(64, 80, seed=1)
    noise = noisy(clean, 25)
    out = pixels(wiener.collaborative_wiener(planes(noise), planes(clean), 25 / 255))
    assert psnr(out, clean) > psnr(noise, clean) + 12


def test_repeated_patches_are_averaged():
    """On a pattern that repeats every 16 px, the filter beats its pilot: each patch is estimated from its
    repeats, which the pilot (here the clean image plus independent noise) does not use."""
    tile = synthetic_image(16, 16, seed=2)
    clean = np.tile(tile, (6, 6, 1))
    noise = noisy(clean, 25, seed=3)
    pilot = noisy(clean, 10, seed=4)
    out = pixels(wiener.collaborative_wiener(planes(noise), planes(pilot), 25 / 255))
    assert psnr(out, clean) > psnr(pilot, clean) + 2


def test_clipped_noise_does_not_brighten_shadows_or_darken_highlights():
    ramp = np.linspace(0, 40, 48)[None, :, None].repeat(40, 0).repeat(3, 2)
    clean = np.concatenate([ramp, 255 - ramp], axis=0).round().astype(np.uint8)  # dark half, bright half
    noise = noisy(clean, 25)
    out = pixels(wiener.collaborative_wiener(planes(noise), planes(clean), 25 / 255))
    for half in (slice(0, 40), slice(40, 80)):
        assert abs((noise[half].astype(float) - clean[half]).mean()) > 3  # clipping biases the noisy image
        assert abs((out[half].astype(float) - clean[half]).mean()) < 0.5


def test_bands_and_chunks_leave_no_trace(monkeypatch):
    clean = synthetic_image(45, 61, seed=5)
    noise, pilot = planes(noisy(clean, 20)), planes(noisy(clean, 5, seed=6))
    whole = wiener.collaborative_wiener(noise, pilot, 20 / 255)
    monkeypatch.setattr(wiener, "BAND_REFERENCES", 7)
    monkeypatch.setattr(wiener, "CHUNK", 5)
    calls = []
    banded = wiener.collaborative_wiener(noise, pilot, 20 / 255, lambda done, total: calls.append((done, total)))
    assert np.allclose(banded, whole, atol=1e-5)
    assert calls[-1][0] == calls[-1][1] > 1 and [done for done, _ in calls] == list(range(1, len(calls) + 1))


@pytest.mark.parametrize("shape", [(9, 8, 3), (37, 53, 1), (8, 30, 3)])
def test_odd_sizes_and_grey(shape):
    clean = synthetic_image(shape[0], shape[1], seed=7)[:, :, : shape[2]]
    noise = noisy(clean, 15)
    out = wiener.collaborative_wiener(planes(noise), planes(clean), 15 / 255)
    assert out.shape == (shape[2], shape[0], shape[1])
    assert psnr(pixels(out), clean) > psnr(noise, clean)


def test_smaller_than_a_patch_gives_the_pilot():
    rng = np.random.default_rng(0)
    pilot = rng.random((3, 5, 40), dtype=np.float32)
    assert np.array_equal(wiener.collaborative_wiener(rng.random((3, 5, 40), dtype=np.float32), pilot, 0.1), pilot)
