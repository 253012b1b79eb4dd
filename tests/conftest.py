import numpy as np
import pytest


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB test image made here: smooth gradients, edges and some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 90 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    g = 255 * xx / max(width - 1, 1) * 0.7 + 40 * (((xx // 16) + (yy // 16)) % 2)
    b = 200 - 150 * yy / max(height - 1, 1) + rng.normal(0, 6, (height, width))
    return np.clip(np.dstack([r, g, b]), 0, 255).astype(np.uint8)


def noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian noise, clipped and rounded to 8 bits as a noisy PNG would be."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    return synthetic_image(96, 128)
