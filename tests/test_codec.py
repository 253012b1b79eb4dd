import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec import container
from aecodec.errors import AecError, FormatError, ModelMismatchError

from conftest import psnr, synthetic_image


@pytest.mark.parametrize("height, width", [(1, 1), (3, 200), (65, 63), (96, 128)])
def test_round_trip_sizes(height, width):
    img = synthetic_image(height, width)
    out = aecodec.decompress(aecodec.compress(img, quality=6))
    assert out.mode == "RGB" and out.size == (width, height)


def test_quality_orders_rate_and_distortion(photo):
    low, high = aecodec.compress(photo, quality=1), aecodec.compress(photo, quality=8)
    assert len(low) < len(high)
    p_low = psnr(photo, np.asarray(aecodec.decompress(low)))
    p_high = psnr(photo, np.asarray(aecodec.decompress(high)))
    assert 20 < p_low < p_high
    assert p_high > 28


def test_continuous_quality_lies_between_levels(photo):
    sizes = [len(aecodec.compress(photo, quality=q)) for q in (3.0, 3.5, 4.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert container.parse(aecodec.compress(photo, quality=3.5)).header.quality == 3.5


def test_greyscale_round_trip(photo):
    grey = Image.fromarray(photo).convert("L")
    out = aecodec.decompress(aecodec.compress(grey, quality=8))
    assert out.mode == "L" and out.size == grey.size
    assert psnr(np.asarray(grey), np.asarray(out)) > 28


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept_losslessly(photo, mode):
    rng = np.random.default_rng(3)
    alpha = rng.integers(0, 256, photo.shape[:2], dtype=np.uint8)
    img = Image.fromarray(np.dstack([photo, alpha]), "RGBA").convert(mode)
    out = aecodec.decompress(aecodec.compress(img))
    assert out.mode == mode
    assert np.array_equal(np.asarray(out)[:, :, -1], np.asarray(img)[:, :, -1])


def test_palette_image_with_transparency_keeps_alpha(photo):
    img = Image.fromarray(photo).convert("P")
    img.info["transparency"] = 0
    out = aecodec.decompress(aecodec.compress(img))
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[:, :, 3], np.asarray(img.convert("RGBA"))[:, :, 3])


def test_sixteen_bit_input_is_converted_with_a_warning(photo):
    img16 = Image.fromarray(photo[:, :, 0].astype(np.uint16) * 257)
    with pytest.warns(UserWarning, match="8-bit"):
        out = aecodec.decompress(aecodec.compress(img16, quality=8))
    assert out.mode == "L" and psnr(photo[:, :, 0], np.asarray(out)) > 28
    with pytest.warns(UserWarning, match="16-bit"):
        aecodec.compress(np.dstack([photo.astype(np.uint16) * 257]), quality=1)


def test_tiles_cover_the_image(photo):
    img = synthetic_image(150, 200)
    data = aecodec.compress(img, quality=8, tile=64)
    h = container.parse(data).header
    assert (h.tiles_x, h.tiles_y) == (4, 3)
    assert psnr(img, np.asarray(aecodec.decompress(data))) > 28


def test_decoding_is_repeatable(photo):
    data = aecodec.compress(photo, quality=5)
    first, second = aecodec.decompress(data), aecodec.decompress(data)
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_thread_count_does_not_change_pixels(tmp_path, photo):
    """Encode with 2 threads in one process, decode with 1 and 2 threads in others: same pixels."""
    src = tmp_path / "in.aec"
    src.write_bytes(aecodec.compress(synthetic_image(130, 190, seed=5), quality=4))
    outs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"out{threads}.npy"
        code = ("import sys, numpy as np, aecodec; from aecodec.runtime import set_threads; set_threads(int(sys.argv[1])); "
                "np.save(sys.argv[3], np.asarray(aecodec.decompress(open(sys.argv[2], 'rb').read())))")
        subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(threads), str(src), str(out)], check=True)
        outs.append(np.load(out))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_wrong_model_id_names_the_model_needed(photo):
    data = bytearray(aecodec.compress(photo)[:-4])
    data[6:14] = bytes.fromhex("0123456789abcdef")
    import struct
    import zlib

    sealed = bytes(data) + struct.pack(">I", zlib.crc32(bytes(data)))
    with pytest.raises(ModelMismatchError, match="needs model 0123456789abcdef"):
        aecodec.decompress(sealed)


