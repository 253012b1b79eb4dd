import struct
import zlib

import pytest

from aecodec import container
from aecodec.container import Container, Header, TileStreams
from aecodec.errors import FormatError

HEADER = Header("RGB", b"\x01" * 8, 150, 100, 4.25, 64)


def make(header: Header = HEADER, alpha: bytes | None = None) -> bytes:
    tiles = tuple(TileStreams(b"z" * 4 * (i + 1), b"y" * 8) for i in range(header.tiles_x * header.tiles_y))
    return container.build(Container(header, tiles, alpha))


def recrc(body: bytes) -> bytes:
    """Re-seal a modified file so that the field checks, not the CRC, must catch the change."""
    return body + struct.pack(">I", zlib.crc32(body))


def test_round_trip():
    data = make()
    c = container.parse(data)
    assert c.header == HEADER
    assert (c.header.tiles_x, c.header.tiles_y) == (3, 2)
    assert [t.z for t in c.tiles] == [b"z" * 4 * (i + 1) for i in range(6)]
    assert c.alpha is None


def test_metadata_round_trip_and_limits():
    header = Header("RGB", b"\x01" * 8, 10, 10, 2.0, 64, icc=b"icc" * 100, exif=b"Exif\x00\x00MM")
    data = make(header)
    assert container.parse(data).header == header
    import io

    assert container.read_header(io.BytesIO(data)).icc == b"icc" * 100
    body = bytearray(data[:-4])
    body[container._HEADER.size : container._HEADER.size + 4] = struct.pack(">I", container.MAX_METADATA + 1)
    with pytest.raises(FormatError, match="ICC profile .* exceeds"):
        container.parse(recrc(bytes(body)))


def test_alpha_plane_round_trip():
    header = Header("RGBA", b"\x02" * 8, 10, 10, 1.0, 64)
    assert container.parse(make(header, b"alpha!")).alpha == b"alpha!"


def test_wrong_magic():
    with pytest.raises(FormatError, match="not an .aec file"):
        container.parse(b"\x89PNG\r\n\x1a\n" + make()[8:])


def test_newer_version_is_refused_by_name():
    data = bytearray(make()[:-4])
    data[4] = container.CONTEXT_VERSION + 1
    with pytest.raises(FormatError, match=f"version {container.CONTEXT_VERSION + 1}.*newer.*reads versions 1, 2, 3"):
        container.parse(recrc(bytes(data)))


def test_every_truncation_is_detected():
    data = make()
    for n in range(len(data)):
        with pytest.raises(FormatError):
            container.parse(data[:n])


def test_trailing_bytes_are_refused():
    body = make()[:-4]
    with pytest.raises(FormatError):
        container.parse(make() + b"\x00")
    with pytest.raises(FormatError, match="unexpected bytes"):
        container.parse(recrc(body + b"extra"))


def test_every_bit_flip_is_detected():
    data = make()
    for i in range(len(data)):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[i] ^= 1 << bit
            with pytest.raises(FormatError):
                container.parse(bytes(flipped))


@pytest.mark.parametrize("offset, value, message", [
    (5, 9, "mode"),                                  # mode code
    (14, 0, "image size"),                            # width = 0 (low byte of a zero-high u32)
    (22, 0, "quality"),                               # quality high byte -> below 1.0
    (25, 65, "tile size"),                            # tile low byte -> not a multiple of 64
])
def test_bad_header_fields(offset, value, message):
    body = bytearray(make(Header("RGB", b"\x01" * 8, 150, 100, 4.25, 64))[:-4])
    if offset == 14:
        body[14:22] = struct.pack(">II", 0, 100)
    else:
        body[offset] = value
    with pytest.raises(FormatError, match=message):
        container.parse(recrc(bytes(body)))


def test_huge_dimensions_are_refused_before_allocation():
    body = bytearray(make()[:-4])
    body[14:22] = struct.pack(">II", 65535, 65535)
    with pytest.raises(FormatError, match="image size"):
        container.parse(recrc(bytes(body)))


def test_stream_length_past_the_end():
    body = bytearray(make()[:-4])
    first_stream = container._HEADER.size + 8  # after the (empty) ICC and EXIF lengths
    body[first_stream : first_stream + 4] = struct.pack(">I", 1 << 31)
    with pytest.raises(FormatError, match="past the end"):
        container.parse(recrc(bytes(body)))


def test_build_rejects_inconsistent_containers():
    with pytest.raises(ValueError, match="tiles"):
        container.build(Container(HEADER, (TileStreams(b"", b""),)))
    with pytest.raises(ValueError, match="alpha"):
        container.build(Container(Header("RGBA", b"\x01" * 8, 10, 10, 1.0, 64), (TileStreams(b"", b""),)))
