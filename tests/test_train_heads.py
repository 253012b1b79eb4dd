"""tools/train_heads.py end to end on a few synthetic crops: train, resume, export, load."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import synthetic_image
from PIL import Image
from safetensors.torch import load_file

from aecodec.torch_weights import load_head
from aecodec.weights import DEFAULT_NAME, HEAD_NAMES, WeightsError, weights_dir

ROOT = Path(__file__).resolve().parents[1]


def validation_name(start: int) -> str:
    """A photo name that train.py's hash holds out for validation."""
    i = start
    while int(hashlib.sha1(f"val{i}".encode()).hexdigest(), 16) % 20:
        i += 1
    return f"val{i}"


def train(*args: str) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "tools/train_heads.py"), *args], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["super-resolution", "denoising"])
def test_train_resume_export_load(tmp_path, kind):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_image(256, 256, seed=i)).save(data / f"photo{i}_0.png")
    Image.fromarray(synthetic_image(256, 256, seed=9)).save(data / f"{validation_name(0)}_0.png")
    ckpt = tmp_path / "head.pt"
    common = ["--head", kind, "--ckpt", str(ckpt), "--threads", "1"]
    out = train(*common, "--data", str(data), "--batch", "2", "--crop", "128", "--steps", "2", "--val-every", "2")
    assert "1 validation images" in out and 'val {"step": 2' in out
    out = train(*common, "--data", str(data), "--batch", "2", "--crop", "128", "--steps", "3", "--val-every", "100")
    assert "resumed from" in out and "stopped at step 3" in out

    folder = tmp_path / "weights"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(weights_dir() / f"{DEFAULT_NAME}{suffix}", folder)
    name = HEAD_NAMES[kind]
    train(*common, "--export", str(folder / f"{name}.safetensors"))
    manifest = json.loads((folder / f"{name}.json").read_text())
    backbone = json.loads((folder / f"{DEFAULT_NAME}.json").read_text())["model_id"]
    assert manifest["steps"] == 3 and manifest["backbone"] == backbone and manifest["kind"] == kind
    assert [h["step"] for h in manifest["history"]] == [2]
    head = load_head(kind, folder)
    assert not any(p.requires_grad for p in head.parameters())
    graphs = {"super-resolution": {"head"}, "denoising": {"analysis", "refine"}}[kind]
    assert set(manifest["graphs"]) == graphs and all((folder / g["file"]).is_file() for g in manifest["graphs"].values())
    if kind == "denoising":  # the refiner alone, from the exported head: the adapters must not move
        exported = folder / f"{name}.safetensors"
        refiner_ckpt = tmp_path / "refiner.pt"
        train("--head", kind, "--ckpt", str(refiner_ckpt), "--threads", "1", "--data", str(data), "--batch", "2",
              "--crop", "128", "--steps", "2", "--val-every", "100", "--init", str(exported), "--refiner-only")
        start, trained = load_file(exported), torch.load(refiner_ckpt, weights_only=False)["head"]
        assert all(torch.equal(trained[k], v) for k, v in start.items() if k.startswith("adapters."))
        assert not all(torch.equal(trained[k], v) for k, v in start.items() if k.startswith("refiner."))

        # another refiner shape: the adapters come from the exported head, the refiner starts fresh;
        # resuming needs the same shape
        grown_ckpt = tmp_path / "grown.pt"
        grown = ["--head", kind, "--ckpt", str(grown_ckpt), "--threads", "1", "--data", str(data), "--batch", "2",
                 "--crop", "128", "--val-every", "100", "--init", str(exported), "--refine-fold", "2", "--refine-layers", "5"]
        out = train(*grown, "--steps", "1")
        assert "fresh: refiner.1, refiner.3" in out and "adapters" not in out.split("fresh:")[1]
        out = train(*grown, "--steps", "2")
        assert "resumed from" in out
        r = subprocess.run([sys.executable, str(ROOT / "tools/train_heads.py"), *grown[:-4], "--steps", "3"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "another shape" in r.stderr
        config = json.loads(torch.load(grown_ckpt, weights_only=False)["config"])
        assert (config["refine_fold"], config["refine_layers"]) == (2, 5)

        # a second refiner after the exported head's: all the exported tensors load, the second starts fresh
        out = train("--head", kind, "--ckpt", str(tmp_path / "second.pt"), "--threads", "1", "--data", str(data),
                    "--batch", "2", "--crop", "128", "--val-every", "100", "--init", str(exported), "--steps", "1",
                    "--second-channels", "8", "--second-layers", "3")
        assert out.split("fresh: ")[1].splitlines()[0] == "second.1, second.3, second.5"

    (folder / f"{name}.safetensors").write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="corrupt"):
        load_head(kind, folder)
