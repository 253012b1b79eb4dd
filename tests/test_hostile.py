"""Hostile and damaged input: only the codec's own error comes out; files on disk stay whole."""

import errno
import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import synthetic_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import aecodec
from aecodec import files
from aecodec.cli import main
from aecodec.errors import FormatError

_spec = importlib.util.spec_from_file_location("fuzz", Path(__file__).parents[1] / "tools/fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)

SEEDS = fuzz.seed_files()
FIELDS = [fuzz._fields(s) for s in SEEDS]


def test_every_single_byte_change_of_a_real_file_is_detected():
    """Exhaustive on a small file: every position, every other value, through the whole decoder."""
    data = aecodec.compress(synthetic_image(16, 16), quality=1)
    for i in range(len(data)):
        for value in range(256):
            if value != data[i]:
                with pytest.raises(FormatError):
                    aecodec.decompress(data[:i] + bytes([value]) + data[i + 1 :])


@settings(max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**62))
@pytest.mark.slow
def test_fuzzed_files_give_an_image_or_the_codecs_own_error(index):
    """The fuzzer's mutations (tools/fuzz.py, which runs far longer by hand), bounded for CI."""
    problem = fuzz.check(fuzz.make_input(0, index, SEEDS, FIELDS))
    assert problem in (None, "decoded"), problem


def test_fuzzing_reaches_the_decoder():
    """Half the inputs get a valid CRC: some must get through to the networks and decode."""
    outcomes = [fuzz.check(fuzz.make_input(1, i, SEEDS, FIELDS)) for i in range(300)]
    assert outcomes.count("decoded") > 10 and outcomes.count(None) > 100


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(synthetic_image(40, 56)).save(path)
    return path


def test_input_is_never_modified(png):
    before, mtime = png.read_bytes(), os.stat(png).st_mtime_ns
    r = CliRunner().invoke(main, ["compress", str(png), "--force", "-q", "2"])
    assert r.exit_code == 0
    aec = png.with_suffix(".aec")
    aec_before = aec.read_bytes()
    assert CliRunner().invoke(main, ["decompress", str(aec), "-o", str(png.with_name("out.png"))]).exit_code == 0
    assert png.read_bytes() == before and os.stat(png).st_mtime_ns == mtime and aec.read_bytes() == aec_before


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_write_errors_are_one_line_and_leave_nothing(png, monkeypatch, err):
    """Disk full, permission denied, read-only: one line naming the file and the cause, no partial file."""
    out = png.with_name("out.aec")

    def failing(path: Path, write):
        def broken(tmp: Path) -> None:
            write(tmp)
            raise OSError(err, os.strerror(err))

        return real(path, broken)

    real = files.atomic_write
    monkeypatch.setattr("aecodec.cli.atomic_write", failing)
    r = CliRunner().invoke(main, ["compress", str(png), "-o", str(out)])
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and str(out) in lines[0] and os.strerror(err) in lines[0], r.output
    assert sorted(p.name for p in png.parent.iterdir()) == ["in.png"]


def test_unreadable_input_is_one_line(png, monkeypatch):
    """Permission denied on the input (simulated: this may run as root), both ways."""
    aec = png.with_suffix(".aec")
    assert CliRunner().invoke(main, ["compress", str(png)]).exit_code == 0
    real_open = open

    def denied(path, *args, **kwargs):
        if str(path) in (str(png), str(aec)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    monkeypatch.setattr(Path, "read_bytes", lambda self: denied(self))
    for args in (["compress", str(png), "-o", str(png.with_name("x.aec"))],
                 ["decompress", str(aec), "-o", str(png.with_name("x.png"))]):
        r = CliRunner().invoke(main, args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and "Permission denied" in lines[0], r.output
