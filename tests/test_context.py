"""The context model for y: its integer copy against torch, exact coding at any thread count, format version 3."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aecodec import codec, container, runtime
from aecodec.context import ContextConfig, ContextModel, table_index
from aecodec.errors import AecError, ModelMismatchError
from aecodec.integer_context import IntegerContext
from aecodec.weights import Weights

from conftest import psnr, synthetic_image


def _model(seed: int | None) -> ContextModel:
    """A fresh context model (the hyperprior alone), or one with random last layers standing for a trained one."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed or 0)
        model = ContextModel(ContextConfig()).eval()
        if seed is not None:
            for seq in model.out:
                seq[-1].weight.normal_(std=0.05)
                seq[-1].bias.normal_(std=0.3)
    return model


def _integer(model: ContextModel, threads: int = 2) -> IntegerContext:
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    before = runtime.threads()
    runtime.set_threads(threads)  # the thread pool of the sessions opened now
    try:
        return IntegerContext(state, {"groups": model.config.groups, "quality": model.config.quality}, runtime.MatMul64())
    finally:
        runtime.set_threads(before)


def _installed(monkeypatch, ctx: IntegerContext, model_id: bytes = b"ctx-test") -> None:
    weights = Weights(None, {"sha256": model_id.hex() + "00" * 24})
    monkeypatch.setattr(codec, "context_model", lambda: (weights, ctx))


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(synthetic_image(160, 224, seed=3))


@pytest.fixture(scope="module")
def latents(image):
    """Gained y of the test image at quality 3, and the hyperprior's (table indexes, means) from the codec."""
    _, model = codec.coding_model()
    analysis = codec.analyse(image, codec.DEFAULT_TILE, None, b"", b"")
    gain, _ = model.gains(3.0)
    y = (analysis.latent * gain).astype(np.float64)
    z = np.round(model.hyper_analyse(y.astype(np.float32)) - model.medians[:, None, None])
    scales, means = model.exact_entropy_parameters(z)
    return y, scales, means


def _agreement(model: ContextModel, ctx: IntegerContext, latents) -> tuple[float, float, float]:
    """(largest |index shift|, share of identical tables, share of means within 0.01 (a hundredth of a quantisation step)) between the torch
    model and an integer copy, on the same latents at quality 3. Not all: where float32 rounds one y the
    other way, the later groups see another y_hat."""
    y, scales, means = latents
    index0 = torch.from_numpy(np.asarray(codec.coding_model()[1].table_indexes(scales), np.float32))[None]
    with torch.no_grad():
        shift, mean = model.parameters_of(torch.from_numpy(y).float()[None], index0, torch.from_numpy(means).float()[None],
                                          torch.tensor([3.0]))
    got_index, got_mean = np.empty(y.shape, np.int64), np.empty(y.shape)

    def code(t, where, chosen, index, mean_):
        got_index[where][:, chosen] = index.reshape(-1, chosen.sum())
        got_mean[where][:, chosen] = mean_.reshape(-1, chosen.sum())
        return np.round(y[where][:, chosen].ravel() - mean_)

    ctx.code_y(index0[0].numpy().astype(np.int64), means, 3.0, [(0, 0, *y.shape[1:])], code)
    same = float(np.mean(got_index == (index0 + shift)[0].numpy()))
    return float(np.abs(shift.numpy()).max()), same, float(np.mean(np.abs(got_mean - mean[0].numpy()) < 1e-2))


def test_integer_network_follows_torch(latents):
    """The integer copy picks the tables and means the torch model computes (coded as whole tables)."""
    model = _model(seed=1)
    moved, same, close = _agreement(model, _integer(model), latents)
    assert moved >= 1 and same > 0.995 and close > 0.995  # the random model does move tables


def test_table_index_is_the_coders(latents):
    _, scales, _ = latents
    coder = codec.coding_model()[1].table_indexes(scales)
    assert np.array_equal(table_index(torch.from_numpy(scales)).numpy().astype(np.int64), coder)


def test_untrained_context_decodes_as_the_hyperprior(monkeypatch, image):
    """At step 0 the context model is the hyperprior: a version 3 file decodes to the version 2 file's pixels."""
    _installed(monkeypatch, _integer(_model(seed=None)))
    plain, ours = codec.compress(image, 3), codec.compress(image, 3, context=True)
    assert container.parse(plain).header.version == 2
    header = container.parse(ours).header
    assert header.version == 3 and header.context_id == b"ctx-test"
    assert np.array_equal(np.asarray(codec.decompress(ours)), np.asarray(codec.decompress(plain)))
    assert abs(len(ours) - len(plain)) <= 16 + 4 * 10  # the id, and at most a word of flush a pass


