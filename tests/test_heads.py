"""The denoising and super-resolution heads: sizes, modes, windows, the backbone untouched, and that
they do what they are for on a real photo (Grace Hopper, public domain, shipped with matplotlib)."""

import json
import shutil

import numpy as np
import pytest
from conftest import noisy, psnr, synthetic_image
from PIL import Image

from aecodec import codec, enhance
from aecodec.errors import AecError
from aecodec.noise import estimate_sigma
from aecodec.torch_weights import load_head
from aecodec.weights import WeightsError, weights_dir


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """A real photo, reduced 2x from its JPEG (which removes most of the JPEG's artifacts), 256x296 px."""
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        return np.asarray(im.convert("RGB").resize((256, 300), Image.Resampling.BICUBIC))[:296]


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    weights = np.array([65.481, 128.553, 24.966]) / 255
    return psnr(a.astype(np.float64) @ weights, b.astype(np.float64) @ weights)


def test_decompress_at_scale_2_beats_bicubic_of_the_decoded_image(hopper):
    small = Image.fromarray(hopper).resize((128, 148), Image.Resampling.BICUBIC)
    data = codec.compress(small, 8)
    big = codec.decompress(data, scale=2)
    assert big.size == (256, 296) and big.mode == "RGB"
    bicubic = codec.decompress(data).resize((256, 296), Image.Resampling.BICUBIC)
    assert luma_psnr(np.asarray(big), hopper) > luma_psnr(np.asarray(bicubic), hopper) + 1


def test_upscale_beats_bicubic(hopper):
    small = Image.fromarray(hopper).resize((128, 148), Image.Resampling.BICUBIC)
    big = enhance.upscale(small)
    bicubic = small.resize((256, 296), Image.Resampling.BICUBIC)
    assert big.size == (256, 296)
    assert luma_psnr(np.asarray(big), hopper) > luma_psnr(np.asarray(bicubic), hopper) + 1


def test_scale_2_keeps_mode_and_alpha(photo):
    alpha = np.tile(np.linspace(0, 255, photo.shape[1]).astype(np.uint8), (photo.shape[0], 1))
    for image in (Image.fromarray(photo).convert("L"), Image.fromarray(np.dstack([photo, alpha]), "RGBA")):
        big = codec.decompress(codec.compress(image, 6), scale=2)
        assert big.mode == image.mode and big.size == (2 * image.width, 2 * image.height)
    big_alpha = np.asarray(big)[:, :, 3].astype(np.float64)
    assert np.abs(big_alpha[::2, ::2] - alpha).max() <= 2  # a smooth ramp stays itself


def test_scale_2_windows_leave_no_trace(monkeypatch):
    data = codec.compress(Image.fromarray(synthetic_image(150, 200, seed=3)), 7)
    whole = np.asarray(codec.decompress(data, scale=2))
    monkeypatch.setattr(codec, "WINDOW_PIXELS", 256 * 256)  # 64 latent elements at scale 2: several windows
    assert np.array_equal(np.asarray(codec.decompress(data, scale=2)), whole)


def test_bad_scale_is_refused(photo):
    with pytest.raises(AecError, match="scale"):
        codec.decompress(codec.compress(Image.fromarray(photo), 4), scale=3)


def test_denoise_removes_noise(hopper):
    image = hopper[:160, :192]
    noise = noisy(image, 25)
    out = np.asarray(enhance.denoise(Image.fromarray(noise), 25))
    assert out.shape == image.shape
    assert psnr(out, image) > psnr(noise, image) + 5
    fast = enhance.denoise(Image.fromarray(noise), 25, collaborative=False)
    assert psnr(out, image) > psnr(np.asarray(fast), image) + 0.2  # the collaborative filter adds to the refiner
    assert np.array_equal(np.asarray(enhance.collaborative_filter(noise, fast, 25)), out)  # denoise is the two in turn


