"""aecodec: a learned image codec. `compress(image) -> bytes`, `decompress(bytes) -> PIL.Image`."""

from . import pillow_plugin  # noqa: F401  (registers .aec with Pillow)
from .codec import DEFAULT_QUALITY, compress, decompress
from .enhance import collaborative_filter, denoise, noise_level, upscale
from .errors import AecError, FormatError, ModelMismatchError
from .rate import RateResult, compress_to

__all__ = ["compress", "compress_to", "decompress", "denoise", "collaborative_filter", "upscale", "noise_level",
           "RateResult", "DEFAULT_QUALITY", "AecError", "FormatError", "ModelMismatchError"]
