import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

import aecodec
from aecodec.errors import ModelMismatchError

from conftest import psnr, synthetic_image


def test_save_and_open_through_pillow(tmp_path):
    img = Image.fromarray(synthetic_image(64, 80))
    path = tmp_path / "x.aec"
    img.save(path, quality=7)
    with Image.open(path) as im:
        assert im.format == "AEC" and im.size == (80, 64) and im.mode == "RGB"
        assert im.info["quality"] == 7.0
        assert psnr(np.asarray(img), np.asarray(im)) > 28
    assert Image.MIME["AEC"] == "image/x-aec"
    assert Image.registered_extensions()[".aec"] == "AEC"


def test_open_is_lazy_and_decoding_needs_no_torch(tmp_path):
    path = tmp_path / "x.aec"
    path.write_bytes(aecodec.compress(synthetic_image(16, 16)))
    code = ("import sys, aecodec; from PIL import Image; im = Image.open(sys.argv[1]); "
            "assert im.size == (16, 16); assert 'onnxruntime' not in sys.modules; im.load(); "
            "assert 'onnxruntime' in sys.modules and 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(path)], check=True)


def test_alpha_mode_through_pillow(tmp_path):
    rgba = np.dstack([synthetic_image(20, 30), np.arange(600, dtype=np.uint8).reshape(20, 30)])
    path = tmp_path / "a.aec"
    Image.fromarray(rgba, "RGBA").save(path)
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        assert np.array_equal(np.asarray(im)[:, :, 3], rgba[:, :, 3])


def test_open_of_another_models_file_names_that_model(tmp_path):
    body = bytearray(aecodec.compress(synthetic_image(16, 16))[:-4])
    body[6:14] = bytes.fromhex("feedfacecafebeef")
    path = tmp_path / "other.aec"
    path.write_bytes(bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))))
    with pytest.raises(ModelMismatchError, match="feedfacecafebeef"):
        Image.open(path)


def test_other_formats_are_not_claimed(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(synthetic_image(8, 8)).save(path)
    with Image.open(path) as im:
        assert im.format == "PNG"


def test_icc_and_exif_are_carried(tmp_path):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    exif[0x010F] = "aecodec test camera"
    img = Image.fromarray(synthetic_image(24, 40))
    path = tmp_path / "m.aec"
    img.save(path, icc_profile=icc, exif=exif.tobytes())
    with Image.open(path) as im:
        assert im.info["icc_profile"] == icc
        assert im.getexif()[0x0112] == 6 and im.getexif()[0x010F] == "aecodec test camera"
        assert im.size == (40, 24)  # like Pillow, the orientation is kept, not applied

    decoded = aecodec.decompress(aecodec.compress(Image.open(path)))
    assert decoded.info["icc_profile"] == icc and decoded.getexif()[0x0112] == 6


def test_cli_restores_metadata_in_png(tmp_path):
    from click.testing import CliRunner

    from aecodec.cli import main

    src = tmp_path / "src.png"
    exif = Image.Exif()
    exif[0x010F] = "maker"
    Image.fromarray(synthetic_image(16, 16)).save(src, icc_profile=b"\x00" * 128, exif=exif.tobytes())
    runner = CliRunner()
    assert runner.invoke(main, ["compress", str(src)]).exit_code == 0
    out = tmp_path / "out.png"
    assert runner.invoke(main, ["decompress", str(src.with_suffix(".aec")), "-o", str(out)]).exit_code == 0
    with Image.open(out) as im:
        assert im.info["icc_profile"] == b"\x00" * 128 and im.getexif()[0x010F] == "maker"
