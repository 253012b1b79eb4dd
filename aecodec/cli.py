"""The `aecodec` command: compress, decompress, info.

Paths, atomic writes, exit codes and progress live here; the coding itself is `aecodec.codec`.
Errors are one line on stderr with a non-zero exit code, and never leave a partial output file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import click

from . import container
from .errors import AecError

_FORMATS_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                      ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM", ".pnm": "PPM"}


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder and rename it over `path` only on success."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_output(src: Path, out: Path, force: bool) -> None:
    if out.resolve() == src.resolve():
        raise click.ClickException(f"{out} is the input file; choose another name with -o")
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; use --force to overwrite it, or -o to choose another name")
    if not out.parent.is_dir():
        raise click.ClickException(f"folder {out.parent} does not exist")


def _progress_bar(label: str):
    """A progress callback that shows a bar only for images of several tiles."""
    state: dict = {}

    def update(done: int, total: int) -> None:
        if total < 2:
            return
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"))
            state["bar"].__enter__()
        state["bar"].update(1)
        if done == total:
            state["bar"].__exit__(None, None, None)

    return update


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("aecodec")
    except PackageNotFoundError:
        v = "(not installed)"
    from .weights import WeightsError, find_weights

    try:
        w = find_weights()
        model = f"model {w.manifest['name']} {w.model_id.hex()} ({w.manifest.get('steps')} training steps)"
    except WeightsError as e:
        model = f"no model: {e}"
    return f"aecodec {v}, .aec format version {container.VERSION}, {model}"


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, the format version and the model, then exit.")
def main() -> None:
    """aecodec: a learned image codec. Compress images to .aec files and back."""


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), help="Output file [default: SRC with .aec].")
@click.option("-q", "--quality", type=click.FloatRange(1, 8), default=4.0, show_default=True,
              help="Quality, any real number from 1 (smallest) to 8 (best).")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output file if it exists.")
def compress(src: Path, out: Path | None, quality: float, force: bool) -> None:
    """Compress an image (PNG, JPEG, WebP, TIFF, ...) into an .aec file."""
    from PIL import Image, UnidentifiedImageError

    from . import codec

    out = out or src.with_suffix(".aec")
    _check_output(src, out, force)
    try:
        with Image.open(src) as im:
            im.load()
            data = codec.compress(im, quality, progress=_progress_bar("compressing"))
            width, height = im.size
    except UnidentifiedImageError:
        raise click.ClickException(f"{src} is not an image that Pillow can read") from None
    except (AecError, OSError) as e:
        raise click.ClickException(f"{src}: {e}") from None
    _write(out, lambda tmp: tmp.write_bytes(data))
    click.echo(f"{src} -> {out}: {len(data)} bytes, {len(data) * 8 / (width * height):.3f} bpp (quality {quality:g})")


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Output image; its extension picks the format [default: SRC with .png].")
@click.option("-f", "--force", is_flag=True, help="Overwrite the output file if it exists.")
def decompress(src: Path, out: Path | None, force: bool) -> None:
    """Decompress an .aec file into an image."""
    from . import codec

    out = out or src.with_suffix(".png")
    fmt = _FORMATS_BY_SUFFIX.get(out.suffix.lower())
    if fmt is None:
        raise click.ClickException(f"unknown output format {out.suffix!r}; use one of {', '.join(sorted(_FORMATS_BY_SUFFIX))}")
    _check_output(src, out, force)
    try:
        image = codec.decompress(_read(src), progress=_progress_bar("decompressing"))
    except AecError as e:
        raise click.ClickException(f"{src}: {e}") from None
    if fmt == "JPEG" and image.mode in ("LA", "RGBA"):
        raise click.ClickException(f"{src} has an alpha channel, which JPEG cannot store; write .png or .webp")
    _write(out, lambda tmp: image.save(tmp, format=fmt))
    click.echo(f"{src} -> {out}: {image.width}x{image.height} {image.mode}")


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info(src: Path) -> None:
    """Show the header of an .aec file and check its integrity (without decoding it)."""
    data = _read(src)
    try:
        c = container.parse(data)
    except AecError as e:
        raise click.ClickException(f"{src}: {e}") from None
    h = c.header
    coded = sum(len(t.z) + len(t.y) for t in c.tiles)
    click.echo(f"file:       {src} ({len(data)} bytes, format version {container.VERSION}, CRC ok)")
    click.echo(f"image:      {h.width}x{h.height} {h.mode}")
    click.echo(f"quality:    {h.quality:g}")
    click.echo(f"model:      {h.model_id.hex()}")
    click.echo(f"tiles:      {h.tiles_x}x{h.tiles_y} of {h.tile} px")
    z_bytes = sum(len(t.z) for t in c.tiles)
    click.echo(f"rate:       {len(data) * 8 / (h.width * h.height):.4f} bpp "
               f"(streams: y {coded - z_bytes} bytes, z {z_bytes} bytes)")
    if c.alpha is not None:
        click.echo(f"alpha:      lossless, {len(c.alpha)} bytes")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise click.ClickException(f"cannot read {path}: {e.strerror}") from None


def _write(path: Path, write: Callable[[Path], None]) -> None:
    try:
        _atomic_write(path, write)
    except OSError as e:
        raise click.ClickException(f"cannot write {path}: {e.strerror or e}") from None


if __name__ == "__main__":
    main()
