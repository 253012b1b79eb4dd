"""The `aecodec` command: compress, decompress, info, and the heads: upscale, denoise.

Paths, atomic writes, exit codes and progress live here; the coding itself is `aecodec.codec`.
Errors are one line on stderr with a non-zero exit code, and never leave a partial output file.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click

from . import container, transcode
from .errors import AecError, require
from .files import atomic_write
from .transcode import JobError


def _progress_bar(label: str):
    """A progress callback that shows a bar only for large images (8 steps or more: about 2 MP). A job of
    several phases (code, then decode) reports each from 1 to its total: each gets its own bar."""
    state: dict = {}

    def update(done: int, total: int) -> None:
        if total < 8:
            return
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        state["bar"].update(1)
        if done == total:
            state.pop("bar").__exit__(None, None, None)

    return update


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("aecodec")
    except PackageNotFoundError:
        v = "(not installed)"
    lines = [f"aecodec {v}, .aec format version {container.VERSION}"]
    from .weights import WeightsError, find_weights

    try:
        w = find_weights()
    except WeightsError as e:
        return "\n".join(lines + [f"model: none ({e})"])
    m = w.manifest
    kodak = m.get("kodak", {})
    lines += [f"model {m.get('name')} {w.model_id.hex()}: {m.get('architecture', m['config'].get('arch'))}",
              f"  weights {w.path} (sha256 {m['sha256']}, verified)",
              f"  training: {m.get('steps')} steps, {m.get('train_seconds')} s",
              f"  data: {m.get('data', {}).get('sources_and_licences', 'see the manifest')}"]
    if kodak:
        lines.append(f"  Kodak: BD-rate {kodak['bd_rate_vs_jpeg2000']:+.1f}% against JPEG 2000 ({kodak.get('images')} images)")
    from .weights import HEAD_NAMES

    for kind, name in HEAD_NAMES.items():
        try:
            h = find_weights(name).manifest
        except WeightsError as e:
            lines.append(f"{kind} head: none ({e})")
            continue
        usable = "" if h.get("backbone") == m["model_id"] else f", trained for backbone {h.get('backbone')}: unusable"
        lines.append(f"{kind} head {h['model_id']}: {h.get('parameters')} parameters, {h.get('steps')} steps{usable}")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version, the format version and the model, then exit.")
def main() -> None:
    """aecodec: a learned image codec. Compress images to .aec files and back."""


class ByteSize(click.ParamType):
    """A size in bytes: 30000, 40KB (10^3), 40KiB (2^10), 1.5MB, 2MiB."""

    name = "size"
    _units = {"": 1, "b": 1, "kb": 10**3, "k": 10**3, "kib": 2**10, "mb": 10**6, "m": 10**6, "mib": 2**20}

    def convert(self, value, param, ctx) -> int:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in self._units or float(m.group(1)) <= 0:
            self.fail(f"{value!r} is not a size like 30000, 40KB or 1.5MiB", param, ctx)
        return int(float(m.group(1)) * self._units[m.group(2).lower()])


@dataclass(frozen=True)
class Job:
    src: Path
    out: Path


def _plan(sources: tuple[Path, ...], out: Path | None, suffix: str) -> list[Job]:
    """Output path of each input: -o names a file for one input, a folder for several (created if needed)."""
    if out is not None and (len(sources) > 1 or out.is_dir()):
        if not out.exists():
            out.mkdir(parents=True)
        if not out.is_dir():
            raise click.ClickException(f"{out} is not a folder; with several inputs, -o names the output folder")
        jobs = [Job(src, out / (src.stem + suffix)) for src in sources]
    else:
        jobs = [Job(src, out or src.with_suffix(suffix)) for src in sources]
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.out.resolve()
        if key in seen:
            raise click.ClickException(f"{seen[key]} and {job.src} would both be written to {job.out}")
        seen[key] = job.src
    return jobs


def _check_output(job: Job, force: bool) -> None:
    if job.out.resolve() == job.src.resolve():
        raise JobError(f"{job.out} is the input file; choose another name with -o")
    if job.out.exists() and not force:
        raise JobError(f"{job.out} exists; use --force to overwrite it, or -o to choose another name")
    if not job.out.parent.is_dir():
        raise JobError(f"folder {job.out.parent} does not exist")


def _compress_job(job: Job, quality: float, target: dict, denoise: float | str | None, effort: int, force: bool,
                  strict: bool, context: bool | None, progress: bool) -> dict:
    _check_output(job, force)
    start = time.perf_counter()
    source = _read(job.src)
    data, info = transcode.compress(source, str(job.src), quality, target, denoise, effort, strict,
                                    progress=_progress_bar("compressing") if progress else None, context=context)
    _write(job.out, lambda tmp: tmp.write_bytes(data))
    return {"src": str(job.src), "out": str(job.out), "bytes_in": len(source), "bytes_out": len(data), **info,
            "seconds": time.perf_counter() - start}


def _save_image(job: Job, image, fmt: str) -> None:
    _write(job.out, lambda tmp: transcode.save_image(image, tmp, fmt, str(job.src)))


def _decompress_job(job: Job, scale: int, force: bool, progress: bool) -> dict:
    fmt = transcode.output_format(job.out.name)
    _check_output(job, force)
    start = time.perf_counter()
    data = _read(job.src)
    image, info = transcode.decompress(data, str(job.src), scale,
                                       progress=_progress_bar("decompressing") if progress else None)
    _save_image(job, image, fmt)
    return {"src": str(job.src), "out": str(job.out), "bytes_in": len(data), "bytes_out": job.out.stat().st_size,
            **info, "seconds": time.perf_counter() - start}


def _image_job(job: Job, transform: Callable, label: str, force: bool, progress: bool) -> dict:
    """Image in, image out through a head: `transform(image, progress) -> (image, details)`."""
    from PIL import Image, UnidentifiedImageError

    fmt = transcode.output_format(job.out.name)
    _check_output(job, force)
    start = time.perf_counter()
    try:
        with Image.open(job.src) as im:
            im.load()
            image, details = transform(im, _progress_bar(label) if progress else None)
    except UnidentifiedImageError:
        raise JobError(f"{job.src} is not an image that Pillow can read") from None
    except (AecError, OSError) as e:
        raise JobError(f"{job.src}: {e}") from None
    _save_image(job, image, fmt)
    return {"src": str(job.src), "out": str(job.out), "bytes_in": job.src.stat().st_size,
            "bytes_out": job.out.stat().st_size, "pixels": image.width * image.height,
            "size": f"{image.width}x{image.height}", "mode": image.mode, "seconds": time.perf_counter() - start, **details}


def _worker_init(threads: int) -> None:
    from .runtime import set_threads

    set_threads(threads)


def _run(jobs: list[Job], work: Callable[..., dict], workers: int, as_json: bool, label: str) -> None:
    """Run the jobs (in worker processes when -j > 1), report failures as they come, then the summary."""
    start = time.perf_counter()
    if len(jobs) == 1:
        try:
            results, failures = [work(jobs[0], progress=True)], []
        except JobError as e:
            raise click.ClickException(str(e)) from None
    else:
        results, failures = _run_batch(jobs, work, workers, label)
    wall = time.perf_counter() - start
    if as_json:
        click.echo(json.dumps({"files": results, "failed": failures, "summary": _summary(results, wall)}, indent=1))
    elif len(jobs) == 1:
        r = results[0]
        what = f"{r['bytes_out']} bytes, {r['bpp']:.3f} bpp (quality {r['quality']:g})" if "bpp" in r and "quality" in r else f"{r['size']} {r['mode']}"
        if r.get("sigma") is not None:
            what += f", noise sigma {r['sigma']:.1f}"
        if r.get("encodes"):
            what += f", {r['encodes']} encodes" + (f", PSNR {r['psnr']:.2f} dB" if r.get("psnr") else "")
        click.echo(f"{r['src']} -> {r['out']}: {what}")
    else:
        sm = _summary(results, wall)
        rate = f", mean {sm['mean_bpp']:.4f} bpp" if any("bpp" in r for r in results) else ""
        click.echo(f"{sm['files']} files, {sm['bytes_in']} bytes in, {sm['bytes_out']} bytes out{rate}, "
                   f"{sm['seconds']:.1f} s" + (f", {len(failures)} failed" if failures else ""))
    for r in results:
        if r.get("missed"):  # a rate-control target the qualities could not meet (the file is written)
            click.echo(f"warning: {r['src']}: {r['missed']}", err=True)
    if failures:
        raise click.exceptions.Exit(1)


def _run_batch(jobs: list[Job], work: Callable[..., dict], workers: int, label: str) -> tuple[list[dict], list[dict]]:
    results, failures = [], []
    with click.progressbar(length=len(jobs), label=label, file=sys.stderr) as bar:
        if workers == 1:
            outcomes = ((job, _attempt(work, job)) for job in jobs)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: a forked child of a process with ONNX Runtime's thread pool running can deadlock.
            threads = max(1, (os.cpu_count() or 1) // workers)
            os.environ["OPENBLAS_NUM_THREADS"] = str(threads)  # the workers' numpy: their share of the cores
            pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(threads,))
            futures = [(job, pool.submit(_attempt, work, job)) for job in jobs]
            outcomes = ((job, f.result()) for job, f in futures)
        for job, (result, error) in outcomes:
            if error is None:
                results.append(result)
            else:
                failures.append({"src": str(job.src), "error": error})
                click.echo(f"\nerror: {error}", err=True)
            bar.update(1)
        if workers > 1:
            pool.shutdown()
    return results, failures


def _attempt(work: Callable[..., dict], job: Job) -> tuple[dict | None, str | None]:
    """One job of a batch; any failure becomes a message, so that the other files go on."""
    try:
        return work(job, progress=False), None
    except JobError as e:
        return None, str(e)
    except Exception as e:  # a bug or a resource error on one file must not stop the batch
        return None, f"{job.src}: {type(e).__name__}: {e}"


def _summary(results: list[dict], wall: float) -> dict:
    pixels = sum(r["pixels"] for r in results)
    return {"files": len(results), "bytes_in": sum(r["bytes_in"] for r in results),
            "bytes_out": sum(r["bytes_out"] for r in results),
            "mean_bpp": sum(r.get("bpp", 0.0) for r in results) / len(results) if results else 0.0,
            "megapixels": pixels / 1e6, "seconds": wall}


_sigma_option = click.option(
    "--sigma", type=click.FloatRange(0, 75), help="Noise standard deviation in 8-bit units [default: estimated].")
_scale_option = click.option("--scale", type=click.Choice(["1", "2"]), default="1", show_default=True,
                             help="Output size relative to the coded size (2: through the super-resolution head).")

_batch_options = [
    click.option("-f", "--force", is_flag=True, help="Overwrite output files that exist."),
    click.option("-j", "--jobs", "workers", type=click.IntRange(1, 64), default=1, show_default=True,
                 help="Files coded in parallel (processes)."),
    click.option("--json", "as_json", is_flag=True, help="Print the results as JSON."),
]


def _with_batch_options(f):
    for option in reversed(_batch_options):
        f = option(f)
    return f


_cluster_option = click.option(
    "--cluster", metavar="ADDRESS|local:N",
    help="Code on a Dask cluster: a scheduler's address, or local:N for N worker processes here (aecodec[cluster]). "
         "SOURCES may then be folders, globs, list files (.txt) or URLs (s3://...), -o names the output folder "
         "(mirroring the input tree), and a rerun skips what is done (docs/CLUSTER.md).")


class _JobProgress:
    """A line on stderr, rewritten as files finish: done, skipped, failed, of how many listed, the rate."""

    def __init__(self, label: str):
        self.label, self.start, self.tty = label, time.perf_counter(), sys.stderr.isatty()

    def __call__(self, c: dict) -> None:
        if not self.tty:
            return
        finished = c["done"] + c["skipped"] + c["failed"]
        rate = finished / max(time.perf_counter() - self.start, 1e-9)
        click.echo(f"\r{self.label}: {finished}/{c['listed']}{'+' if c['listing'] else ''} files "
                   f"({c['skipped']} skipped, {c['failed']} failed), {rate:.1f} files/s ", nl=False, err=True)

    def close(self) -> None:
        if self.tty:
            click.echo(err=True)


def _local_sources(sources: tuple[str, ...]) -> tuple[Path, ...]:
    """The inputs of a command on this machine: files that exist, checked as click checks a path."""
    ctx = click.get_current_context()
    param = next(p for p in ctx.command.params if p.name == "sources")
    return tuple(click.Path(exists=True, dir_okay=False, path_type=Path).convert(s, param, ctx) for s in sources)


def _on_cluster(operation: str, address: str, sources: tuple[str, ...], out: str | None, workers: int,
                as_json: bool, **options) -> None:
    """A command's job on a Dask cluster: the progress line, failures as they are, the summary, the exit status."""
    if out is None:
        raise click.UsageError("--cluster needs -o, the output folder (a path or a URL)")
    if workers != 1:
        raise click.UsageError("give -j or --cluster, not both: on a cluster, the workers are the parallelism")
    try:
        from . import cluster
    except AecError as e:
        raise click.ClickException(str(e)) from None
    local = re.fullmatch(r"local:(\d+)", address)
    if address.startswith("local:") and not (local and 1 <= int(local.group(1)) <= 64):
        raise click.UsageError(f"--cluster {address}: write local:N with N from 1 to 64")
    import logging

    for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # a worker lost is the job's to report, in its words
    try:
        client = cluster.local(int(local.group(1))) if local else cluster.Client(address, timeout=10)
    except OSError as e:
        raise click.ClickException(f"cannot reach the Dask scheduler at {address}: {e}") from None
    progress = _JobProgress(operation + "ing")
    try:
        summary = getattr(cluster, operation)(client, sources, out, progress=progress, **options)
    except (AecError, OSError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        progress.close()
        client.close()
        if local:
            client.cluster.close()
    for failure in summary["failed"]:
        click.echo(f"error: {failure['error']}", err=True)
    for r in summary["missed"]:
        click.echo(f"warning: {r['src']}: {r['missed']}", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        rate = f", mean {summary['mean_bpp']:.4f} bpp" if summary["files"] and operation == "compress" else ""
        click.echo(f"{summary['files']} files coded, {summary['skipped']} skipped (done before), "
                   f"{len(summary['failed'])} failed on {summary['workers']} workers: {summary['bytes_in']} bytes in, "
                   f"{summary['bytes_out']} bytes out{rate}, {summary['seconds']:.1f} s "
                   f"({summary['files_per_second']:.2f} files/s)")
    if summary["failed"]:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "out",
              help="Output file, or folder for several inputs [default: beside each input, with .aec].")
@click.option("-q", "--quality", type=click.FloatRange(1, 8), default=4.0, show_default=True,
              help="Quality, any real number from 1 (smallest) to 8 (best).")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), help="Target bits per pixel (searches the quality).")
