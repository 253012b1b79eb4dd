"""Image <-> .aec bytes: modes, padding, tiles, quality; the public `compress` and `decompress`.

Pixels -> latent y (analysis, in overlapping windows) -> per tile: hyper-latent z, integer symbols
and table indexes (runtime) -> bytes (entropy) -> file (container), and back. Numpy and ONNX Runtime
only: no torch here. With `context=True` the tables and means of y come from the context model too
(`integer_context`), pass by pass over the whole image, each tile's stream holding its share of every
pass (format version 3).

Two grids cut the image, and neither leaves a trace in the pixels. Coding tiles (the header's `tile`)
have their own z and y streams; h_a and h_s see HYPER_MARGIN z elements beyond each tile, so a tile's
y stream needs its neighbours' z (all z streams are decoded first). Windows bound the memory of the
transforms: g_a and g_s run on windows of at most WINDOW_PIXELS pixels, each a kept part and MARGIN
pixels of the neighbouring image around it, shaped to the image so that as few pixels as possible
are computed twice (a 768x512 image is one window).
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from . import container, entropy, grid
from .container import TILE_ALIGN, Container, Header, TileStreams
from .errors import AecError, FormatError, ModelMismatchError
from .grid import Box
from .noise import noise_sigma

DEFAULT_QUALITY = 4.0
DEFAULT_TILE = 1024  # pixels a side of a coding tile
DEFAULT_CONTEXT = False  # y coded with the context model (format version 3) unless asked otherwise
WINDOW_PIXELS = 512 * 512  # pixels of one transform window with its margin: memory follows it (about 0.6 kB a pixel)
MARGIN = 32  # pixels of context on each side of a window (format version 2): covers the receptive
# fields of g_a (+-30 px) and of g_s, so windows give the pixels that one window over the image gives
STRIDE = 16  # pixels per latent element
HYPER_MARGIN = 2  # z elements (128 px) of context around each coding tile for h_a and h_s (format version 2):
# covers their receptive fields, so tiles give the z, means and scales that one tile over the image gives

Progress = Callable[[int, int], None]  # (steps done, steps in all): windows and tiles


def coding_model():
    """(weights, `runtime.CodingModel`): the shipped backbone, verified and loaded once per process."""
    from .weights import load_coding_model

    return load_coding_model()


def context_model():
    """(weights, `integer_context.IntegerContext`) of the installed context model, loaded once per process."""
    from .weights import WeightsError, load_context

    try:
        return load_context()
    except WeightsError as e:
        raise AecError(f"no context model: {e}") from None


def head(kind: str):
    """`runtime.HeadModel` of a head ("super-resolution" or "denoising"), loaded once per process."""
    from .weights import load_coding_head

    return load_coding_head(kind)


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


def to_array(image) -> tuple[np.ndarray, np.ndarray, str]:
    """An image (as `compress` takes it) -> (HxWxC uint8 pixels, their HxWx3 colour planes, mode):
    grey images are coded as three equal planes."""
    pixels, mode = _to_array(image)
    colour = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels, colour, mode


def _check_size(width: int, height: int) -> None:
    if not (1 <= width <= container.MAX_SIDE and 1 <= height <= container.MAX_SIDE) or width * height > container.MAX_PIXELS:
        raise AecError(f"image size {width}x{height} is outside the limits "
                       f"({container.MAX_SIDE} a side, {container.MAX_PIXELS} pixels)")


def _latent_size(width: int, height: int) -> tuple[int, int]:
    """(rows, columns) of the latent: the image replicate-padded to multiples of 64, over 16."""
    return -(-height // TILE_ALIGN) * (TILE_ALIGN // STRIDE), -(-width // TILE_ALIGN) * (TILE_ALIGN // STRIDE)


def window_pixels(colour: np.ndarray, box: Box) -> np.ndarray:
    """The pixels under a latent box as (3, h, w) float32 in [0,1]; beyond the image, its edge pixels
    repeat (edges cost fewer bits than zeros)."""
    height, width = colour.shape[:2]
    rows = np.minimum(np.arange(box[0] * STRIDE, box[2] * STRIDE), height - 1)
    cols = np.minimum(np.arange(box[1] * STRIDE, box[3] * STRIDE), width - 1)
    return colour[rows][:, cols].transpose(2, 0, 1).astype(np.float32) / np.float32(255)


class Steps:
    """Counts the steps of one call for a `Progress` callback."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def advance(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)


