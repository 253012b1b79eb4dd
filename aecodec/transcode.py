"""One file's work, bytes in and bytes out: what `compress` and `decompress` do to each input, shared
by the CLI (local files) and the cluster's workers (files anywhere fsspec reaches).

A failure of one file is a `JobError` whose message names the file and the reason, so that a batch
can report it and go on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable

from .errors import AecError

if TYPE_CHECKING:
    from PIL import Image

Progress = Callable[[int, int], None]

FORMATS_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                     ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM"}

# What each output format can carry of the ICC profile and EXIF that an .aec file holds.
_METADATA_BY_FORMAT = {"PNG": ("icc_profile", "exif"), "JPEG": ("icc_profile", "exif"),
                       "WEBP": ("icc_profile", "exif"), "TIFF": ("icc_profile",)}

# zlib level of the PNGs written: 1 deflates a 768x512 photo 3.8 times faster than Pillow's default
# 6, for files 1.8% larger (Kodak, measured in benchmarks/speed.py).
PNG_LEVEL = 1


class JobError(Exception):
    """One file of a batch failed; the message names the file and the reason."""


def output_format(name: str) -> str:
    """The Pillow format that an output file's extension asks for."""
    suffix = name[name.rfind("."):].lower() if "." in name.rsplit("/", 1)[-1] else ""
    fmt = FORMATS_BY_SUFFIX.get(suffix)
    if fmt is None:
        raise JobError(f"unknown output format {suffix!r}; use one of {', '.join(sorted(FORMATS_BY_SUFFIX))}")
    return fmt


def compress(data: bytes, name: str, quality: float, target: dict, denoise: float | str | None, effort: int,
             strict: bool, progress: Progress | None = None, context: bool | None = None) -> tuple[bytes, dict]:
    """(the .aec file, what was done: pixels, bpp, quality and the rate control's or denoiser's figures)
    of the image file `data`; `name` says which file in errors."""
    from PIL import Image, UnidentifiedImageError

    from . import codec, enhance, rate

    context = codec.DEFAULT_CONTEXT if context is None else context

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if target:
                reached = rate.compress_to(im, **target, progress=progress, effort=effort, context=context)
                out, quality = reached.data, reached.quality
                extra = {"encodes": reached.encodes, "psnr": reached.psnr, "missed": reached.missed}
                if reached.missed and strict:
                    raise JobError(f"{name}: {reached.missed} (--strict: nothing written)")
            else:
                out, extra = codec.compress(im, quality, progress=progress, denoise=denoise, effort=effort,
                                            context=context), {}
                if denoise is not None:
                    extra["sigma"] = enhance.noise_level(im) if denoise == "auto" else denoise
            pixels = im.width * im.height
    except UnidentifiedImageError:
        raise JobError(f"{name} is not an image that Pillow can read") from None
    except (AecError, OSError) as e:
        raise JobError(f"{name}: {e}") from None
    return out, {"pixels": pixels, "bpp": len(out) * 8 / pixels, "quality": quality, "effort": effort,
                 "entropy": "context" if context else "hyperprior", **extra}


def decompress(data: bytes, name: str, scale: int, progress: Progress | None = None) -> tuple[Image.Image, dict]:
    """(the image, what was decoded: pixels coded, bpp, size, mode) of the .aec file `data`."""
    from . import codec

    try:
        image = codec.decompress(data, scale=scale, progress=progress)
    except AecError as e:
        raise JobError(f"{name}: {e}") from None
    coded_pixels = image.width * image.height // scale**2
    return image, {"pixels": coded_pixels, "bpp": len(data) * 8 / coded_pixels,
                   "size": f"{image.width}x{image.height}", "mode": image.mode}


def save_image(image: Image.Image, fp: Path | IO[bytes], fmt: str, name: str) -> None:
    """`image` written to `fp` (a path or a binary file) in `fmt`, with the ICC profile and EXIF the
    format can carry."""
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        raise JobError(f"{name} has an alpha channel, which JPEG cannot store; write .png or .webp")
    options = {k: image.info[k] for k in _METADATA_BY_FORMAT.get(fmt, ()) if k in image.info}
    if fmt == "PNG":
        options["compress_level"] = PNG_LEVEL
    image.save(fp, format=fmt, **options)