@click.option("--size", type=ByteSize(), help="Largest file size, e.g. 40KB, 1.5MB, 30000 (searches the quality).")
@click.option("--psnr", type=click.FloatRange(min=0, min_open=True), help="Target PSNR in dB (searches the quality).")
@click.option("--strict", is_flag=True,
              help="A --bpp, --size or --psnr target that no quality meets is an error (exit 1, nothing written).")
@click.option("--denoise", is_flag=True, help="Remove noise before coding: bits go to the image, not to its noise.")
@click.option("--effort", type=click.IntRange(0, 3), default=0, show_default=True,
              help="Encoder effort: 1, 2, 3 refine the latents of each coding tile (50, 150, 400 steps; needs "
                   "aecodec[train]) for fewer bits at the same quality; a 768x512 image takes about 13, 40, 105 s on 2 cores.")
@click.option("--context/--no-context", default=None,
              help="Code the latent with the context model (format version 3: fewer bits, a slower decode) "
                   "or with the hyperprior alone [default: the hyperprior alone].")
@_sigma_option
@_with_batch_options
@_cluster_option
def compress(sources: tuple[str, ...], out: str | None, quality: float, bpp: float | None, size: int | None,
             psnr: float | None, strict: bool, denoise: bool, effort: int, context: bool | None, sigma: float | None,
             force: bool, workers: int, as_json: bool, cluster: str | None) -> None:
    """Compress images (PNG, JPEG, WebP, TIFF, ...) into .aec files."""
    target = {k: v for k, v in {"bpp": bpp, "size": size, "psnr": psnr}.items() if v is not None}
    if len(target) > 1:
        raise click.UsageError("give at most one of --bpp, --size, --psnr")
    if denoise and target:
        raise click.UsageError("--denoise works with --quality, not with --bpp, --size or --psnr")
    if sigma is not None and not denoise:
        raise click.UsageError("--sigma goes with --denoise")
    if strict and not target:
        raise click.UsageError("--strict goes with --bpp, --size or --psnr")
    if effort and denoise:
        raise click.UsageError("--effort works without --denoise")
    level = (sigma if sigma is not None else "auto") if denoise else None
    if cluster:
        return _on_cluster("compress", cluster, sources, out, workers, as_json, quality=quality, **target,
                           strict=strict, effort=effort, denoise=level, force=force, context=context)
    jobs = _plan(_local_sources(sources), Path(out) if out else None, ".aec")
    _run(jobs, functools.partial(_compress_job, quality=quality, target=target, denoise=level, effort=effort,
                                 force=force, strict=strict, context=context), workers, as_json, "compressing")


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("-o", "--output", "out",
              help="Output image (its extension picks the format), or folder for several inputs [default: .png beside each input].")