def test_collaborative_filter_refuses_a_pilot_of_another_size(hopper):
    with pytest.raises(AecError, match="pilot is 64x32"):
        enhance.collaborative_filter(hopper[:40, :64], Image.fromarray(hopper[:32, :64]), 10)


def test_compress_denoise_spends_fewer_bits_and_decodes_with_the_plain_decoder(hopper):
    image = hopper[:160, :192]
    noise = Image.fromarray(noisy(image, 25))
    plain = codec.compress(noise, 4)
    clean = codec.compress(noise, 4, denoise=25)
    assert len(clean) < 0.85 * len(plain)
    decoded = np.asarray(codec.decompress(clean))  # the ordinary decoder: no head involved
    assert psnr(decoded, image) > psnr(np.asarray(codec.decompress(plain)), image) + 0.4


def test_denoise_analysis_windows_leave_no_trace(monkeypatch):
    image = Image.fromarray(noisy(synthetic_image(150, 200, seed=4), 20))
    whole = codec.compress(image, 5, denoise=20)
    monkeypatch.setattr(codec, "WINDOW_PIXELS", 160 * 160)  # room for the analysis margin of 64 px
    assert codec.compress(image, 5, denoise=20) == whole


def test_denoise_windows_leave_no_trace(monkeypatch):
    image = Image.fromarray(noisy(synthetic_image(150, 200, seed=5), 25))
    whole = np.asarray(enhance.denoise(image, 25))
    monkeypatch.setattr(codec, "WINDOW_PIXELS", 160 * 160)
    assert np.array_equal(np.asarray(enhance.denoise(image, 25)), whole)


def test_denoise_windows_cover_a_second_refiner(monkeypatch, tmp_path):
    """The decoding windows' margin follows the refiners' reach: a head grown by a second refiner on the
    image folded 2x2 (21 px further than the shipped one's 4) leaves no trace of the windows either."""
    import dataclasses

    import torch

    from aecodec.heads import Denoising
    from aecodec.torch_weights import load_head

    from aecodec.runtime import HeadModel
    from aecodec.torch_weights import load_model, save_weights
    from aecodec.weights import find_weights

    shipped = load_head("denoising")
    with torch.random.fork_rng(), torch.no_grad():  # the same grown head whatever ran before
        torch.manual_seed(0)
        grown = Denoising(dataclasses.replace(shipped.config, second_channels=8, second_layers=8, second_fold=2))
        grown.load_state_dict(shipped.state_dict(), strict=False)
        grown.second[-2].weight.normal_(std=0.05)
    weights, backbone = codec.coding_model()
    path = tmp_path / "grown.safetensors"
    save_weights(grown, path, {"kind": "denoising", "backbone": weights.manifest["model_id"]},
                 backbone=(load_model(weights), weights.path))
    head = HeadModel(find_weights("grown", tmp_path), backbone)
    assert head.margin("refine") == 64  # g_s's 30 px and the refiners' 4 + 17 px, in whole latent elements
    window = np.random.default_rng(1).random((3, 32, 32), np.float32)
    inputs = {"noisy": window, "decoded": window, "sigma": np.array([25], np.float32)}
    assert np.abs(head.run("refine", **inputs) - codec.head("denoising").run("refine", **inputs)).max() > 2 / 255
    image = Image.fromarray(noisy(synthetic_image(150, 200, seed=5), 25))
    plain = np.asarray(enhance.denoise(image, 25, collaborative=False))
    monkeypatch.setattr(codec, "head", lambda kind: head)
    monkeypatch.setattr(enhance, "head", lambda kind: head)
    whole = np.asarray(enhance.denoise(image, 25, collaborative=False))
    assert not np.array_equal(whole, plain)  # the second refiner is at work
    monkeypatch.setattr(codec, "WINDOW_PIXELS", 160 * 160)
    assert np.array_equal(np.asarray(enhance.denoise(image, 25, collaborative=False)), whole)


