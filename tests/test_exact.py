"""Bit-exact decoding: the integer h_s, the transform windows, and files of format version 1."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import psnr, synthetic_image

import aecodec
from aecodec import codec, container
from aecodec.errors import ModelMismatchError
from aecodec.integer import IntegerHyperSynthesis

V1_FILE = Path(__file__).parent / "data/v1-synthetic-80x144-q3-tile64.aec"
# sha256 of the pixels that aecodec 0.1.0 (format version 1) decoded from V1_FILE
V1_PIXELS_SHA256 = "71658ec12af600b51a729f6cda565d5b451b39ea4bad5352111dc7b8bd8856c0"


@pytest.fixture(scope="module")
def model():
    return codec.coding_model()[1]


@pytest.fixture(scope="module")
def z_values(model):
    """Real hyper-latent symbols of an image, at two qualities."""
    y = model.analyse(synthetic_image(128, 192, seed=2).transpose(2, 0, 1).astype(np.float32) / 255)
    return [np.round(model.hyper_analyse(y * model.gains(q)[0]) - model.medians[:, None, None]).astype(np.int64)
            for q in (1.0, 7.5)]


def test_integer_h_s_does_not_depend_on_summation_order(model, z_values):
    """Reversing the input channels (and the weights with them) changes the order of every sum."""
    flipped_state = {**model.state, "h_s.0.weight": model.state["h_s.0.weight"][::-1]}
    flipped = IntegerHyperSynthesis(flipped_state, model.medians[::-1])
    for z in z_values:
        scales, means = model.exact_entropy_parameters(z)
        scales2, means2 = flipped(z[::-1])
        assert np.array_equal(scales, scales2) and np.array_equal(means, means2)


def test_integer_h_s_is_the_same_for_any_blas_thread_count(model, z_values, tmp_path):
    np.save(tmp_path / "z.npy", z_values[1])
    code = ("import sys, numpy as np; from aecodec import codec; "
            "s, m = codec.coding_model()[1].exact_entropy_parameters(np.load(sys.argv[1])); "
            "sys.stdout.write(str(hash((s.tobytes(), m.tobytes()))))")
    runs = {subprocess.run([sys.executable, "-c", code, str(tmp_path / "z.npy")], check=True, capture_output=True,
                           text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": n, "PYTHONHASHSEED": "0"}).stdout
            for n in ("1", "2")}
    assert len(runs) == 1


def test_integer_h_s_stays_close_to_the_float_network(model, z_values):
    for z in z_values:
        scales, means = model.exact_entropy_parameters(z)
        float_scales, float_means = model.entropy_parameters(z + model.medians[:, None, None])
        assert (model.table_indexes(scales) != model.table_indexes(float_scales)).mean() < 0.01
        assert np.abs(means - float_means).max() < 0.05


def test_float_h_s_equals_the_torch_network(model, z_values):
    """Format version 1's float64 h_s in numpy, against the torch layers it was made with."""
    torch = pytest.importorskip("torch")
    from aecodec.torch_weights import load_model

    h_s = load_model(codec.coding_model()[0]).h_s.double()
    z_hat = z_values[0] + model.medians[:, None, None]
    with torch.no_grad():
        reference = [t[0].numpy() for t in h_s(torch.from_numpy(z_hat.astype(np.float64))[None]).chunk(2, 1)]
    for ours, theirs in zip(model.entropy_parameters(z_hat), reference):
        assert np.abs(ours - theirs).max() < 1e-9


def test_table_indexes_equal_compressai_build_indexes(model, z_values):
    torch = pytest.importorskip("torch")
    from aecodec.torch_weights import load_model

    gaussian = load_model(codec.coding_model()[0]).gaussian_conditional
    scales, _ = model.exact_entropy_parameters(z_values[0])
    table = model.state["gaussian_conditional.scale_table"].astype(np.float64)
    edges = np.concatenate([table, table * (1 + 1e-12), table * (1 - 1e-12), [-1.0, 0.0, 0.11, 1e9]])
    for s in (scales, edges.reshape(1, 1, -1)):
        assert np.array_equal(model.table_indexes(s), gaussian.build_indexes(torch.from_numpy(s)).long().numpy())