@_scale_option
@_with_batch_options
@_cluster_option
def decompress(sources: tuple[str, ...], out: str | None, scale: str, force: bool, workers: int, as_json: bool,
               cluster: str | None) -> None:
    """Decompress .aec files into images."""
    if cluster:
        return _on_cluster("decompress", cluster, sources, out, workers, as_json, scale=int(scale), force=force)
    jobs = _plan(_local_sources(sources), Path(out) if out else None, ".png")
    _run(jobs, functools.partial(_decompress_job, scale=int(scale), force=force), workers, as_json, "decompressing")


def _upscale(image, progress, scale: int, quality: float):
    from . import enhance

    return enhance.upscale(image, scale, quality=quality, progress=progress), {}


def _denoise(image, progress, sigma: float | None, quality: float, fast: bool):
    from . import enhance

    level = enhance.noise_level(image) if sigma is None else sigma
    out = enhance.denoise(image, min(level, 75.0), quality=quality, collaborative=not fast, progress=progress)
    return out, {"sigma": level}


_head_quality = click.option("-q", "--quality", type=click.FloatRange(1, 8), default=8.0, show_default=True,
                             help="Quality of the coding the image goes through.")
_image_output = click.option("-o", "--output", "out", type=click.Path(path_type=Path),
                             help="Output image (its extension picks the format), or folder for several inputs.")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_image_output