@dataclass(frozen=True)
class Analysis:
    """An image read and analysed once: everything that does not depend on the quality."""

    pixels: np.ndarray  # HxWxC uint8
    mode: str
    latent: np.ndarray  # g_a output (M, rows, cols), before the gain
    icc: bytes
    exif: bytes

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]

    def distortion(self, decoded: Image.Image) -> float:
        """Mean squared error (8-bit units) of a decoding's colour (or grey) channels; alpha is lossless."""
        n = 3 if self.mode in ("RGB", "RGBA") else 1
        a = self.pixels[:, :, :n].astype(np.float64)
        b = np.asarray(decoded, dtype=np.float64).reshape(*a.shape[:2], -1)[:, :, :n]
        return float(np.mean((a - b) ** 2))


def analyse(image, tile: int, progress: Progress | None, icc: bytes | None, exif: bytes | None,
            denoise: float | str | None = None) -> Analysis:
    """Read an image and run g_a over it (with the denoising adapters when `denoise` is given)."""
    info = image.info if isinstance(image, Image.Image) else {}
    icc = (info.get("icc_profile") or b"") if icc is None else icc
    exif = (info.get("exif") or b"") if exif is None else exif
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()

    pixels, colour, mode = to_array(image)
    height, width = pixels.shape[:2]
    _check_size(width, height)
    if tile % TILE_ALIGN or not TILE_ALIGN <= tile <= container.MAX_TILE:
        raise AecError(f"tile must be a multiple of {TILE_ALIGN} in [{TILE_ALIGN}, {container.MAX_TILE}], got {tile}")
    _, model = coding_model()
    rows, cols = _latent_size(width, height)
    latent = np.empty((model.M, rows, cols), dtype=np.float32)
    transform, margin = model.analyse, MARGIN
    if denoise is not None:
        sigma = np.array([noise_sigma(colour, denoise)], dtype=np.float32)
        denoising = head("denoising")
        margin = denoising.margin("analysis")
        transform = lambda x: denoising.run("analysis", x=x, sigma=sigma)  # noqa: E731
    windows = grid.fitted_windows(rows, cols, WINDOW_PIXELS // STRIDE**2, margin // STRIDE)
    steps = Steps(progress, len(windows))
    for keep, window in windows:
        y = transform(window_pixels(colour, window))
        latent[grid.slices(keep)] = y[grid.slices(keep, window)]
        steps.advance()
    return Analysis(pixels, mode, latent, bytes(icc), bytes(exif))


def encode(analysis: Analysis, quality: float, tile: int,
           latents: tuple[np.ndarray, np.ndarray] | None = None, context: bool = DEFAULT_CONTEXT) -> bytes:
    """The .aec bytes of an analysed image at one quality; `latents` (the gained y and z, as
    `effort.refine` gives them) are coded in place of g_a's and h_a's. `context`: y coded with the
    context model (format version 3), else with the hyperprior alone (version 2)."""
    try:
        q_code = container.quantize_quality(float(quality))
    except ValueError as e:
        raise AecError(str(e)) from None
    weights, model = coding_model()
    width, height = analysis.size
    context_weights, ctx = context_model() if context else (None, None)
    header = Header(analysis.mode, weights.model_id, width, height, q_code / container.QUALITY_SCALE, tile,
                    analysis.icc, analysis.exif, *((container.CONTEXT_VERSION, context_weights.model_id) if context else ()))
    k = model.Z_PER_Y
    rows, cols = analysis.latent.shape[1:]
    tiles = grid.windows(rows // k, cols // k, tile // TILE_ALIGN, HYPER_MARGIN)  # in z elements
    z_values = np.empty((model.N, rows // k, cols // k), dtype=np.int64)
    gain, _ = model.gains(header.quality)
    medians = model.medians[:, None, None]
    for keep, window in tiles:
        z = model.hyper_analyse(analysis.latent[grid.slices(window, scale=k)] * gain) if latents is None else None
        z_values[grid.slices(keep)] = (np.round(z[grid.slices(keep, window)] - medians) if latents is None
                                       else np.round(latents[1][grid.slices(keep)] - medians))

    def y_of(box: tuple) -> np.ndarray:
        """y in `box` (channels first): g_a's latent times the gain, the same products h_a saw."""
        return analysis.latent[box] * gain[box[0]] if latents is None else latents[0][box]

    z_streams = [entropy.encode(z, _z_indexes(z.shape), model.z_tables)
                 for z in (z_values[grid.slices(keep)] for keep, _ in tiles)]
    if ctx is None:
        y_streams = []
        for keep, window in tiles:
            scales, means = _hyper_synthesis(model, z_values, keep, window, version=container.VERSION)
            values = np.round(y_of(grid.slices(keep, scale=k)).astype(np.float64) - means)
            y_streams.append(entropy.encode(values, model.table_indexes(scales), model.y_tables))
    else:
        y_streams = _encode_y_in_context(model, ctx, y_of, *_hyperprior_maps(model, z_values, tiles), header.quality,
                                         [grid.scaled(keep, k) for keep, _ in tiles])
    streams = [TileStreams(z, y) for z, y in zip(z_streams, y_streams)]
    alpha = zlib.compress(np.ascontiguousarray(analysis.pixels[:, :, -1]).tobytes(), 9) if header.has_alpha else None
    return container.build(Container(header, tuple(streams), alpha))


def encode_at_effort(analysis: Analysis, quality: float, tile: int, effort: int,
                     progress: Progress | None = None, context: bool = DEFAULT_CONTEXT) -> bytes:
    """`encode`, and at an effort above 0 also the file of the latents refined for this image
    (`effort`): whichever of the two has the lower true cost (lambda * 255^2 * MSE + bpp, measured
    on the decoded file), so effort never makes a file worse."""
    plain = encode(analysis, quality, tile, context=context)
    if not effort:
        return plain
    from .effort import STEPS, check_effort, lambda_of, refine

    width, height = analysis.size
    check_effort(effort)
    _, model = coding_model()
    q = container.quantize_quality(float(quality)) / container.QUALITY_SCALE
    colour = analysis.pixels[:, :, :3] if analysis.mode in ("RGB", "RGBA") else np.repeat(analysis.pixels[:, :, :1], 3, 2)
    k = model.Z_PER_Y
    rows, cols = analysis.latent.shape[1:]
    tiles = grid.boxes(rows // k, cols // k, tile // TILE_ALIGN)  # in z elements, in coding order
    tuned = encode(analysis, q, tile, refine(colour, analysis.latent, q, STEPS[effort], tiles, HYPER_MARGIN,
                                             MARGIN // STRIDE, progress, context), context)
    weight = lambda_of(model.lambdas, q)

    def true_cost(data: bytes) -> float:
        return weight * analysis.distortion(decompress(data)) + len(data) * 8 / (width * height)

    return min((plain, tuned), key=true_cost)  # a tie keeps g_a's file


def compress(image, quality: float = DEFAULT_QUALITY, *, tile: int = DEFAULT_TILE, progress: Progress | None = None,
             icc: bytes | None = None, exif: bytes | None = None, denoise: float | str | None = None,
             effort: int = 0, context: bool = DEFAULT_CONTEXT) -> bytes:
    """Compress an image into the bytes of an .aec file.

    Args:
        image: a PIL image (any mode; 16-bit is converted with a warning) or an HxW / HxWxC uint8 array.
        quality: any real number in [1, 8]; higher is better quality and more bytes.
        tile: coding tile side in pixels (a multiple of 64 up to 1024); tiles are coded independently.
        progress: called with (steps done, steps in all) after each window is analysed.
        icc, exif: metadata to store; None takes the image's own (`info["icc_profile"]`, `info["exif"]`),
            b"" stores none. EXIF is kept as is: its orientation is not applied to the pixels.
        denoise: None, or the noise level (standard deviation in 8-bit units, 0 to 75) to remove before
            coding, or "auto" to estimate it (`noise_level`); the file decodes with the ordinary decoder.
        effort: 0 (g_a's latents), or 1, 2, 3: that many more steps of refining the latents for this
            image (`aecodec.effort`; needs the train extra), for fewer bits at the same quality. The
            file decodes with the ordinary decoder; `progress` then also counts the steps.
        context: code y with the context model (format version 3: fewer bits, a slower decode),
            else with the hyperprior alone (version 2).
    """
    if effort:
        from .effort import check_effort

        check_effort(effort)  # a bad value or a missing extra is said before any work
        if denoise is not None:
            raise AecError("effort refines the latents against the image as given: it does not go with denoise")
    return encode_at_effort(analyse(image, tile, progress, icc, exif, denoise), quality, tile, effort, progress,
                            context)


def _hyperprior_maps(model, z_values: np.ndarray, tiles: list[tuple[Box, Box]]) -> tuple[np.ndarray, np.ndarray]:
    """The hyperprior's table indexes (uint8) and means (float64) of the whole y, tile by tile
    (version 2's integer h_s), for the context model, which codes across tiles."""
    k = model.Z_PER_Y
    shape = (model.M, z_values.shape[1] * k, z_values.shape[2] * k)
    index0, means = np.empty(shape, np.uint8), np.empty(shape)
    for keep, window in tiles:
        scales, means[grid.slices(keep, scale=k)] = _hyper_synthesis(model, z_values, keep, window, container.VERSION)
        index0[grid.slices(keep, scale=k)] = model.table_indexes(scales)
    return index0, means


def _encode_y_in_context(model, ctx, y_of: Callable[[tuple], np.ndarray], index0: np.ndarray, means: np.ndarray,
                         quality: float, boxes: list[Box]) -> list[bytes]:
    """Every tile's y stream, the context model (`ctx`) coding the whole y pass by pass; `y_of(where)`
    gives y in a (channels, rows, columns) box."""
    encoders = [entropy.Encoder() for _ in boxes]

    def code(t, where, chosen, index, mean):
        values = np.round(y_of(where)[:, chosen].ravel().astype(np.float64) - mean)
        encoders[t].encode(values, index, model.y_tables)
        return values

    ctx.code_y(index0, means, quality, boxes, code)
    return [encoder.finish() for encoder in encoders]


def _decode_y_in_context(model, ctx, streams: list[bytes], index0: np.ndarray, means: np.ndarray, quality: float,
                         boxes: list[Box], y_hat: np.ndarray, passed: Callable[[], None]) -> None:
    """The inverse of `_encode_y_in_context`: the whole y_hat, into `y_hat`; `passed()` after each pass."""
    decoders = [entropy.Decoder(data) for data in streams]

    def code(t, where, chosen, index, mean):
        values = decoders[t].decode(index, model.y_tables)
        if t == len(boxes) - 1:
            passed()
        return values

    ctx.code_y(index0, means, quality, boxes, code, y_hat)


def _hyper_synthesis(model, z_values: np.ndarray, keep: Box, window: Box, version: int):
    """(scales, means) of the y elements of the tile `keep` (in z elements), from the z symbols of
    `window` around it: the integer network (version 2) or the float one (version 1, window = keep)."""
    z = z_values[grid.slices(window)]
    if version == 1:
        return model.entropy_parameters(z + model.medians[:, None, None])
    scales, means = model.exact_entropy_parameters(z)
    crop = grid.slices(keep, window, model.Z_PER_Y)
    return scales[crop], means[crop]


def _z_indexes(shape) -> np.ndarray:
    """Table of each z element (C, h, w): its channel."""
    return np.broadcast_to(np.arange(shape[0]).reshape(-1, 1, 1), shape)


def decompress(data: bytes, *, scale: int = 1, progress: Progress | None = None) -> Image.Image:
    """Decode the bytes of an .aec file into a PIL image of the mode it was made from.

    scale=2 decodes at twice the coded width and height through the super-resolution head."""
    if scale == 1:
        return decode(data, progress)
    sr = head("super-resolution")
    check_scale(scale, sr)
    decoded = np.zeros(1, dtype=np.float32)  # the base is the decoded image, not the original
    return decode(data, progress, lambda features, base, window: sr.run("head", features=features, base=base,
                                                                        original=decoded),
                  scale, sr.margin("head"))


def check_scale(scale: int, sr) -> None:
    if scale not in (1, sr.scale):
        raise AecError(f"scale must be 1 or {sr.scale}, got {scale!r}")


# A head on the decoder: (g_s's hidden features, the 8-bit decoded image, the latent window) -> pixels,
# all (C, H, W) float32.
Finish = Callable[[np.ndarray, np.ndarray, Box], np.ndarray]


def decode(data: bytes, progress: Progress | None, finish: Finish | None = None, scale: int = 1,
           margin: int | None = None) -> Image.Image:
    """`decompress`, with `finish` (when given) making each window's pixels at `scale` times the coded
    size, from g_s windows with `margin` pixels of context (which must cover g_s and `finish`;
    default MARGIN)."""
    c = container.parse(bytes(data))
    header = c.header
    weights, model = coding_model()
    if header.model_id != weights.model_id:
        raise ModelMismatchError(header.model_id, weights.model_id)
    ctx = _context_for(header) if header.version == container.CONTEXT_VERSION else None
    k = model.Z_PER_Y
    rows, cols = _latent_size(header.width, header.height)
    if header.version == 1:  # each coding tile alone: float64 h_s, synthesised without margin
        tiles = grid.windows(rows // k, cols // k, header.tile // TILE_ALIGN, 0)
        windows = [tuple(grid.scaled(box, k) for box in pair) for pair in tiles]
    else:
        tiles = grid.windows(rows // k, cols // k, header.tile // TILE_ALIGN, HYPER_MARGIN)
        # a head's window makes scale^2 times the pixels: its budget is that much smaller
        windows = grid.fitted_windows(rows, cols, WINDOW_PIXELS // (STRIDE * scale) ** 2, (margin or MARGIN) // STRIDE)
    steps = Steps(progress, (2 * len(ctx.groups) if ctx else len(tiles)) + len(windows))  # tiles, or passes
    z_values = np.empty((model.N, rows // k, cols // k), dtype=np.int64)
    y_hat = np.empty((model.M, rows, cols), dtype=np.float32)
    width, height = header.width * scale, header.height * scale
    colour = np.empty((height, width, 3), dtype=np.uint8)
    for (keep, _), streams in zip(tiles, c.tiles):
        z = z_values[grid.slices(keep)]
        z[...] = entropy.decode(streams.z, _z_indexes(z.shape), model.z_tables).reshape(z.shape)
    if ctx is None:
        for (keep, window), streams in zip(tiles, c.tiles):
            scales, means = _hyper_synthesis(model, z_values, keep, window, header.version)
            values = entropy.decode(streams.y, model.table_indexes(scales), model.y_tables).reshape(means.shape)
            y_hat[grid.slices(keep, scale=k)] = values + means
            steps.advance()
    else:
        _decode_y_in_context(model, ctx, [s.y for s in c.tiles], *_hyperprior_maps(model, z_values, tiles),
                             header.quality, [grid.scaled(keep, k) for keep, _ in tiles], y_hat, steps.advance)
    for keep, window in windows:
        x, features = model.synthesise(y_hat[grid.slices(window)], header.quality)
        if finish is not None:
            base = np.round(np.clip(x, 0, 1) * np.float32(255)) / np.float32(255)
            x = finish(features, base, window)
        # A hostile file can make y_hat huge and the pixels NaN: they decode as black, as they did in torch.
        x_hat = np.clip(np.nan_to_num(x, nan=0.0), 0, 1)[grid.slices(keep, window, STRIDE * scale)]
        top, left = keep[0] * STRIDE * scale, keep[1] * STRIDE * scale
        part = colour[top : top + x_hat.shape[1], left : left + x_hat.shape[2]]  # cut to the image
        part[...] = np.round(x_hat[:, : part.shape[0], : part.shape[1]] * np.float32(255)).astype(np.uint8).transpose(1, 2, 0)
        steps.advance()
    if header.mode in ("L", "LA"):
        grey = np.round(colour.astype(np.float32).mean(axis=2)).astype(np.uint8)
        channels = [grey]
    else:
        channels = [colour]
    if header.has_alpha:
        alpha = _alpha_plane(c.alpha, header.width, header.height)
        if scale != 1:
            alpha = np.asarray(Image.fromarray(alpha).resize((width, height), Image.Resampling.BICUBIC))
        channels.append(alpha)
    pixels = np.dstack(channels) if len(channels) > 1 or channels[0].ndim == 3 else channels[0]
    image = Image.fromarray(pixels, header.mode)
    if header.icc:
        image.info["icc_profile"] = header.icc
    if header.exif:
        image.info["exif"] = header.exif
    return image


def _context_for(header: Header):
    """The installed context model, if it is the one that coded this file."""
    weights, ctx = context_model()
    if weights.model_id != header.context_id:
        raise ModelMismatchError(header.context_id, weights.model_id, "context model")
    return ctx


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
