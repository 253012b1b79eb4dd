"""Image <-> .aec bytes: modes, padding, tiles, quality; the public `compress` and `decompress`.

Pixels -> (per tile) padded float tensor -> latent y and hyper-latent z (model) -> integer symbols
and table indexes -> bytes (entropy) -> file (container), and back.
"""

from __future__ import annotations

import warnings
import zlib
from contextlib import contextmanager
from typing import Callable

import numpy as np
from PIL import Image

from . import container, entropy
from .container import TILE_ALIGN, Container, Header, TileStreams
from .errors import AecError, FormatError, ModelMismatchError

DEFAULT_QUALITY = 4.0
DEFAULT_TILE = 1024  # pixels a side; bounds memory (about 1 GB peak at this size)

Progress = Callable[[int, int], None]  # (tiles done, tiles in all)


def _coding_model():
    """The shipped weights, verified and loaded once per process (torch is imported only here)."""
    from .weights import load_coding_model

    return load_coding_model()


def _tables(model) -> tuple[entropy.CdfTables, entropy.CdfTables]:
    """The integer tables of z (one per channel) and of y (one per scale), cached on the model."""
    if not hasattr(model, "_aec_tables"):
        def tables(em) -> entropy.CdfTables:
            return entropy.CdfTables.from_cdfs(em._quantized_cdf.numpy(), em._cdf_length.numpy(), em._offset.numpy())

        model._aec_tables = (tables(model.entropy_bottleneck), tables(model.gaussian_conditional))
    return model._aec_tables


def _to_array(image) -> tuple[np.ndarray, str]:
    """A PIL image or HxW / HxWxC uint8 array -> (HxWxC uint8 array, mode among L, LA, RGB, RGBA)."""
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
            raise AecError(f"array image must be HxW or HxWxC with C in 1..4, got shape {image.shape}")
        if a.dtype == np.uint16:
            warnings.warn("16-bit image converted to 8 bits per channel", stacklevel=3)
            a = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        elif a.dtype != np.uint8:
            raise AecError(f"array image must be uint8 (or uint16), got {a.dtype}")
        return np.ascontiguousarray(a), container.MODES[a.shape[2] - 1]
    if not isinstance(image, Image.Image):
        raise AecError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        warnings.warn(f"{mode} image converted to 8-bit greyscale", stacklevel=3)
        a = np.asarray(image, dtype=np.float64)
        scale = 255 / 65535 if mode.startswith("I") else 255.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)[:, :, None], "L"
    if mode not in container.MODES:
        has_alpha = mode in ("PA", "La") or "transparency" in image.info or mode == "RGBa"
        image = image.convert("RGBA" if has_alpha else "RGB")
    a = np.asarray(image)
    return (a[:, :, None] if a.ndim == 2 else a), image.mode


def _check_size(width: int, height: int) -> None:
    if not (1 <= width <= container.MAX_SIDE and 1 <= height <= container.MAX_SIDE) or width * height > container.MAX_PIXELS:
        raise AecError(f"image size {width}x{height} is outside the limits "
                       f"({container.MAX_SIDE} a side, {container.MAX_PIXELS} pixels)")


def _tile_boxes(header: Header):
    """(left, top, right, bottom) of each tile, row-major."""
    for ty in range(header.tiles_y):
        for tx in range(header.tiles_x):
            left, top = tx * header.tile, ty * header.tile
            yield left, top, min(left + header.tile, header.width), min(top + header.tile, header.height)