@click.option("--scale", type=click.Choice(["2"]), default="2", show_default=True, help="Enlargement factor.")
@_head_quality
@_with_batch_options
def upscale(sources: tuple[Path, ...], out: Path | None, scale: str, quality: float, force: bool, workers: int,
            as_json: bool) -> None:
    """Enlarge images through the codec and its super-resolution head [default output: NAME.x2.png]."""
    jobs = _plan(sources, out, f".x{scale}.png")
    work = functools.partial(_image_job, transform=functools.partial(_upscale, scale=int(scale), quality=quality),
                             label="upscaling", force=force)
    _run(jobs, work, workers, as_json, "upscaling")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_image_output
@_sigma_option
@_head_quality
@click.option("--fast", is_flag=True,
              help="Skip the collaborative filter after the head: about 3.5x faster, 0.3-0.5 dB noisier at sigma 25.")
@_with_batch_options
def denoise(sources: tuple[Path, ...], out: Path | None, sigma: float | None, quality: float, fast: bool, force: bool,
            workers: int, as_json: bool) -> None:
    """Remove noise from images with the codec's denoising head [default output: NAME.denoised.png]."""
    jobs = _plan(sources, out, ".denoised.png")
    work = functools.partial(_image_job, transform=functools.partial(_denoise, sigma=sigma, quality=quality, fast=fast),
                             label="denoising", force=force)
    _run(jobs, work, workers, as_json, "denoising")


