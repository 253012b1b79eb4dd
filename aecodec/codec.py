"""Image <-> .aec bytes: modes, padding, tiles, quality; the public `compress` and `decompress`.

Pixels -> latent y (analysis, in overlapping windows) -> per tile: hyper-latent z, integer symbols
and table indexes (model) -> bytes (entropy) -> file (container), and back.

Two grids cut the image, and neither leaves a trace in the pixels. Coding tiles (the header's `tile`)
have their own z and y streams; h_a and h_s see HYPER_MARGIN z elements beyond each tile, so a tile's
y stream needs its neighbours' z (all z streams are decoded first). Windows bound the memory of the
transforms: g_a and g_s run on WINDOW pixels a side plus MARGIN pixels of the neighbouring image
around them, of which only the middle is kept.
"""

from __future__ import annotations

import math
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from . import container, entropy
from .container import TILE_ALIGN, Container, Header, TileStreams
from .errors import AecError, FormatError, ModelMismatchError

if TYPE_CHECKING:
    import torch

DEFAULT_QUALITY = 4.0
DEFAULT_TILE = 1024  # pixels a side of a coding tile
WINDOW = 512  # pixels a side of the part of each transform window that is kept (format version 2)
MARGIN = 32  # pixels of context on each side of a window (format version 2): covers the receptive
# fields of g_a (+-30 px) and of g_s, so windows give the pixels that one window over the image gives
STRIDE = 16  # pixels per latent element
DENOISE_MARGIN = 64  # pixels of window context for g_a with the denoising adapters (receptive field +-58 px)
SR_MARGIN = 48  # pixels of window context for g_s with the super-resolution head (receptive field +-36 px)
G_S_REACH = 30  # pixels of the image that g_s's receptive field spans beyond a pixel
HYPER_MARGIN = 2  # z elements (128 px) of context around each coding tile for h_a and h_s (format version 2):
# covers their receptive fields, so tiles give the z, means and scales that one tile over the image gives

Progress = Callable[[int, int], None]  # (steps done, steps in all): windows and tiles
Box = tuple[int, int, int, int]  # top, left, bottom, right, in elements of the latent y (or of z)


def _coding_model():
    """The shipped weights, verified and loaded once per process (torch is imported only here)."""
    from .weights import load_coding_model

    return load_coding_model()


def _head(kind: str):
    """A head ("super-resolution" or "denoising") on the shipped backbone, loaded once per process."""
    from .weights import load_head

    return load_head(kind)


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


def _latent_size(width: int, height: int) -> tuple[int, int]:
    """(rows, columns) of the latent: the image replicate-padded to multiples of 64, over 16."""
    return -(-height // TILE_ALIGN) * (TILE_ALIGN // STRIDE), -(-width // TILE_ALIGN) * (TILE_ALIGN // STRIDE)


def _boxes(rows: int, cols: int, side: int) -> list[Box]:
    """A grid of boxes `side` elements a side over a rows x cols grid, row-major."""
    return [(top, left, min(top + side, rows), min(left + side, cols))
            for top in range(0, rows, side) for left in range(0, cols, side)]


def _windows(rows: int, cols: int, side: int, margin: int) -> list[tuple[Box, Box]]:
    """(kept box, window box) pairs: each kept box with `margin` elements around it, within the grid."""
    return [(box, (max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, rows),
                   min(box[3] + margin, cols))) for box in _boxes(rows, cols, side)]


def _slices(box: Box, within: Box | None = None, scale: int = 1) -> tuple[slice, slice]:
    """Row and column slices of `box` (relative to `within`'s corner), times `scale`."""
    top, left = (within[0], within[1]) if within else (0, 0)
    return (slice((box[0] - top) * scale, (box[2] - top) * scale),
            slice((box[1] - left) * scale, (box[3] - left) * scale))


def _window_pixels(colour: np.ndarray, box: Box):
    """The pixels under a latent box as a (1,3,h,w) float tensor in [0,1]; beyond the image, its
    edge pixels repeat (edges cost fewer bits than zeros)."""
    import torch

    height, width = colour.shape[:2]
    rows = np.minimum(np.arange(box[0] * STRIDE, box[2] * STRIDE), height - 1)
    cols = np.minimum(np.arange(box[1] * STRIDE, box[3] * STRIDE), width - 1)
    return torch.from_numpy(colour[rows][:, cols]).permute(2, 0, 1)[None].float().div_(255)


