"""The heads at inference: denoising and enlarging images through the codec, and the noise estimate.

Each runs the ordinary coding path (`codec`) with a head's graph in it: the denoising adapters in g_a
(`compress(denoise=...)`), then the refiner after g_s; the super-resolution head after g_s with the
original pixels as its base. The collaborative Wiener filter after the refiner is classical (`wiener`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .codec import DEFAULT_TILE, Progress, check_scale, compress, decode, head, to_array, window_pixels
from .errors import AecError
from .noise import estimate_sigma, noise_sigma


def noise_level(image) -> float:
    """The estimated standard deviation (8-bit units) of white noise in an image's colour channels."""
    _, colour, _ = to_array(image)
    return estimate_sigma(colour)


def denoise(image, sigma: float | str = "auto", *, quality: float = 8.0, tile: int = DEFAULT_TILE,
            collaborative: bool = True, progress: Progress | None = None) -> Image.Image:
    """Remove noise from an image: code it with the denoising adapters at `quality`, and decode it with
    the refiner, which restores fine detail from the noisy image. Then, unless `collaborative` is False,
    filter the noisy image again with a collaborative Wiener filter guided by that result: it averages
    patches that repeat across the image, which the refiner (a local network) cannot see. Metadata and
    alpha are kept.

    Args:
        sigma: the noise's standard deviation in 8-bit units (0 to 75), or "auto" to estimate it.
        progress: called with (steps done, steps in all) for the coding, then again for the decoding,
            then for the collaborative filter.
    """
    pixels, colour, _ = to_array(image)
    level = np.array([noise_sigma(colour, sigma)], dtype=np.float32)
    denoising = head("denoising")
    data = compress(image, quality, tile=tile, progress=progress, denoise=float(level[0]))
    refined = decode(data, progress,
                     lambda features, base, window: denoising.run("refine", noisy=window_pixels(colour, window),
                                                                  decoded=base, sigma=level),
                     margin=denoising.margin("refine"))
    return collaborative_filter(pixels, refined, float(level[0]), progress=progress) if collaborative else refined


def collaborative_filter(noisy, pilot: Image.Image, sigma: float | str = "auto", *,
                         progress: Progress | None = None) -> Image.Image:
    """Filter a noisy image (a PIL image or array) again with a collaborative Wiener filter guided by
    `pilot`, an estimate of its clean image with the same size (`denoise(..., collaborative=False)`
    gives one). The result has the pilot's mode, alpha and metadata. `sigma` is the noise's standard
    deviation in 8-bit units (0 to 75) or "auto"; `progress` is called with (bands done, bands in all)."""
    from .wiener import collaborative_wiener

    pixels, colour_in, _ = to_array(noisy)
    out = np.array(pilot)
    colour = out[:, :, None] if out.ndim == 2 else out
    if colour.shape[:2] != pixels.shape[:2]:
        raise AecError(f"the pilot is {pilot.width}x{pilot.height} but the noisy image is "
                       f"{pixels.shape[1]}x{pixels.shape[0]}")
    level = noise_sigma(colour_in, sigma)
    if level == 0:
        return pilot.copy()
    channels = 3 if pilot.mode in ("RGB", "RGBA") else 1
    noisy_planes = colour_in if channels == 3 else colour_in.mean(axis=2, keepdims=True)  # grey as the decoder makes it

    def planes(a: np.ndarray) -> np.ndarray:
        return a[:, :, :channels].transpose(2, 0, 1).astype(np.float32) / np.float32(255)

    filtered = collaborative_wiener(planes(noisy_planes), planes(colour), level / 255, progress)
    colour[:, :, :channels] = np.round(np.clip(filtered, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    image = Image.fromarray(out, pilot.mode)
    image.info.update(pilot.info)
    return image


def upscale(image, scale: int = 2, *, quality: float = 8.0, tile: int = DEFAULT_TILE,
            progress: Progress | None = None) -> Image.Image:
    """Enlarge an image through the codec: compress it at `quality` and decode it at `scale` times its size,
    with the original pixels (rather than the decoded ones) as the super-resolution head's base.
    `progress` is called as in `denoise`: for the coding, then for the decoding."""
    _, colour, _ = to_array(image)
    sr = head("super-resolution")
    check_scale(scale, sr)
    original = np.ones(1, dtype=np.float32)
    return decode(compress(image, quality, tile=tile, progress=progress), progress,
                  lambda features, base, window: sr.run("head", features=features, base=window_pixels(colour, window),
                                                        original=original),
                  scale, sr.margin("head"))