@main.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Rate-distortion benchmark against classical codecs, and its report (from a source checkout)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "run.py").is_file():
        raise click.ClickException("aecodec bench runs from a source checkout (its benchmarks/ folder); "
                                   "install with pip install -e '.[bench]'")
    try:
        require("bench", "aecodec bench", "torch", "pytorch_msssim", "scipy", "pillow_heif", "imagecodecs")
    except AecError as e:
        raise click.ClickException(str(e)) from None
    sys.path.insert(0, str(root))
    from benchmarks import run

    run.main(list(args))


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info(src: Path) -> None:
    """Show the header of an .aec file and check its integrity (without decoding it)."""
    try:
        data = _read(src)
        c = container.parse(data)
    except JobError as e:
        raise click.ClickException(str(e)) from None
    except AecError as e:
        raise click.ClickException(f"{src}: {e}") from None
    h = c.header
    coded = sum(len(t.z) + len(t.y) for t in c.tiles)
    click.echo(f"file:       {src} ({len(data)} bytes, format version {h.version}, CRC ok)")
    click.echo(f"image:      {h.width}x{h.height} {h.mode}")
    click.echo(f"quality:    {h.quality:g}")
    click.echo(f"model:      {h.model_id.hex()}")
    click.echo("entropy:    " + (f"context model {h.context_id.hex()} (channel groups, checkerboard)" if h.context_id
                                 else "hyperprior"))
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
        raise JobError(f"cannot read {path}: {e.strerror}") from None


def _write(path: Path, write: Callable[[Path], None]) -> None:
    try:
        atomic_write(path, write)
    except OSError as e:
        raise JobError(f"cannot write {path}: {e.strerror or e}") from None


if __name__ == "__main__":
    main()
