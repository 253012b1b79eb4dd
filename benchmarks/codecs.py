"""Every codec of the rate-distortion benchmark, configured at its best: JPEG, JPEG 2000, WebP, AVIF,
HEIC, JPEG XL and aecodec, in one explicit list (`CODECS`). `benchmarks.classical` measures them.

Codecs (each at its best documented configuration, never a strawman):
  jpeg-420, jpeg-444  Pillow / libjpeg-turbo, optimize=True (optimised Huffman tables), quality sweep
  jpeg2000            benchmarks/jpeg2000.py: OpenJPEG, 9/7 irreversible, mct=1, target-bpp sweep
  webp                Pillow / libwebp, lossy, method=6 (slowest, best), quality sweep
  avif                Pillow / libavif + libaom, 4:4:4, full range, speed 4, quality sweep
  heic                pillow-heif / libheif + x265, 4:4:4, preset slow, quality sweep
  jxl                 imagecodecs / libjxl, VarDCT, effort 7 (libjxl default), distance sweep
  aecodec             this project, qualities 1..8
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL
from PIL import Image, features

from benchmarks import jpeg2000

THREADS = 1  # every encoder and decoder is asked for one thread


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[np.ndarray, Any], bytes]
    decode: Callable[[bytes], np.ndarray]
    settings: tuple  # low to high rate
    setting_name: str
    description: dict
    version: Callable[[], str]
    requires: tuple[str, ...] = field(default=())  # importable modules it needs
    # What readers call it: the report shows `title (library version, key settings)`, the library
    # version cut from the recorded version string by `library` (a regex whose group is the version).
    title: str = ""
    library: tuple[str, str] = ("", "")  # (regex, name): "libjxl ([\d.]+)", "libjxl"
    key_settings: tuple[str, ...] = ()  # names of `description` entries to show

    def label(self, doc: dict) -> str:
        """The name for a reader, from a results file of this codec (its recorded version and settings)."""
        found = re.search(self.library[0], doc.get("version", "")) if self.library[0] else None
        parts = [f"{self.library[1]} {found.group(1)}"] if found else []
        settings = doc.get("settings", {})
        parts += [f"{k} {settings[k]}" for k in self.key_settings if k in settings]
        return f"{self.title or self.name} ({', '.join(parts)})" if parts else (self.title or self.name)

    def available(self) -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in self.requires)

    def encode_decode(self, img: np.ndarray, setting: Any) -> tuple[int, np.ndarray]:
        """Encode `img` (HxWx3 uint8) at `setting`; return (file bytes, decoded HxWx3 uint8)."""
        check_input(img)
        data = self.encode(img, setting)
        return len(data), self.decode(data)


def check_input(img: np.ndarray) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB array")


def _pil_encode(img: np.ndarray, fmt: str, **params) -> bytes:
    check_input(img)
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(buf, format=fmt, **params)
    return buf.getvalue()


def _pil_decode(data: bytes, fmt: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.format != fmt:
            raise ValueError(f"decoded a {im.format} file, expected {fmt}")
        im.load()
        if im.mode != "RGB":  # no silent conversion: an RGBA or L result means a wrong configuration
            raise ValueError(f"{fmt} decoded to mode {im.mode}, expected RGB")
        return np.array(im)


# JPEG -- libjpeg-turbo through Pillow: baseline sequential, optimised Huffman tables, standard
# (Annex K) quantisation tables scaled by quality.
def _jpeg_encoder(subsampling: int) -> Callable[[np.ndarray, int], bytes]:
    def encode(img: np.ndarray, quality: int) -> bytes:
        return _pil_encode(img, "JPEG", quality=int(quality), subsampling=subsampling, optimize=True)

    return encode


def _jpeg_version() -> str:
    return f"Pillow {PIL.__version__}, libjpeg-turbo {features.version_feature('libjpeg_turbo')}"


# WebP -- lossy (VP8, always 4:2:0), method 6 = most exhaustive search.
def _webp_encode(img: np.ndarray, quality: float) -> bytes:
    return _pil_encode(img, "WEBP", quality=quality, method=6, lossless=False)


def _webp_version() -> str:
    return f"Pillow {PIL.__version__}, libwebp {features.version_module('webp')}"


# AVIF -- libavif + libaom through Pillow's plugin.
AVIF_SPEED = 4


def _avif_encode(img: np.ndarray, quality: int) -> bytes:
    return _pil_encode(img, "AVIF", quality=int(quality), subsampling="4:4:4", speed=AVIF_SPEED,
                       codec="aom", range="full", max_threads=THREADS)


def _avif_decode(data: bytes) -> np.ndarray:
    from PIL import AvifImagePlugin

    AvifImagePlugin.DEFAULT_MAX_THREADS = THREADS  # the decoder's thread count (dav1d)
    return _pil_decode(data, "AVIF")


def _avif_version() -> str:
    from PIL import _avif

    return f"Pillow {PIL.__version__}, libavif {features.version('avif')}, {_avif.codec_versions()}"


# HEIC -- libheif + x265 through pillow-heif; 4:4:4, libheif's x265 defaults (preset slow, tune ssim)
# made explicit, x265's thread pool off.
HEIC_ENC_PARAMS = {"preset": "slow", "tune": "ssim", "x265:pools": "none", "x265:frame-threads": "1"}


def _heif_setup() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    pillow_heif.options.DECODE_THREADS = THREADS


def _heic_encode(img: np.ndarray, quality: int) -> bytes:
    _heif_setup()
    return _pil_encode(img, "HEIF", quality=int(quality), chroma=444, enc_params=dict(HEIC_ENC_PARAMS))


def _heic_decode(data: bytes) -> np.ndarray:
    _heif_setup()
    return _pil_decode(data, "HEIF")


def _heic_version() -> str:
    import pillow_heif

    info = pillow_heif.libheif_info()
    dec = "; ".join(info.get("decoders", {}).values())
    return f"pillow-heif {pillow_heif.__version__}, libheif {pillow_heif.libheif_version()}, {info['HEIF']}, {dec}"


# JPEG XL -- libjxl through imagecodecs; distance is the Butteraugli target (1.0 ~ visually lossless).
JXL_EFFORT = 7


def _jxl_encode(img: np.ndarray, distance: float) -> bytes:
    import imagecodecs

    check_input(img)
    return bytes(imagecodecs.jpegxl_encode(img, distance=float(distance), effort=JXL_EFFORT,
                                           lossless=False, numthreads=THREADS))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    out = imagecodecs.jpegxl_decode(data, numthreads=THREADS)
    if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 3:
        raise ValueError(f"JPEG XL decoded to {out.dtype} {out.shape}, expected HxWx3 uint8")
    return np.ascontiguousarray(out)


def _jxl_version() -> str:
    import imagecodecs

    return f"imagecodecs {imagecodecs.__version__}, libjxl {imagecodecs.version(dict).get('libjxl')}"


def _jpeg(name: str, subsampling: int, label: str) -> Codec:
    return Codec(
        name, _jpeg_encoder(subsampling), lambda d: _pil_decode(d, "JPEG"),
        (3, 6, 10, 20, 35, 50, 70, 85, 92), "quality",
        {"library": "Pillow JPEG (libjpeg-turbo)", "subsampling": f"{label} (subsampling={subsampling})",
         "optimize": True, "progressive": False, "quantization": "libjpeg standard tables scaled by quality",
         "sweep": "quality"},
        _jpeg_version, title=f"JPEG {label}", library=(r"libjpeg-turbo ([\d.]+)", "libjpeg-turbo"))


JPEG_420, JPEG_444 = _jpeg("jpeg-420", 2, "4:2:0"), _jpeg("jpeg-444", 0, "4:4:4")
JPEG_2000 = Codec(
    "jpeg2000", jpeg2000.encode, lambda d: _pil_decode(d, "JPEG2000"),
    (0.1, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5), "target_bpp",
    {"library": "Pillow JPEG2000 (OpenJPEG) via benchmarks/jpeg2000.py", **jpeg2000.SETTINGS,
     "sweep": "target bpp (quality_layers = [24 / target_bpp])"},
    lambda: f"Pillow {PIL.__version__}, OpenJPEG {features.version_codec('jpg_2000')}",
    title="JPEG 2000", library=(r"OpenJPEG ([\d.]+)", "OpenJPEG"))
WEBP = Codec(
    "webp", _webp_encode, lambda d: _pil_decode(d, "WEBP"),
    (0, 5, 15, 30, 50, 70, 80, 90, 95), "quality",
    {"library": "Pillow WebP (libwebp)", "lossless": False, "method": 6, "subsampling": "4:2:0 (VP8)",
     "sweep": "quality"},
    _webp_version, title="WebP", library=(r"libwebp ([\d.]+)", "libwebp"), key_settings=("method",))
AVIF = Codec(
    "avif", _avif_encode, _avif_decode,
    (5, 20, 35, 50, 62, 72, 82, 90), "quality",
    {"library": "Pillow AVIF plugin (libavif, libaom encoder, dav1d decoder)", "subsampling": "4:4:4",
     "speed": AVIF_SPEED, "codec": "aom", "range": "full", "tune": "libavif default",
     "max_threads": THREADS, "sweep": "quality (0-100, libavif maps it to the quantizer)"},
    _avif_version, title="AVIF", library=(r"aom \[enc\]:([\d.]+)", "libaom"), key_settings=("speed", "subsampling"))
HEIC = Codec(
    "heic", _heic_encode, _heic_decode,
    (12, 20, 28, 36, 44, 52, 60, 68), "quality",
    {"library": "pillow-heif (libheif, x265 encoder, libde265 decoder)", "chroma": "444",
     "enc_params": HEIC_ENC_PARAMS, "matrix": "BT.601 full range (pillow-heif default nclx)",
     "decode_threads": THREADS, "sweep": "quality (libheif maps it to x265 CRF)"},
    _heic_version, requires=("pillow_heif",), title="HEIC", library=(r"x265 HEVC encoder \(([\d.]+)", "x265"),
    key_settings=("chroma",))
JPEG_XL = Codec(
    "jxl", _jxl_encode, _jxl_decode,
    (25.0, 15.0, 10.0, 7.0, 5.0, 3.5, 2.5, 1.5, 1.0, 0.6), "distance",
    {"library": "imagecodecs jpegxl (libjxl)", "mode": "lossy (VarDCT)", "effort": JXL_EFFORT,
     "numthreads": THREADS, "sweep": "distance (Butteraugli target, high to low)"},
    _jxl_version, requires=("imagecodecs",), title="JPEG XL", library=(r"libjxl ([\d.]+)", "libjxl"),
    key_settings=("effort",))


# aecodec -- real .aec files at qualities 1..8, on one thread like every other codec.
def _aecodec_encode(img: np.ndarray, quality: float) -> bytes:
    import aecodec
    from aecodec.runtime import set_threads

    set_threads(THREADS)
    return aecodec.compress(img, quality=quality)


def _aecodec_decode(data: bytes) -> np.ndarray:
    import aecodec

    return np.asarray(aecodec.decompress(data).convert("RGB"))


def _aecodec_version() -> str:
    from importlib.metadata import version

    from aecodec.weights import find_weights

    w = find_weights()
    return f"aecodec {version('aecodec')}, model {w.model_id.hex()} ({w.manifest.get('steps')} steps)"


AECODEC = Codec(
    "aecodec", _aecodec_encode, _aecodec_decode, (1, 2, 3, 4, 5, 6, 7, 8), "quality",
    {"library": "aecodec (this project)", "model": "mean-scale hyperprior with gain units, N=128, M=192",
     "entropy_coder": "constriction range coder", "threads": THREADS, "sweep": "quality levels 1-8"},
    _aecodec_version, requires=("aecodec",), title="aecodec", library=(r"model ([0-9a-f]{8})", "model"))

# Every codec the benchmark knows, in the order of its tables.
CODECS: dict[str, Codec] = {c.name: c for c in (JPEG_420, JPEG_444, JPEG_2000, WEBP, AVIF, HEIC, JPEG_XL, AECODEC)}
