"""tools/prepare_data.py: crops of photos, and --shrink, whose copies keep their photos' validation split."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import synthetic_image
from PIL import Image
from test_train_heads import validation_name

ROOT = Path(__file__).resolve().parents[1]


def prepare(*args: str) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "tools/prepare_data.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_photos_become_named_crops(tmp_path):
    src, dst = tmp_path / "photos", tmp_path / "crops"
    src.mkdir()
    Image.fromarray(synthetic_image(600, 520, seed=1)).save(src / "big.png")
    prepare(src, dst, "--max-crops", "3")
    crops = sorted(dst.iterdir())
    assert [c.name for c in crops] == ["big_0.png", "big_1.png", "big_2.png"]
    assert all(Image.open(c).size == (256, 256) for c in crops)


def test_shrink_keeps_names_and_the_held_out_crops_whole(tmp_path):
    src, dst = tmp_path / "crops", tmp_path / "small"
    src.mkdir()
    held_out = f"{validation_name(0)}_0"
    for i, stem in enumerate(["photo1_0", "photo1_1", "photo2_0", held_out]):
        Image.fromarray(synthetic_image(256, 256, seed=i)).save(src / f"{stem}.png")
    prepare(src, dst, "--shrink", "176", "--format", "jpeg")
    sizes = {c.stem: Image.open(c).size for c in dst.iterdir()}
    assert sizes == {"photo1_0": (176, 176), "photo1_1": (176, 176), "photo2_0": (176, 176), held_out: (256, 256)}


def test_whole_photos_travel_as_scaled_avif_and_keep_their_names(tmp_path):
    src, dst = tmp_path / "photos", tmp_path / "carry"
    src.mkdir()
    held_out = validation_name(0)
    for i, stem in enumerate(["wide", held_out]):
        Image.fromarray(synthetic_image(200, 300 - 50 * i, seed=i)).save(src / f"{stem}.png")
    prepare(src, dst, "--whole", "--scale", "0.8", "--format", "avif", "--quality", "90")
    sizes = {c.name: Image.open(c).size for c in dst.iterdir()}
    assert sizes == {"wide.avif": (240, 160), f"{held_out}.avif": (200, 160)}
    original = np.asarray(Image.open(src / "wide.png").resize((240, 160), Image.LANCZOS), dtype=float)
    carried = np.asarray(Image.open(dst / "wide.avif").convert("RGB"), dtype=float)
    assert 10 * np.log10(255**2 / np.mean((original - carried) ** 2)) > 35