def test_denoise_keeps_mode_alpha_and_metadata(photo):
    alpha = np.full(photo.shape[:2], 99, np.uint8)
    image = Image.fromarray(np.dstack([noisy(photo, 15), alpha]), "RGBA")
    image.info["icc_profile"] = b"icc"
    out = enhance.denoise(image, 15)
    assert out.mode == "RGBA" and out.size == image.size and out.info["icc_profile"] == b"icc"
    assert np.array_equal(np.asarray(out)[:, :, 3], alpha)
    grey = enhance.denoise(Image.fromarray(noisy(photo, 15)).convert("L"), 15)
    assert grey.mode == "L" and grey.size == image.size


@pytest.mark.parametrize("sigma", [-1, 80, "loud"])
def test_bad_noise_levels_are_refused(photo, sigma):
    with pytest.raises(AecError, match="noise level"):
        codec.compress(Image.fromarray(photo), 4, denoise=sigma)


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_noise_level_estimate(hopper, sigma):
    assert estimate_sigma(noisy(hopper, sigma)) == pytest.approx(sigma, rel=0.2, abs=2)
    assert enhance.noise_level(Image.fromarray(noisy(hopper, sigma))) == pytest.approx(sigma, rel=0.2, abs=2)


def test_heads_refuse_another_backbone(tmp_path):
    for path in weights_dir().iterdir():
        shutil.copy(path, tmp_path / path.name)
    manifest = tmp_path / "aecodec-sr-v1.json"
    doc = json.loads(manifest.read_text())
    doc["backbone"] = "0123456789abcdef"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="backbone 0123456789abcdef"):
        load_head("super-resolution", tmp_path)


def test_folded_refiner_takes_any_size():
    """A refiner on the image folded 2x2 (--refine-fold) pads odd sizes itself and starts near the decoded image."""
    import torch

    from aecodec.heads import Denoising, HeadConfig

    head = Denoising(HeadConfig("denoising", refine_fold=2, refine_layers=5)).eval()
    noisy_px, decoded = torch.rand(1, 3, 37, 52), torch.rand(1, 3, 37, 52)
    with torch.no_grad():
        out = head.refine(noisy_px, decoded, torch.tensor([25.0]))
    assert out.shape == decoded.shape
    assert 0 < (out - decoded).abs().mean() < 0.05


def test_second_refiner_corrects_the_first():
    """A second refiner (--second-channels) corrects the first one's output, on any size; it starts as nothing,
    so a trained head grown by it gives what it gave."""
    import torch

    from aecodec.heads import Denoising, HeadConfig

    one = Denoising(HeadConfig("denoising")).eval()
    two = Denoising(HeadConfig("denoising", second_channels=8, second_layers=3)).eval()
    assert two.load_state_dict(one.state_dict(), strict=False).missing_keys == [
        "second.1.weight", "second.1.bias", "second.3.weight", "second.3.bias", "second.5.weight", "second.5.bias"]
    noisy_px, decoded, sigma = torch.rand(1, 3, 37, 52), torch.rand(1, 3, 37, 52), torch.tensor([25.0])
    with torch.no_grad():
        first = one.refine(noisy_px, decoded, sigma)
        assert torch.equal(two.refine(noisy_px, decoded, sigma), first)
        two.second[5].weight.normal_(std=0.01)
        second = two.refine(noisy_px, decoded, sigma)
    assert second.shape == first.shape and 0 < (second - first).abs().mean() < 0.05


@pytest.mark.parametrize("collaborative, phases", [(True, 3), (False, 2)])
def test_denoise_reports_the_coding_the_decoding_and_the_filter(hopper, collaborative, phases):
    calls = []
    enhance.denoise(Image.fromarray(hopper), 10, collaborative=collaborative,
                    progress=lambda done, total: calls.append((done, total)))
    ends = [i for i, (done, total) in enumerate(calls) if done == total]
    assert len(ends) == phases and ends[-1] == len(calls) - 1  # each phase counted to its end
    assert all(calls[start][0] == 1 for start in [0] + [end + 1 for end in ends[:-1]])