def test_corrupt_file_raises_format_error(photo):
    data = bytearray(aecodec.compress(photo))
    data[40] ^= 0x10
    with pytest.raises(FormatError, match="CRC"):
        aecodec.decompress(bytes(data))
    with pytest.raises(FormatError):
        aecodec.decompress(b"")


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
    (np.zeros((4, 4, 5), dtype=np.uint8), "shape"),
    (np.zeros((0, 4, 3), dtype=np.uint8), "size"),
    ("not an image", "expected a PIL image"),
])
def test_bad_images_are_refused(bad, message):
    with pytest.raises(AecError, match=message):
        aecodec.compress(bad)


@pytest.mark.parametrize("quality", [0.5, 8.5, float("nan")])
def test_quality_out_of_range(photo, quality):
    with pytest.raises(AecError, match="quality"):
        aecodec.compress(photo, quality=quality)


def test_rate_control_reaches_each_kind_of_target(photo):
    free = len(aecodec.compress(photo, quality=5)) * 8 / (photo.shape[0] * photo.shape[1])
    r = aecodec.compress_to(photo, bpp=free)
    assert abs(r.bpp / free - 1) < 0.02 and 2 <= r.encodes <= 12
    assert len(r.data) * 8 / (photo.shape[0] * photo.shape[1]) == r.bpp

    limit = len(aecodec.compress(photo, quality=3.3))
    s = aecodec.compress_to(photo, size=limit)
    assert len(s.data) <= limit and len(s.data) > 0.95 * limit

    p = aecodec.compress_to(photo, psnr=30.0)
    assert p.psnr >= 30.0
    assert psnr(photo, np.asarray(aecodec.decompress(p.data))) == pytest.approx(p.psnr)
    lower = aecodec.compress_to(photo, psnr=p.psnr - 1.0)
    assert len(lower.data) < len(p.data)


def test_rate_control_errors(photo):
    with pytest.raises(AecError, match="exactly one"):
        aecodec.compress_to(photo, bpp=1.0, psnr=30)


def test_rate_control_says_when_a_target_is_missed(photo):
    lowest, highest = aecodec.compress(photo, quality=1), aecodec.compress(photo, quality=8)
    pixels = photo.shape[0] * photo.shape[1]
    assert aecodec.compress_to(photo, bpp=len(lowest) * 16 / pixels).missed is None  # inside the range
    few = aecodec.compress_to(photo, bpp=len(lowest) * 4 / pixels)  # half the lowest quality's rate
    assert few.quality == 1 and few.data == lowest
    assert few.missed == (f"asked {len(lowest) * 4 / pixels:g} bpp, reached {len(lowest) * 8 / pixels:.3f} bpp: "
                          "the lowest quality (1) gives no fewer bits")
    many = aecodec.compress_to(photo, bpp=100.0)
    assert many.quality == 8 and many.data == highest and "the highest quality (8) gives no more bits" in many.missed
    tiny = aecodec.compress_to(photo, size=10)  # never larger than asked, unless even quality 1 is
    assert tiny.data == lowest
    assert tiny.missed == (f"asked at most 10 bytes, reached {len(lowest)} bytes: "
                           "the lowest quality (1) gives no smaller file")
    sharp = aecodec.compress_to(photo, psnr=99.0)
    assert sharp.data == highest
    assert sharp.missed == f"asked 99 dB, reached {sharp.psnr:.2f} dB: the highest quality (8) reaches no higher"
    assert aecodec.compress_to(photo, psnr=10.0).missed is None  # quality 1 is above it: met