class _Steps:
    """Counts the steps of one call for a `Progress` callback."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def advance(self) -> None:
        self.done += 1
        if self.progress:
            self.progress(self.done, self.total)


@dataclass(frozen=True)
class _Analysis:
    """An image read and analysed once: everything that does not depend on the quality."""

    pixels: np.ndarray  # HxWxC uint8
    mode: str
    latent: object  # g_a output (1, M, rows, cols), before the gain
    icc: bytes
    exif: bytes

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def _analyse(image, tile: int, progress: Progress | None, icc: bytes | None, exif: bytes | None,
             denoise: float | str | None = None) -> _Analysis:
    import torch

    info = image.info if isinstance(image, Image.Image) else {}
    icc = (info.get("icc_profile") or b"") if icc is None else icc
    exif = (info.get("exif") or b"") if exif is None else exif
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()

    pixels, mode = _to_array(image)
    height, width = pixels.shape[:2]
    _check_size(width, height)
    if tile % TILE_ALIGN or not TILE_ALIGN <= tile <= container.MAX_TILE:
        raise AecError(f"tile must be a multiple of {TILE_ALIGN} in [{TILE_ALIGN}, {container.MAX_TILE}], got {tile}")
    _, model = _coding_model()
    colour = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    rows, cols = _latent_size(width, height)
    latent = torch.empty(1, model.config.M, rows, cols)
    analyse, margin = model.analyse, MARGIN
    if denoise is not None:
        sigma = torch.tensor([_sigma(colour, denoise)])
        head, margin = _head("denoising"), DENOISE_MARGIN
        analyse = lambda x: head.analyse(model.g_a, x, sigma)  # noqa: E731
    windows = _windows(rows, cols, WINDOW // STRIDE, margin // STRIDE)
    steps = _Steps(progress, len(windows))
    with torch.inference_mode():  # oneDNN here: 3x faster, and the decoder does not depend on it
        for keep, window in windows:
            y = analyse(_window_pixels(colour, window))
            latent[(..., *_slices(keep))] = y[(..., *_slices(keep, window))]
            steps.advance()
    return _Analysis(pixels, mode, latent, bytes(icc), bytes(exif))


def _encode(analysis: _Analysis, quality: float, tile: int) -> bytes:
    """The .aec bytes of an analysed image at one quality."""
    import torch

    try:
        q_code = container.quantize_quality(float(quality))
    except ValueError as e:
        raise AecError(str(e)) from None
    weights, model = _coding_model()
    width, height = analysis.size
    header = Header(analysis.mode, weights.model_id, width, height, q_code / container.QUALITY_SCALE, tile,
                    analysis.icc, analysis.exif)
    z_tables, y_tables = _tables(model)
    q = torch.tensor([header.quality])
    rows, cols = analysis.latent.shape[2:]
    tiles = _windows(rows // 4, cols // 4, tile // TILE_ALIGN, HYPER_MARGIN)  # in z elements
    z_values = torch.empty(1, model.config.N, rows // 4, cols // 4, dtype=torch.long)
    with torch.inference_mode():
        gain, _ = model.gains(q)
        for keep, window in tiles:
            _, z = model.hyper_analyse(analysis.latent[(..., *_slices(window, scale=4))], q)
            z_values[(..., *_slices(keep))] = torch.round(z[(..., *_slices(keep, window))] - model.z_medians()).long()
        streams = []
        for keep, window in tiles:
            y = analysis.latent[(..., *_slices(keep, scale=4))] * gain  # the same products h_a saw
            z = z_values[(..., *_slices(keep))]
            scales, means = _hyper_synthesis(model, z_values, keep, window, version=container.VERSION)
            y_values = torch.round(y.double() - means).long()
            streams.append(TileStreams(entropy.encode(z.numpy(), _z_indexes(z.shape), z_tables),
                                       entropy.encode(y_values.numpy(), model.table_indexes(scales).numpy(), y_tables)))
    alpha = zlib.compress(np.ascontiguousarray(analysis.pixels[:, :, -1]).tobytes(), 9) if header.has_alpha else None
    return container.build(Container(header, tuple(streams), alpha))


def compress(image, quality: float = DEFAULT_QUALITY, *, tile: int = DEFAULT_TILE, progress: Progress | None = None,
             icc: bytes | None = None, exif: bytes | None = None, denoise: float | str | None = None) -> bytes:
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
    """
    return _encode(_analyse(image, tile, progress, icc, exif, denoise), quality, tile)


def noise_level(image) -> float:
    """The estimated standard deviation (8-bit units) of white noise in an image's colour channels."""
    from .heads import estimate_sigma

    pixels, mode = _to_array(image)
    return estimate_sigma(pixels[:, :, :3] if mode in ("RGB", "RGBA") else pixels[:, :, :1])


