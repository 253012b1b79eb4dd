"""The .aec file layout: header, coded streams, CRC-32. Parse and build; docs/FORMAT.md is the contract.

Every field is checked against its limits before anything is allocated from it, and every problem
raises `FormatError` with a message saying what is wrong.

Layout: fixed header (version 3: then the context model's id), ICC profile, EXIF, then per tile the
z and y streams, the alpha plane for modes with alpha, and a CRC-32 of everything before it.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .errors import FormatError

MAGIC = b"\x89AEC"
VERSION = 2  # what this encoder writes with the hyperprior alone
CONTEXT_VERSION = 3  # what it writes with the context model: y coded in passes
READABLE = (1, 2, 3)  # what this decoder reads: 1 has a float h_s and no window overlap
MODES = ("L", "LA", "RGB", "RGBA")
TILE_ALIGN = 64  # the transforms' total stride: z is 1/64 of the image on each side
MAX_SIDE = 65535
MAX_PIXELS = 1 << 28
MAX_TILE = 1024  # bounds the memory of one tile's hyper-synthesis and entropy coding
QUALITY_SCALE = 1000  # quality is stored in thousandths
QUALITY_MIN, QUALITY_MAX = 1.0, 8.0
MAX_METADATA = 1 << 24  # bytes of ICC profile, and of EXIF, at most

_HEADER = struct.Struct(">4sBB8sIIHH")  # magic, version, mode, model id, width, height, quality, tile
_CONTEXT_ID = struct.Struct(">8s")  # version 3: the context model's id
_LENGTH = struct.Struct(">I")
_CRC = struct.Struct(">I")


@dataclass(frozen=True)
class Header:
    """The fixed fields at the start of every .aec file."""

    mode: str
    model_id: bytes
    width: int
    height: int
    quality: float
    tile: int  # tile side in pixels, a multiple of TILE_ALIGN
    icc: bytes = b""  # ICC profile, as found in the source image (empty: none)
    exif: bytes = b""  # EXIF block as Pillow reads and writes it (empty: none); orientation not applied
    version: int = VERSION
    context_id: bytes = b""  # version 3: the id of the context model that coded y (empty: the hyperprior alone)

    @property
    def tiles_x(self) -> int:
        return -(-self.width // self.tile)

    @property
    def tiles_y(self) -> int:
        return -(-self.height // self.tile)

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("LA", "RGBA")


@dataclass(frozen=True)
class TileStreams:
    """The two entropy-coded streams of one tile: hyper-latent z, then latent y."""

    z: bytes
    y: bytes


@dataclass(frozen=True)
class Container:
    """A whole .aec file: header, one TileStreams per tile in row-major order, and the alpha plane."""

    header: Header
    tiles: tuple[TileStreams, ...]
    alpha: bytes | None = None  # zlib-compressed alpha plane (lossless), for LA and RGBA


def quantize_quality(quality: float) -> int:
    """The stored integer for a quality; the codec uses `code / QUALITY_SCALE` on both sides."""
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise ValueError(f"quality must be in [{QUALITY_MIN:g}, {QUALITY_MAX:g}], got {quality}")
    return round(quality * QUALITY_SCALE)


def _check_header(h: Header) -> None:
    if h.version not in READABLE:
        raise FormatError(f"unknown format version {h.version}")
    if h.mode not in MODES:
        raise FormatError(f"unknown image mode {h.mode!r}")
    if len(h.model_id) != 8:
        raise FormatError("model id must be 8 bytes")
    if len(h.context_id) != (8 if h.version == CONTEXT_VERSION else 0):
        raise FormatError(f"a version {h.version} file {'needs' if h.version == CONTEXT_VERSION else 'has no'} "
                          "context model id")
    if not (1 <= h.width <= MAX_SIDE and 1 <= h.height <= MAX_SIDE) or h.width * h.height > MAX_PIXELS:
        raise FormatError(f"image size {h.width}x{h.height} is outside the limits ({MAX_SIDE} a side, {MAX_PIXELS} pixels)")
    if not (QUALITY_MIN <= h.quality <= QUALITY_MAX):
        raise FormatError(f"quality {h.quality} is outside [{QUALITY_MIN:g}, {QUALITY_MAX:g}]")
    if h.tile % TILE_ALIGN or not TILE_ALIGN <= h.tile <= MAX_TILE:
        raise FormatError(f"tile size {h.tile} is not a multiple of {TILE_ALIGN} in [{TILE_ALIGN}, {MAX_TILE}]")
    if len(h.icc) > MAX_METADATA or len(h.exif) > MAX_METADATA:
        raise FormatError(f"ICC profile or EXIF larger than {MAX_METADATA} bytes")


def build(c: Container) -> bytes:
    """Serialize a container; the inverse of `parse`."""
    h = c.header
    _check_header(h)
    if len(c.tiles) != h.tiles_x * h.tiles_y:
        raise ValueError(f"expected {h.tiles_x * h.tiles_y} tiles, got {len(c.tiles)}")
    if (c.alpha is not None) != h.has_alpha:
        raise ValueError(f"mode {h.mode} {'needs' if h.has_alpha else 'has no'} alpha plane")
    parts = [_HEADER.pack(MAGIC, h.version, MODES.index(h.mode), h.model_id, h.width, h.height,
                          quantize_quality(h.quality), h.tile),
             h.context_id, _LENGTH.pack(len(h.icc)), h.icc, _LENGTH.pack(len(h.exif)), h.exif]
    for t in c.tiles:
        parts += [_LENGTH.pack(len(t.z)), t.z, _LENGTH.pack(len(t.y)), t.y]
    if c.alpha is not None:
        parts += [_LENGTH.pack(len(c.alpha)), c.alpha]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def read_header(fp: BinaryIO) -> Header:
    """Read and check the head of a file: fixed fields, ICC profile, EXIF (what Image.open needs)."""
    data = fp.read(_HEADER.size)
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not an .aec file (wrong magic bytes)")
    if len(data) < _HEADER.size:
        raise FormatError(f"truncated .aec file: {len(data)} bytes, the header alone is {_HEADER.size}")
    magic, version, mode, model_id, width, height, quality, tile = _HEADER.unpack_from(data)
    if version not in READABLE:
        newer = "a newer" if version > max(READABLE) else "an unknown"
        raise FormatError(f"this .aec file is format version {version}, made by {newer} aecodec; "
                          f"this decoder reads versions {', '.join(map(str, READABLE))}")
    if mode >= len(MODES):
        raise FormatError(f"unknown image mode code {mode}")
    context_id = b""
    if version == CONTEXT_VERSION:
        context_id = fp.read(_CONTEXT_ID.size)
        if len(context_id) < _CONTEXT_ID.size:
            raise FormatError("truncated .aec file: the context model id is missing")
    header = Header(MODES[mode], model_id, width, height, quality / QUALITY_SCALE, tile,
                    _read_metadata(fp, "ICC profile"), _read_metadata(fp, "EXIF"), version, context_id)
    _check_header(header)
    return header


def _read_metadata(fp: BinaryIO, what: str) -> bytes:
    raw = fp.read(_LENGTH.size)
    if len(raw) < _LENGTH.size:
        raise FormatError(f"truncated .aec file: the {what} length is missing")
    (n,) = _LENGTH.unpack(raw)
    if n > MAX_METADATA:
        raise FormatError(f"corrupt .aec file: {what} of {n} bytes exceeds the limit of {MAX_METADATA}")
    data = fp.read(n)
    if len(data) < n:
        raise FormatError(f"truncated .aec file: the {what} is cut short")
    return data


def parse(data: bytes) -> Container:
    """Parse and fully validate a .aec file: header, CRC, stream lengths, no missing or trailing bytes."""
    head = io.BytesIO(data)
    header = read_header(head)
    if len(data) < head.tell() + _CRC.size:
        raise FormatError("truncated .aec file: no room for the CRC")
    body, (crc,) = data[: -_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise FormatError("corrupt .aec file: CRC-32 mismatch (the file was damaged or truncated)")

    pos = head.tell()

    def take() -> bytes:
        nonlocal pos
        if pos + _LENGTH.size > len(body):
            raise FormatError("truncated .aec file: a stream length is missing")
        (n,) = _LENGTH.unpack_from(body, pos)
        pos += _LENGTH.size
        if n > len(body) - pos:
            raise FormatError(f"corrupt .aec file: a stream of {n} bytes runs past the end of the file")
        pos += n
        return body[pos - n : pos]

    tiles = tuple(TileStreams(take(), take()) for _ in range(header.tiles_x * header.tiles_y))
    alpha = take() if header.has_alpha else None
    if pos != len(body):
        raise FormatError(f"corrupt .aec file: {len(body) - pos} unexpected bytes after the last stream")
    return Container(header, tiles, alpha)