def test_context_coding_is_exact_at_any_thread_count(monkeypatch, image):
    """Symbols, tables and means identical at 1, 2 and 3 threads and between the encoder and the decoder."""
    model = _model(seed=2)
    seen = {}
    files = []
    for threads in (1, 2, 3):
        ctx = _integer(model, threads)
        passes = []
        original = ctx.code_y

        def recording(index0, means, quality, tiles, code, y_hat=None, original=original, passes=passes):
            return original(index0, means, quality, tiles,
                            lambda *a: passes.append((a[3].copy(), a[4].copy(), v := code(*a))) or v, y_hat)

        monkeypatch.setattr(ctx, "code_y", recording)
        _installed(monkeypatch, ctx)
        files.append(codec.compress(image, 5, context=True, tile=128))
        encoded = list(passes)
        passes.clear()
        pixels = np.asarray(codec.decompress(files[-1]))
        assert len(passes) == len(encoded) == 10 * len(container.parse(files[-1]).tiles)
        for (i_e, m_e, v_e), (i_d, m_d, v_d) in zip(encoded, passes):
            assert np.array_equal(i_e, i_d) and np.array_equal(m_e, m_d) and np.array_equal(v_e, v_d)
        seen[threads] = pixels
    assert files[0] == files[1] == files[2]
    assert np.array_equal(seen[1], seen[2]) and np.array_equal(seen[1], seen[3])


def test_tiles_split_the_streams_not_the_context(monkeypatch, image):
    """The context crosses tile borders: an image coded in 128 px tiles decodes to the pixels of one tile."""
    _installed(monkeypatch, _integer(_model(seed=5)))
    tiled, whole = codec.compress(image, 4, context=True, tile=128), codec.compress(image, 4, context=True)
    assert len(container.parse(tiled).tiles) == 4 and len(container.parse(whole).tiles) == 1
    assert np.array_equal(np.asarray(codec.decompress(tiled)), np.asarray(codec.decompress(whole)))


def test_a_random_context_moves_the_bits_not_the_quality(monkeypatch, image):
    """A context model that moves tables and means codes other bytes; y_hat stays within half a step of
    y whatever the means, so the pixels keep the quality of the hyperprior's file."""
    _installed(monkeypatch, _integer(_model(seed=3)))
    plain, ours = codec.compress(image, 4), codec.compress(image, 4, context=True)
    assert container.parse(ours).tiles[0].y != container.parse(plain).tiles[0].y
    original = np.asarray(image)
    assert abs(psnr(np.asarray(codec.decompress(ours)), original) - psnr(np.asarray(codec.decompress(plain)), original)) < 1


def test_a_file_of_another_context_model_is_refused(monkeypatch, image):
    _installed(monkeypatch, _integer(_model(seed=None)), b"ctx-one!")
    data = codec.compress(image, 2, context=True)
    _installed(monkeypatch, _integer(_model(seed=None)), b"ctx-two!")
    with pytest.raises(ModelMismatchError, match="context model"):
        codec.decompress(data)


def test_version_3_header_needs_its_context_id():
    header = container.Header("RGB", b"m" * 8, 64, 64, 4.0, 64, version=3)
    with pytest.raises(container.FormatError, match="context model id"):
        container.build(container.Container(header, (container.TileStreams(b"", b""),)))


def test_without_the_context_model_the_error_is_one_line(monkeypatch, tmp_path, image):
    from aecodec import weights

    codec.coding_model()  # the backbone stays loaded: only the context model is missing
    monkeypatch.setenv("AECODEC_WEIGHTS", str(tmp_path))
    weights.load_context.cache_clear()
    try:
        with pytest.raises(AecError, match="^no context model: weights 'aecodec-context-v1' not found"):
            codec.compress(image, 3, context=True)
    finally:
        weights.load_context.cache_clear()


def test_the_command_line_codes_with_the_context_model_and_says_so(monkeypatch, tmp_path, image):
    import json

    from click.testing import CliRunner

    from aecodec.cli import main

    _installed(monkeypatch, _integer(_model(seed=4)))
    png, aec = tmp_path / "a.png", tmp_path / "a.aec"
    image.save(png)
    r = CliRunner().invoke(main, ["compress", str(png), "--context", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["files"][0]["entropy"] == "context"
    assert container.parse(aec.read_bytes()).header.version == 3
    r = CliRunner().invoke(main, ["info", str(aec)])
    assert "format version 3," in r.output and f"entropy:    context model {b'ctx-test'.hex()}" in r.output
    r = CliRunner().invoke(main, ["decompress", str(aec), "-o", str(tmp_path / "b.png")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(codec.decompress(aec.read_bytes())))
    r = CliRunner().invoke(main, ["compress", str(png), "-o", str(tmp_path / "c.aec")])
    assert r.exit_code == 0 and "entropy:    hyperprior" in CliRunner().invoke(main, ["info", str(tmp_path / "c.aec")]).output


def test_the_shipped_context_model_saves_bits_on_a_photo_and_follows_torch(latents):
    """The installed context model (trained for the installed backbone) codes a real photo in fewer bytes
    at every quality, and its integer copy picks the tables its torch weights compute."""
    from matplotlib import cbook
    from safetensors.torch import load_file

    from aecodec.weights import CONTEXT_NAME, find_weights

    shipped = find_weights(CONTEXT_NAME)
    assert shipped.manifest["backbone"] == codec.coding_model()[0].manifest["model_id"]
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        photo = np.asarray(im.convert("RGB"))
    for q in (1, 4, 8):
        plain, ours = codec.compress(photo, q), codec.compress(photo, q, context=True)
        assert container.parse(ours).header.context_id == shipped.model_id
        assert len(ours) < len(plain), q
    model = ContextModel(ContextConfig.from_json(json.dumps(shipped.manifest["config"]))).eval()
    model.load_state_dict(load_file(str(shipped.path)))
    moved, same, close = _agreement(model, codec.context_model()[1], latents)
    assert moved >= 1 and same > 0.995 and close > 0.995