def _sigma(colour: np.ndarray, denoise: float | str) -> float:
    from .heads import MAX_SIGMA, estimate_sigma

    if denoise == "auto":
        return min(estimate_sigma(colour), MAX_SIGMA)
    if isinstance(denoise, str) or not 0 <= denoise <= MAX_SIGMA:
        raise AecError(f"noise level must be a number in [0, {MAX_SIGMA:g}] or 'auto', got {denoise!r}")
    return float(denoise)


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
    import torch

    pixels, mode = _to_array(image)
    colour = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    level = torch.tensor([_sigma(colour, sigma)])
    head = _head("denoising")
    data = compress(image, quality, tile=tile, progress=progress, denoise=float(level))
    margin = -(-(G_S_REACH + head.reach) // STRIDE) * STRIDE  # g_s, then the refiners: 48 px for one 4-layer refiner
    refined = _decode(data, progress,
                      lambda features, base, window: head.refine(_window_pixels(colour, window), base, level),
                      margin=margin)
    return collaborative_filter(pixels, refined, float(level), progress=progress) if collaborative else refined


def collaborative_filter(noisy, pilot: Image.Image, sigma: float | str = "auto", *,
                         progress: Progress | None = None) -> Image.Image:
    """Filter a noisy image (a PIL image or array) again with a collaborative Wiener filter guided by
    `pilot`, an estimate of its clean image with the same size (`denoise(..., collaborative=False)`
    gives one). The result has the pilot's mode, alpha and metadata. `sigma` is the noise's standard
    deviation in 8-bit units (0 to 75) or "auto"; `progress` is called with (bands done, bands in all)."""
    import torch

    from .wiener import collaborative_wiener

    pixels, mode = _to_array(noisy)
    colour_in = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    out = np.array(pilot)
    colour = out[:, :, None] if out.ndim == 2 else out
    if colour.shape[:2] != pixels.shape[:2]:
        raise AecError(f"the pilot is {pilot.width}x{pilot.height} but the noisy image is "
                       f"{pixels.shape[1]}x{pixels.shape[0]}")
    level = _sigma(colour_in, sigma)
    if level == 0:
        return pilot.copy()
    channels = 3 if pilot.mode in ("RGB", "RGBA") else 1
    noisy_planes = colour_in if channels == 3 else colour_in.mean(axis=2, keepdims=True)  # grey as the decoder makes it

    def planes(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a[:, :, :channels].transpose(2, 0, 1).astype(np.float32)) / 255

    with torch.inference_mode():
        filtered = collaborative_wiener(planes(noisy_planes), planes(colour), level / 255, progress)
    colour[:, :, :channels] = filtered.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(out, pilot.mode)
    image.info.update(pilot.info)
    return image


def upscale(image, scale: int = 2, *, quality: float = 8.0, tile: int = DEFAULT_TILE,
            progress: Progress | None = None) -> Image.Image:
    """Enlarge an image through the codec: compress it at `quality` and decode it at `scale` times its size,
    with the original pixels (rather than the decoded ones) as the super-resolution head's base.
    `progress` is called as in `denoise`: for the coding, then for the decoding."""
    pixels, mode = _to_array(image)
    colour = pixels[:, :, :3] if mode in ("RGB", "RGBA") else np.repeat(pixels[:, :, :1], 3, axis=2)
    _check_scale(scale)
    sr = _head("super-resolution")
    return _decode(compress(image, quality, tile=tile, progress=progress), progress,
                   lambda features, base, window: sr(features, _window_pixels(colour, window), True), scale, SR_MARGIN)


@dataclass(frozen=True)
class RateResult:
    """What a rate-controlled compression reached."""

    data: bytes
    quality: float
    bpp: float
    psnr: float | None  # measured on the decoded image when the target was a PSNR
    encodes: int  # how many encodes the search needed
    missed: str | None = None  # why the target was not met, in one line (what was asked, what was reached)


def compress_to(image, *, bpp: float | None = None, size: int | None = None, psnr: float | None = None,
                tile: int = DEFAULT_TILE, progress: Progress | None = None,
                icc: bytes | None = None, exif: bytes | None = None) -> RateResult:
    """Compress to a target by searching the continuous quality; exactly one target must be given.

    Args:
        bpp: bits per pixel of the whole file; the closest reachable rate is chosen.
        size: file size in bytes; the best quality whose file is not larger (the lowest quality's file
            where even that is larger).
        psnr: PSNR-RGB in dB of the decoded image; the smallest file that reaches it (the highest
            quality's file where none does).

    A target beyond what the qualities reach gives the nearest end's file, and `missed` says so.
    """
    targets = {k: v for k, v in {"bpp": bpp, "size": size, "psnr": psnr}.items() if v is not None}
    if len(targets) != 1:
        raise AecError("give exactly one of bpp, size, psnr")
    (kind, target), = targets.items()
    if not target > 0:
        raise AecError(f"{kind} target must be positive, got {target}")
    analysis = _analyse(image, tile, progress, icc, exif)
    width, height = analysis.size
    probes: dict[float, tuple[bytes, float]] = {}

    def measure(q: float) -> float:
        q = round(q * container.QUALITY_SCALE) / container.QUALITY_SCALE
        if q not in probes:
            data = _encode(analysis, q, tile)
            value = len(data) * 8 / (width * height) if kind != "psnr" else _psnr(analysis, decompress(data))
            probes[q] = (data, value)
        return probes[q][1]

    goal = target * 8 / (width * height) if kind == "size" else target
    transform = math.log if kind != "psnr" else (lambda v: v)
    _search(measure, transform, goal, tolerance=0.002 if kind != "psnr" else 0.02)

    if kind == "bpp":
        q = min(probes, key=lambda k: abs(math.log(probes[k][1] / goal)))
    elif kind == "size":
        fitting = [k for k in probes if probes[k][1] <= goal]
        q = max(fitting) if fitting else min(probes)
    else:
        reaching = [k for k in probes if probes[k][1] >= goal]
        q = min(reaching) if reaching else max(probes)
    data, value = probes[q]
    return RateResult(data, q, len(data) * 8 / (width * height), value if kind == "psnr" else None, len(probes),
                      _missed(kind, target, goal, q, value, len(data)))


# A bpp target is met within 2%: the search stops within 0.2% unless the qualities end first.
_BPP_SLACK = 0.02


def _missed(kind: str, target: float, goal: float, q: float, value: float, size: int) -> str | None:
    """One line on a target that the chosen quality does not meet, or None."""
    low, high = q == container.QUALITY_MIN, q == container.QUALITY_MAX
    if kind == "bpp" and abs(math.log(value / goal)) > _BPP_SLACK:
        asked, reached, fewer = f"{target:g} bpp", f"{value:.3f} bpp", value > goal
    elif kind == "size" and value > goal:
        asked, reached, fewer = f"at most {int(target)} bytes", f"{size} bytes", True
    elif kind == "psnr" and value < goal:
        asked, reached, fewer = f"{target:g} dB", f"{value:.2f} dB", False
    else:
        return None
    if low and fewer:
        why = f"the lowest quality ({q:g}) gives " + ("no smaller file" if kind == "size" else "no fewer bits")
    elif high and not fewer:
        why = f"the highest quality ({q:g}) " + ("reaches no higher" if kind == "psnr" else "gives no more bits")
    else:
        why = f"the nearest quality ({q:g}) within the quality steps"
    return f"asked {asked}, reached {reached}: {why}"


def _search(measure: Callable[[float], float], transform: Callable[[float], float], goal: float,
            tolerance: float, max_encodes: int = 12) -> None:
    """Regula falsi (Illinois) on transform(measure(q)) - transform(goal) over q in [1, 8].

    The measure grows with q; rates are close to linear in q after a log, which makes this converge in
    a few encodes. Stops within `tolerance` of the goal, at the quality resolution, or at the limits."""
    def f(q: float) -> float:
        return transform(measure(q)) - transform(goal)

    lo, hi = container.QUALITY_MIN, container.QUALITY_MAX
    f_lo, f_hi = f(lo), f(hi)
    if f_lo >= 0 or f_hi <= 0:
        return  # the goal is outside the reachable range: the caller picks the nearest end
    side = 0
    for _ in range(max_encodes - 2):
        q = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        value = f(q)
        if abs(value) <= tolerance or hi - lo <= 2 / container.QUALITY_SCALE:
            return
        if value < 0:
            lo, f_lo = q, value
            f_hi = f_hi / 2 if side == -1 else f_hi
            side = -1
        else:
            hi, f_hi = q, value
            f_lo = f_lo / 2 if side == 1 else f_lo
            side = 1


def _psnr(analysis: _Analysis, decoded: Image.Image) -> float:
    """PSNR of the colour (or grey) channels; alpha is lossless and left out."""
    n = 3 if analysis.mode in ("RGB", "RGBA") else 1
    a = analysis.pixels[:, :, :n].astype(np.float64)
    b = np.asarray(decoded, dtype=np.float64).reshape(*a.shape[:2], -1)[:, :, :n]
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def _hyper_synthesis(model, z_values, keep: Box, window: Box, version: int):
    """(scales, means) of the y elements of the tile `keep` (in z elements), from the z symbols of
    `window` around it: the integer network (version 2) or the float one (version 1, window = keep)."""
    z = z_values[(..., *_slices(window))]
    if version == 1:
        return model.entropy_parameters(z + model.z_medians())
    scales, means = model.exact_entropy_parameters(z)
    crop = (..., *_slices(keep, window, 4))
    return scales[crop], means[crop]


def _z_indexes(shape) -> np.ndarray:
    """Table of each z element: its channel."""
    return np.broadcast_to(np.arange(shape[1]).reshape(1, -1, 1, 1), shape)


def decompress(data: bytes, *, scale: int = 1, progress: Progress | None = None) -> Image.Image:
    """Decode the bytes of an .aec file into a PIL image of the mode it was made from.

    scale=2 decodes at twice the coded width and height through the super-resolution head."""
    _check_scale(scale)
    if scale == 1:
        return _decode(data, progress)
    sr = _head("super-resolution")
    return _decode(data, progress, lambda features, base, window: sr(features, base, False), scale, SR_MARGIN)


def _check_scale(scale: int) -> None:
    from .heads import SCALE

    if scale not in (1, SCALE):
        raise AecError(f"scale must be 1 or {SCALE}, got {scale!r}")


# A head on the decoder: (g_s's hidden features, the 8-bit decoded image, the latent window) -> pixels.
Finish = Callable[["torch.Tensor", "torch.Tensor", Box], "torch.Tensor"]


def _decode(data: bytes, progress: Progress | None, finish: Finish | None = None, scale: int = 1,
            margin: int | None = None) -> Image.Image:
    """`decompress`, with `finish` (when given) making each window's pixels at `scale` times the coded
    size, from g_s windows with `margin` pixels of context (which must cover g_s and `finish`;
    default MARGIN)."""
    import torch

    c = container.parse(bytes(data))
    header = c.header
    weights, model = _coding_model()
    if header.model_id != weights.model_id:
        raise ModelMismatchError(header.model_id, weights.model_id)
    z_tables, y_tables = _tables(model)
    N, M = model.config.N, model.config.M
    q = torch.tensor([header.quality])
    rows, cols = _latent_size(header.width, header.height)
    if header.version == 1:  # each coding tile alone: float64 h_s, synthesised without margin
        tiles = _windows(rows // 4, cols // 4, header.tile // TILE_ALIGN, 0)
        windows = [tuple((a * 4, b * 4, c * 4, d * 4) for a, b, c, d in pair) for pair in tiles]
    else:
        tiles = _windows(rows // 4, cols // 4, header.tile // TILE_ALIGN, HYPER_MARGIN)
        windows = _windows(rows, cols, WINDOW // STRIDE, (margin or MARGIN) // STRIDE)
    steps = _Steps(progress, len(tiles) + len(windows))
    z_values = torch.empty(1, N, rows // 4, cols // 4, dtype=torch.long)
    y_hat = torch.empty(1, M, rows, cols)
    width, height = header.width * scale, header.height * scale
    colour = np.empty((height, width, 3), dtype=np.uint8)
    with torch.inference_mode(), _native_kernels():
        for (keep, _), streams in zip(tiles, c.tiles):
            z = z_values[(..., *_slices(keep))]
            z[...] = torch.from_numpy(entropy.decode(streams.z, _z_indexes(z.shape), z_tables)).reshape(z.shape)
        for (keep, window), streams in zip(tiles, c.tiles):
            scales, means = _hyper_synthesis(model, z_values, keep, window, header.version)
            y_values = entropy.decode(streams.y, model.table_indexes(scales).numpy(), y_tables)
            y_hat[(..., *_slices(keep, scale=4))] = torch.from_numpy(y_values).reshape(means.shape) + means
            steps.advance()
        for keep, window in windows:
            y = y_hat[(..., *_slices(window))]
            if finish is None:
                x = model.synthesise(y, q)
            else:
                features = model.features(y, q)
                base = model.g_s[-1](features).clamp_(0, 1).mul_(255).round_().div_(255)
                x = finish(features, base, window).clamp_(0, 1)
            x_hat = x[0][(..., *_slices(keep, window, STRIDE * scale))]
            top, left = keep[0] * STRIDE * scale, keep[1] * STRIDE * scale
            part = colour[top : top + x_hat.shape[1], left : left + x_hat.shape[2]]  # cut to the image
            part[...] = (x_hat[:, : part.shape[0], : part.shape[1]] * 255).round_().to(torch.uint8).permute(1, 2, 0).numpy()
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
