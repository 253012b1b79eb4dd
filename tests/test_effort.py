"""Encoder effort: the refined latents give files that the ordinary decoder reads, never a higher true
cost than g_a's, the same bytes every time; and the CLI and rate control take it."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import synthetic_image
from PIL import Image

import aecodec
from aecodec import codec, container, effort
from aecodec.cli import main

pytest.importorskip("torch")


def true_cost(image: np.ndarray, data: bytes) -> float:
    analysis = codec.analyse(image, codec.DEFAULT_TILE, None, b"", b"")
    lam = effort.lambda_of(codec.coding_model()[1].lambdas, container.parse(data).header.quality)
    # lambda * 255^2 * MSE on [0, 1] pixels is lambda * MSE on 8-bit ones
    return lam * analysis.distortion(aecodec.decompress(data)) + len(data) * 8 / image[..., 0].size


@pytest.mark.parametrize("quality", [2.0, 6.5])
def test_effort_files_decode_with_the_ordinary_decoder_and_never_cost_more(photo, quality):
    plain = aecodec.compress(photo, quality)
    tuned = aecodec.compress(photo, quality, effort=1)
    assert container.parse(tuned).header.quality == quality and aecodec.decompress(tuned).size == (128, 96)
    assert true_cost(photo, tuned) <= true_cost(photo, plain)
    assert tuned != plain  # on this image the refined latents win: the effort is at work


def test_effort_gives_the_same_bytes_every_time_and_through_pillow(photo, tmp_path):
    data = aecodec.compress(photo, 4, effort=1)
    assert aecodec.compress(photo, 4, effort=1) == data
    Image.fromarray(photo).save(tmp_path / "x.aec", quality=4, effort=1)
    assert (tmp_path / "x.aec").read_bytes() == data


def test_effort_counts_its_steps_and_refuses_what_it_cannot_do(photo):
    calls = []
    aecodec.compress(photo, 4, effort=1, progress=lambda done, total: calls.append((done, total)))
    assert (effort.STEPS[1], effort.STEPS[1]) in calls
    with pytest.raises(aecodec.AecError, match="effort must be one of"):
        aecodec.compress(photo, 4, effort=7)
    with pytest.raises(aecodec.AecError, match="does not go with denoise"):
        aecodec.compress(photo, 4, effort=1, denoise=10)


def test_effort_refines_tile_by_tile_and_leaves_no_seam(photo):
    """64-pixel coding tiles cut the photo in four. Refined one at a time, each with its neighbours
    in view, they err along the cuts as much as the photo refined whole does; refined blind to their
    neighbours (no margins), the cuts would show: 3x the error there."""
    band = np.zeros(photo.shape[:2], bool)
    band[:, 56:72] = band[56:72, :] = True

    def seam(data: bytes) -> float:
        error = ((np.asarray(aecodec.decompress(data), dtype=np.float64) - photo) ** 2).mean(axis=2)
        return error[band].mean() / error[~band].mean()

    calls = []
    tiled = aecodec.compress(photo, 3, effort=1, tile=64, progress=lambda done, total: calls.append((done, total)))
    assert (4 * effort.STEPS[1], 4 * effort.STEPS[1]) in calls
    assert true_cost(photo, tiled) < true_cost(photo, aecodec.compress(photo, 3, tile=64))
    assert seam(tiled) < 1.05 * seam(aecodec.compress(photo, 3, effort=1))


def test_effort_for_the_context_model_counts_its_bits(photo):
    """Latents refined against the context model's bits code, with it, at a lower true cost than
    latents refined against the hyperprior's."""
    quality = 2.0
    analysis = codec.analyse(photo, codec.DEFAULT_TILE, None, b"", b"")
    tiles = codec.grid.boxes(*(n // 4 for n in analysis.latent.shape[1:]), codec.DEFAULT_TILE // 64)

    def refined(context: bool) -> bytes:
        latents = effort.refine(photo, analysis.latent, quality, effort.STEPS[1], tiles, codec.HYPER_MARGIN,
                                codec.MARGIN // codec.STRIDE, context=context)
        return codec.encode(analysis, quality, codec.DEFAULT_TILE, latents, context=True)

    assert true_cost(photo, refined(True)) < true_cost(photo, refined(False))
    assert aecodec.compress(photo, quality, effort=1, context=True) != aecodec.compress(photo, quality, context=True)


@pytest.mark.slow
def test_effort_from_the_command_line_and_with_rate_control(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(synthetic_image(64, 96, seed=8)).save(src)
    runner = CliRunner()
    r = runner.invoke(main, ["compress", str(src), "--effort", "1", "--bpp", "1.0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["files"][0]["effort"] == 1
    assert aecodec.decompress((tmp_path / "in.aec").read_bytes()).size == (96, 64)
    assert runner.invoke(main, ["compress", str(src), "--effort", "1", "--denoise"]).exit_code == 2