def _pad(x, multiple: int = TILE_ALIGN):
    """Replicate-pad a (1,3,h,w) tensor to multiples of the stride; edges cost fewer bits than zeros."""
    import torch.nn.functional as F

    h, w = x.shape[2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def compress(image, quality: float = DEFAULT_QUALITY, *, tile: int = DEFAULT_TILE, progress: Progress | None = None) -> bytes:
    """Compress an image into the bytes of an .aec file.

    Args:
        image: a PIL image (any mode; 16-bit is converted with a warning) or an HxW / HxWxC uint8 array.
        quality: any real number in [1, 8]; higher is better quality and more bytes.
        tile: tile side in pixels (a multiple of 64); tiles are coded independently to bound memory.
        progress: called with (tiles done, tiles in all) after each tile.
    """
    import torch

    pixels, mode = _to_array(image)
    height, width = pixels.shape[:2]
    _check_size(width, height)
    try:
        q_code = container.quantize_quality(float(quality))
    except ValueError as e:
        raise AecError(str(e)) from None
    weights, model = _coding_model()
    header = Header(mode, weights.model_id, width, height, q_code / container.QUALITY_SCALE, tile)
    if tile % TILE_ALIGN or not TILE_ALIGN <= tile <= container.MAX_TILE:
        raise AecError(f"tile must be a multiple of {TILE_ALIGN} in [{TILE_ALIGN}, {container.MAX_TILE}], got {tile}")
    z_tables, y_tables = _tables(model)
    colour = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    q = torch.tensor([header.quality])
    tiles = []
    boxes = list(_tile_boxes(header))
    with torch.inference_mode():  # oneDNN here: 3x faster, and the decoder does not depend on it
        for i, (left, top, right, bottom) in enumerate(boxes):
            x = torch.from_numpy(colour[top:bottom, left:right].copy()).permute(2, 0, 1)[None]
            y, z = model.analyse(_pad(x.float() / 255), q)
            tiles.append(_encode_tile(model, y, z, z_tables, y_tables))
            if progress:
                progress(i + 1, len(boxes))
    alpha = zlib.compress(np.ascontiguousarray(pixels[:, :, -1]).tobytes(), 9) if header.has_alpha else None
    return container.build(Container(header, tuple(tiles), alpha))


def _encode_tile(model, y, z, z_tables, y_tables) -> TileStreams:
    import torch

    medians = _z_medians(model)
    z_values = torch.round(z - medians).long()
    z_hat = z_values + medians
    scales, means = model.entropy_parameters(z_hat)
    y_values = torch.round(y.double() - means).long()
    return TileStreams(
        entropy.encode(z_values.numpy(), _z_indexes(z.shape), z_tables),
        entropy.encode(y_values.numpy(), model.gaussian_conditional.build_indexes(scales).numpy(), y_tables),
    )


def _z_medians(model):
    return model.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)


def _z_indexes(shape) -> np.ndarray:
    """Table of each z element: its channel."""
    return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape)


def decompress(data: bytes, *, progress: Progress | None = None) -> Image.Image:
    """Decode the bytes of an .aec file into a PIL image of the mode it was made from."""
    import torch

    c = container.parse(bytes(data))
    header = c.header
    weights, model = _coding_model()
    if header.model_id != weights.model_id:
        raise ModelMismatchError(header.model_id, weights.model_id)
    z_tables, y_tables = _tables(model)
    medians = _z_medians(model)
    N, M = model.config.N, model.config.M
    q = torch.tensor([header.quality])
    colour = np.empty((header.height, header.width, 3), dtype=np.uint8)
    boxes = list(_tile_boxes(header))
    with torch.inference_mode(), _native_kernels():
        for i, ((left, top, right, bottom), streams) in enumerate(zip(boxes, c.tiles)):
            zh, zw = -(-(bottom - top) // TILE_ALIGN), -(-(right - left) // TILE_ALIGN)
            z_shape = (1, N, zh, zw)
            z_values = entropy.decode(streams.z, _z_indexes(z_shape), z_tables)
            z_hat = torch.from_numpy(z_values).reshape(z_shape) + medians
            scales, means = model.entropy_parameters(z_hat)
            indexes = model.gaussian_conditional.build_indexes(scales).numpy()
            y_values = entropy.decode(streams.y, indexes, y_tables)
            y_hat = torch.from_numpy(y_values).reshape(1, M, 4 * zh, 4 * zw) + means
            x_hat = model.synthesise(y_hat, q)[0, :, : bottom - top, : right - left]
            colour[top:bottom, left:right] = (x_hat * 255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
            if progress:
                progress(i + 1, len(boxes))
    if header.mode in ("L", "LA"):
        grey = np.round(colour.astype(np.float32).mean(axis=2)).astype(np.uint8)
        channels = [grey]
    else:
        channels = [colour]
    if header.has_alpha:
        channels.append(_alpha_plane(c.alpha, header.width, header.height))
    pixels = np.dstack(channels) if len(channels) > 1 or channels[0].ndim == 3 else channels[0]
    return Image.fromarray(pixels, header.mode)


@contextmanager
def _native_kernels():
    """Decode without oneDNN, whose convolutions change their summation order with the thread
    count and so flip the rounding of a few pixels; the native kernels give the same bits."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def _alpha_plane(data: bytes, width: int, height: int) -> np.ndarray:
    """Inflate the alpha plane, refusing to produce more than width*height bytes."""
    d = zlib.decompressobj()
    try:
        plane = d.decompress(data, width * height)
    except zlib.error as e:
        raise FormatError(f"corrupt alpha plane ({e})") from None
    if len(plane) != width * height or d.unconsumed_tail or not d.eof:
        raise FormatError("corrupt alpha plane (wrong size)")
    return np.frombuffer(plane, dtype=np.uint8).reshape(height, width)
