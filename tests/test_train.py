"""tools/train.py and its pieces: crops cut on the device, new quality levels, bf16 where it is safe,
and the script end to end (timed configurations, rollback, EMA export, resume) on synthetic photos."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_image
from PIL import Image
from test_train_heads import validation_name

from aecodec.model import GainedHyperprior, ModelConfig
from aecodec.torch_weights import load_model
from aecodec.weights import find_weights

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from photo_bank import PhotoBank, ScaleJitter  # noqa: E402


def windows(photo: np.ndarray, size: int) -> set[bytes]:
    """Every size x size window of a photo, in each of its four flips."""
    out = set()
    for f in (photo, photo[::-1], photo[:, ::-1], photo[::-1, ::-1]):
        for top in range(f.shape[0] - size + 1):
            for left in range(f.shape[1] - size + 1):
                out.add(np.ascontiguousarray(f[top : top + size, left : left + size]).tobytes())
    return out


def test_crops_are_flipped_windows_of_the_photos():
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)]
    bank = PhotoBank(photos, torch.device("cpu"))
    crops = bank.crops(400, 8, torch.Generator().manual_seed(1))
    assert crops.shape == (400, 3, 8, 8) and crops.is_contiguous(memory_format=torch.channels_last)
    first, second = windows(photos[0], 8), windows(photos[1], 8)
    found = [c.permute(1, 2, 0).contiguous().numpy().tobytes() for c in crops]
    assert all(c in first or c in second for c in found)
    # Photos are drawn by their number of crop positions (13 * 13 against 2 * 2), and all four flips occur.
    assert 0.9 < sum(c in first for c in found) / 400 * (169 + 4) / 169 < 1.1
    corner = [c for c in found if c in first]
    assert len(set(corner)) > 100
    again = bank.crops(400, 8, torch.Generator().manual_seed(1))
    assert torch.equal(crops, again)
    with pytest.raises(ValueError, match="do not fit"):
        bank.crops(1, 10, torch.Generator())


def test_scale_jitter_shrinks_larger_crops():
    photo = np.repeat(np.repeat(synthetic_image(64, 96, seed=2), 2, 0), 2, 1)  # 128x192, smooth
    bank = PhotoBank([photo], torch.device("cpu"))
    jitter = ScaleJitter(2.0, seed=0)
    scales = [jitter() for _ in range(1000)]
    assert 1 <= min(scales) and max(scales) <= 2 and 1.3 < np.exp(np.mean(np.log(scales))) < 1.5
    x = bank.batch(4, 32, torch.Generator().manual_seed(0), scale=2.0)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_new_levels_keep_the_trained_gains():
    model = GainedHyperprior(ModelConfig(N=16, M=24))
    lambdas = model.config.lambdas
    wider = (lambdas[0] / 2, *lambdas, lambdas[-1] * 4)
    grown = model.with_lambdas(wider)
    assert grown.config.lambdas == wider and grown.config.N == 16
    assert torch.equal(grown.log_gain[1:9], model.log_gain) and torch.equal(grown.log_inv_gain[1:9], model.log_inv_gain)
    # Beyond the ends the gains follow the end levels' slope in log lambda.
    slope = (model.log_gain[-1] - model.log_gain[-2]) / np.log(lambdas[-1] / lambdas[-2])
    assert torch.allclose(grown.log_gain[-1], model.log_gain[-1] + slope * np.log(4), atol=1e-5)
    between = model.with_lambdas(((lambdas[0] * lambdas[1]) ** 0.5,) + lambdas[1:])
    assert torch.allclose(between.log_gain[0], (model.log_gain[0] + model.log_gain[1]) / 2, atol=1e-5)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, torch.tensor([3.0]))["x_hat"], grown.eval()(x, torch.tensor([4.0]))["x_hat"])


def test_bf16_autocast_keeps_latents_entropy_parameters_and_pixels_in_float32():
    torch.manual_seed(0)
    model = GainedHyperprior(ModelConfig(N=16, M=24)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.tensor([2.0, 7.0]))
    assert all(out[k].dtype == torch.float32 for k in ("x_hat", "y_likelihoods", "z_likelihoods"))
    with torch.no_grad():
        exact = model(x, torch.tensor([2.0, 7.0]))
    # The last layers run in float32, so x_hat is not quantized to bf16's 8 significant bits.
    assert not torch.equal(out["x_hat"], out["x_hat"].bfloat16().float())
    assert (out["x_hat"] - exact["x_hat"]).abs().max() < 0.05


def train(*args, ok: bool = True) -> str:
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "tools/train.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r.stdout + r.stderr


@pytest.fixture
def photos(tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_image(140 + 10 * i, 200 - 20 * i, seed=i)).save(data / f"photo{i}.png")
    Image.fromarray(synthetic_image(150, 130, seed=8).transpose(1, 0, 2).copy()).save(data / f"{validation_name(0)}.png")
    return data


@pytest.mark.slow
def test_train_trials_resume_and_export_the_better_of_ema_and_raw(tmp_path, photos):
    ckpt = tmp_path / "train.pt"
    common = ("--data", photos, "--ckpt", ckpt, "--batch", 2, "--crop", 64, "--scale-max", 1.5, "--val-size", 128,
              "--log-every", 2, "--val-every", 4, "--warmup", 2, "--threads", 2, "--trial-seconds", 0.5)
    out = train(*common, "--steps", 40, "--stop-after", 1, "--configs", "eager,eager-x2,cudagraphs",
                "--lambdas", "0.001,0.003,0.01,0.03,0.1,0.3", "--profile", tmp_path / "prof")
    assert "trial eager:" in out and "trial eager-x2:" in out and "cudagraphs: skipped" in out
    assert "data: 3 training photos" in out and "1 held out" in out
    profile = (tmp_path / "prof/configs.json").read_text()
    assert '"chosen": "eager' in profile and "Self CPU" in (tmp_path / "prof/profile.txt").read_text()
    first = torch.load(ckpt, weights_only=False)
    assert 0 < first["step"] < 40 and first["origin"] == (0, 0.0) and len(first["ema"]) > 0
    out = train(*common, "--steps", 40, "--configs", "eager", "--warmup", 1000)
    assert f"resumed from {ckpt} at step {first['step']}" in out and "levels: lambdas (0.001, 0.003" in out
    # The resumed run goes on with the schedule's warm-up (3e-4 * step / 1000), it does not jump to the peak.
    logged = [float(line.split("| lr ")[1].split()[0]) for line in out.splitlines() if line.startswith("step")]
    assert logged and max(logged) < 3e-4 * 45 / 1000
    last = torch.load(ckpt, weights_only=False)
    assert last["step"] >= 40 and set(last["final_validation"]) == {"raw", "ema"}
    assert last["export"] == min(("raw", "ema"), key=lambda k: last["final_validation"][k]["loss"])

    train("--ckpt", ckpt, "--export", tmp_path / "w/candidate.safetensors")
    weights = find_weights("candidate", tmp_path / "w")
    assert weights.manifest["exported"] == last["export"] and weights.manifest["config"]["lambdas"][0] == 0.001
    model = load_model(weights)
    names = [n for n, _ in model.named_parameters() if n != "entropy_bottleneck.quantiles"]
    expected = last["ema"] if last["export"] == "ema" else [last["model"][n] for n in names]
    assert all(torch.equal(dict(model.named_parameters())[n].detach(), e) for n, e in zip(names, expected))


@pytest.mark.slow
def test_a_diverging_run_is_rolled_back_then_stopped(tmp_path, photos):
    out = train("--data", photos, "--ckpt", tmp_path / "t.pt", "--batch", 2, "--crop", 64, "--val-size", 128,
                "--log-every", 1, "--warmup", 1, "--lr", 1e30, "--steps", 40, "--threads", 2, "--trial-seconds", 0,
                ok=False)
    assert out.count("non-finite loss since the last check; rolled back") == 5
    assert "training diverged: 5 rollbacks" in out


def test_z_likelihoods_match_the_entropy_bottleneck_in_training_and_eval():
    model = GainedHyperprior(ModelConfig(N=16, M=24))
    z = torch.randn(2, 16, 5, 7) * 4
    for training in (True, False):
        model.train(training)
        torch.manual_seed(3)
        expected = model.entropy_bottleneck(z)[1]
        torch.manual_seed(3)
        assert torch.equal(model.z_likelihoods(z), expected)


def test_the_training_loss_is_one_graph_for_torch_compile():
    """A graph break is a host round trip on CUDA (compressai's EntropyBottleneck.forward reads its
    permutation back from the device): the step must trace whole."""
    model = GainedHyperprior(ModelConfig(N=16, M=24)).train()
    lambdas = torch.tensor(model.config.lambdas)

    def loss(x, levels):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, levels.float() + 1)
        bits = sum(-torch.log2(out[k]).sum() for k in ("y_likelihoods", "z_likelihoods"))
        return (lambdas[levels] * (out["x_hat"] - x).square().mean()).sum() + bits

    explained = torch._dynamo.explain(loss)(torch.rand(2, 3, 64, 64), torch.tensor([0, 5]))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
def test_a_configuration_that_fails_to_compile_is_skipped(tmp_path, photos, monkeypatch):
    monkeypatch.setenv("CXX", "/bin/false")  # inductor's C++ compiler: torch.compile fails on the CPU
    out = train("--data", photos, "--ckpt", tmp_path / "t.pt", "--batch", 2, "--crop", 64, "--val-size", 128,
                "--log-every", 2, "--warmup", 2, "--steps", 8, "--threads", 2, "--trial-seconds", 0.5,
                "--configs", "compile,eager")
    assert 'trial compile: {"config": "compile"' in out and '"error": "' in out.split("trial compile:")[1].splitlines()[0]
    assert "training with eager" in out and "stopped at step" in out
