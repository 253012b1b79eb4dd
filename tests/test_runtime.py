"""The light coding path: the ONNX graphs against the torch networks they were exported from, thread
counts, the graphs' integrity, and coding with torch and compressai unavailable."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import synthetic_image

from aecodec import codec, integer, runtime
from aecodec.torch_weights import load_head, load_model
from aecodec.weights import WeightsError, find_weights, weights_dir

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def reference():
    return load_model(find_weights()).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model():
    return codec.coding_model()[1]


def close(ours: np.ndarray, theirs, tolerance: float = 1e-4) -> bool:
    theirs = theirs.numpy()[0] if isinstance(theirs, torch.Tensor) else theirs
    return ours.shape == theirs.shape and np.abs(ours - theirs).max() <= tolerance * max(1.0, np.abs(theirs).max())


def test_the_graphs_compute_what_the_torch_networks_do(model, reference):
    x = synthetic_image(96, 128, seed=1).transpose(2, 0, 1).astype(np.float32) / 255
    with torch.no_grad():
        y = reference.g_a(torch.from_numpy(x)[None])
        gain = torch.from_numpy(model.gains(3.4)[0])[None]
        z = reference.h_a(y * gain)
        features = reference.g_s[:-1](y)
        pixels = reference.g_s[-1](features)
    ours = model.analyse(x)
    assert close(ours, y)
    assert close(model.hyper_analyse(ours * model.gains(3.4)[0]), z)
    x_hat, ours_features = model._synthesis(y=y.numpy()[0])
    assert close(x_hat, pixels) and close(ours_features, features)


def test_the_gains_are_the_torch_model_s(model, reference):
    for q in (1.0, 2.5, 7.999, 8.0):
        gain, inv_gain = reference.gains(torch.tensor([q]))
        assert np.allclose(model.gains(q)[0], gain[0].numpy(), rtol=1e-6)
        assert np.allclose(model.gains(q)[1], inv_gain[0].numpy(), rtol=1e-6)


def test_the_head_graphs_compute_what_the_torch_heads_do(model):
    sr, dn = load_head("super-resolution"), load_head("denoising")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(128, 16, 24)).astype(np.float32)
    base = rng.random((3, 32, 48), dtype=np.float32)
    noisy = rng.random((3, 32, 48), dtype=np.float32)
    level = np.array([20.0], dtype=np.float32)
    t = torch.from_numpy
    with torch.no_grad():
        for original in (False, True):
            theirs = sr(t(features)[None], t(base)[None], original)
            ours = codec.head("super-resolution").run("head", features=features, base=base,
                                                      original=np.array([float(original)], dtype=np.float32))
            assert close(ours, theirs)
        reference = load_model(find_weights()).eval()
        assert close(codec.head("denoising").run("analysis", x=noisy, sigma=level),
                     dn.analyse(reference.g_a, t(noisy)[None], t(level)))
        assert close(codec.head("denoising").run("refine", noisy=noisy, decoded=base, sigma=level),
                     dn.refine(t(noisy)[None], t(base)[None], t(level)))


def test_the_graphs_give_the_same_bits_at_any_thread_count():
    weights = find_weights()
    data, names = weights.graph("synthesis")
    y = np.random.default_rng(1).normal(size=(192, 20, 28)).astype(np.float32)
    outs, before = [], runtime._threads
    for threads in (1, 2, 3):
        runtime.set_threads(threads)
        outs.append(runtime.Graph(data, names, codec.coding_model()[1].state)(y=y)[0])
    runtime.set_threads(before)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_the_sub_pixel_form_is_the_transposed_convolution(reference):
    layer = reference.h_s[2].double()
    x = np.random.default_rng(2).normal(size=(192, 5, 7))
    weight, bias = integer.subpixel(layer.weight.detach().numpy(), layer.bias.detach().numpy())
    ours = integer.pixel_shuffle(integer.conv3x3(x, integer.taps(weight), bias))
    with torch.no_grad():
        assert close(ours, layer(torch.from_numpy(x)[None]), 1e-12)


def test_a_corrupt_or_missing_graph_is_refused(tmp_path):
    for path in weights_dir().iterdir():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "aecodec-mshp-v1.synthesis.onnx").write_bytes(b"not a graph")
    with pytest.raises(WeightsError, match="synthesis.onnx is corrupt"):
        find_weights(folder=tmp_path).graph("synthesis")
    manifest = tmp_path / "aecodec-mshp-v1.json"
    doc = json.loads(manifest.read_text())
    del doc["graphs"]["analysis"]
    manifest.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="tools/export_graphs.py"):
        find_weights(folder=tmp_path).graph("analysis")


def test_coding_needs_neither_torch_nor_compressai(tmp_path):
    """With both made unimportable, every coding feature works, and the torch model names its extra."""
    src = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(synthetic_image(64, 96, seed=3)).save(src)
    code = f"""
import sys
sys.modules["torch"] = sys.modules["compressai"] = None  # import torch now raises ImportError
import numpy as np
from PIL import Image
import aecodec
from aecodec.errors import MissingExtraError
image = Image.open({str(src)!r}); image.load()
data = aecodec.compress(image, 5)
assert aecodec.decompress(data).size == image.size
assert aecodec.decompress(data, scale=2).size == (192, 128)
assert aecodec.compress_to(image, bpp=1.0).data
assert aecodec.upscale(image).size == (192, 128)
assert aecodec.denoise(image, 10).size == image.size
Image.open(__import__("io").BytesIO(data)).load()
try:
    from aecodec.torch_weights import load_model
    from aecodec.weights import find_weights
    load_model(find_weights())
except MissingExtraError as e:
    assert "aecodec[train]" in str(e), e
else:
    raise AssertionError("the torch model loaded without torch")
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_float64_matmul_graph_is_what_onnx_helper_makes():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    def value(name: str, shape: list[str]):
        return helper.make_tensor_value_info(name, TensorProto.DOUBLE, shape)

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul64",
                              [value("a", ["m", "k"]), value("b", ["k", "n"])], [value("c", ["m", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8, producer_name="aecodec")
    assert model.SerializeToString() == runtime.MATMUL64
    onnx.checker.check_model(model)
    a, b = np.random.default_rng(3).integers(-2**20, 2**20, (2, 40, 40)).astype(np.float64)
    assert np.array_equal(runtime.MatMul64()(a, b), a @ b)  # integer sums: exact in any order