def test_version_1_files_decode_to_the_same_pixels():
    data = V1_FILE.read_bytes()
    assert data[4] == 1 and container.VERSION == 2
    weights, _ = codec.coding_model()
    if data[6:14] != weights.model_id:  # other weights shipped since: the file must say which it needs
        with pytest.raises(ModelMismatchError, match=data[6:14].hex()):
            aecodec.decompress(data)
        return
    pixels = np.asarray(aecodec.decompress(data))
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == V1_PIXELS_SHA256


def test_windows_overlap_so_they_leave_no_seams(monkeypatch):
    """The margin covers the receptive field: 64 px windows decode exactly like one window; less margin does not."""
    img = synthetic_image(192, 256, seed=4)
    data = aecodec.compress(img, quality=6)
    whole = np.asarray(aecodec.decompress(data))  # one window: 192x256 < WINDOW_PIXELS
    monkeypatch.setattr(codec, "WINDOW_PIXELS", 128 * 128)
    assert np.array_equal(whole, np.asarray(aecodec.decompress(data)))
    assert aecodec.compress(img, quality=6) == data  # the analysis windows too
    monkeypatch.setattr(codec, "MARGIN", codec.MARGIN // 2)
    assert psnr(whole, np.asarray(aecodec.decompress(data))) < 48  # seams: one window gives infinity


def test_coding_tiles_leave_no_trace_in_the_pixels(monkeypatch):
    """h_a and h_s see across tile borders: 20 tiles of 64 px decode exactly like one tile."""
    img = synthetic_image(256, 320, seed=4)
    one = aecodec.decompress(aecodec.compress(img, quality=5))
    tiled = aecodec.compress(img, quality=5, tile=64)
    assert container.parse(tiled).header.tiles_x == 5
    assert np.array_equal(np.asarray(one), np.asarray(aecodec.decompress(tiled)))
    monkeypatch.setattr(codec, "HYPER_MARGIN", 1)  # less context than the receptive fields
    assert not np.array_equal(np.asarray(one), np.asarray(aecodec.decompress(aecodec.compress(img, 5, tile=64))))


def test_encoding_with_two_threads_and_decoding_with_one_gives_the_same_pixels(tmp_path):
    data = aecodec.compress(synthetic_image(150, 200, seed=6), quality=3.3)
    here = np.asarray(aecodec.decompress(data))
    src, out = tmp_path / "in.aec", tmp_path / "out.npy"
    src.write_bytes(data)
    code = ("import sys, numpy as np, aecodec; from aecodec.runtime import set_threads; set_threads(1); "
            "np.save(sys.argv[2], np.asarray(aecodec.decompress(open(sys.argv[1], 'rb').read())))")
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(src), str(out)], check=True)
    assert np.array_equal(here, np.load(out))


def test_a_batch_decodes_like_each_image_alone(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from aecodec.cli import main

    names = []
    for i, (h, w) in enumerate([(70, 90), (64, 64), (100, 40)]):
        Image.fromarray(synthetic_image(h, w, seed=10 + i)).save(tmp_path / f"im{i}.png")
        names.append(str(tmp_path / f"im{i}.png"))
    runner = CliRunner()
    assert runner.invoke(main, ["compress", *names, "-o", str(tmp_path / "batch"), "-q", "5"]).exit_code == 0
    for i, name in enumerate(names):
        alone = tmp_path / f"alone{i}.aec"
        assert runner.invoke(main, ["compress", name, "-o", str(alone), "-q", "5"]).exit_code == 0
        a = aecodec.decompress(alone.read_bytes())
        b = aecodec.decompress((tmp_path / "batch" / f"im{i}.aec").read_bytes())
        assert np.array_equal(np.asarray(a), np.asarray(b))
