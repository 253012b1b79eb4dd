"""Fuzz the decoder with mutated .aec files: only the codec's own error may come out.

    python tools/fuzz.py --seconds 3600 [--jobs 2] [--seed 0] [--out fuzz-failures]
    python tools/fuzz.py --replay 0:123456          # rebuild input 123456 of seed 0 and decode it

Seeds are small valid files made here (synthetic images in every mode, several tiles, a format
version 1 file, and version 3 files when the context model is installed). Input i of seed s is a
seed file with 1-4 mutations drawn from Random(s, i): bit flips, byte changes, truncation,
insertion, deletion, duplicated chunks, and header and length fields set to edge values; half of the inputs get their CRC recomputed, so that they reach the
parser's later checks, the entropy decoder and the networks.

A decode must either refuse the input with `AecError` or return an image of the header's size and
mode. A failure is any other exception, another size or mode, a decode over LIMIT_S, or the worker
process dying (a crash: the parent rebuilds the input from its index). Failing inputs are written
to --out. Workers run in child processes that report how many inputs they tried and their peak RSS.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import random
import resource
import struct
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LIMIT_S = 4.0  # the most CPU seconds (all threads) a decode of a fuzzed input may take: CPU time,
# not wall time, so that other work on the machine does not make a slow decode out of a normal one
_FIXTURE = Path(__file__).resolve().parents[1] / "tests/data/v1-synthetic-80x144-q3-tile64.aec"


def seed_files() -> list[bytes]:
    """Small valid files covering the modes, several tiles, metadata and both format versions."""
    import numpy as np

    import aecodec

    rng = np.random.default_rng(0)

    def image(h: int, w: int, c: int) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w]
        base = (128 + 60 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 8, (h, w)))[:, :, None]
        return np.clip(np.repeat(base, c, axis=2) + np.arange(c) * 20, 0, 255).astype(np.uint8)

    seeds = [
        aecodec.compress(image(16, 16, 3), quality=4),
        aecodec.compress(image(24, 40, 3), quality=8, icc=b"icc-profile", exif=b"Exif\x00\x00MM"),
        aecodec.compress(image(70, 130, 3), quality=1.5, tile=64),
        aecodec.compress(image(20, 20, 4), quality=3),
        aecodec.compress(image(10, 30, 1)[:, :, 0], quality=6),
        aecodec.compress(image(12, 12, 2), quality=2),
    ]
    if _FIXTURE.exists():
        seeds.append(_FIXTURE.read_bytes())
    try:  # format version 3, when the context model is installed
        seeds += [aecodec.compress(image(70, 130, 3), quality=3, tile=64, context=True),
                  aecodec.compress(image(20, 20, 4), quality=7, context=True)]
    except aecodec.AecError as e:
        print(f"no version 3 seeds: {e}", file=sys.stderr)
    return seeds


def _fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every integer field of a valid file (header fields and length prefixes), and
    after them, with size 0, (offset, length) of each stream's payload."""
    from aecodec import container

    fields = [(4, 1), (5, 1), (14, 4), (18, 4), (22, 2), (24, 2)]
    head = io.BytesIO(data)
    container.read_header(head)
    c = container.parse(data)
    pos = 26 + len(c.header.context_id)
    for n in (len(c.header.icc), len(c.header.exif)):
        fields.append((pos, 4))
        pos += 4 + n
    streams = [s for t in c.tiles for s in (t.z, t.y)] + ([c.alpha] if c.alpha is not None else [])
    payloads = []
    for s in streams:
        fields.append((pos, 4))
        payloads.append((pos + 4, len(s)))
        pos += 4 + len(s)
    return fields + [(0, 0)] + payloads


def mutate(data: bytes, layout: list[tuple[int, int]], rng: random.Random) -> bytes:
    """One to four random mutations of `data`, then, half of the time, a recomputed CRC. A quarter of
    the inputs only change bytes inside the coded streams (CRC recomputed): they reach the networks."""
    cut = layout.index((0, 0))
    fields, payloads = layout[:cut], [p for p in layout[cut + 1 :] if p[1]]
    b = bytearray(data)
    if payloads and rng.random() < 0.25:
        for _ in range(rng.randint(1, 4)):
            start, n = rng.choice(payloads)
            b[start + rng.randrange(n)] = rng.randrange(256)
        b[-4:] = struct.pack(">I", zlib.crc32(b[:-4]))
        return bytes(b)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(8)
        pos = rng.randrange(len(b)) if b else 0
        if kind == 0 and b:
            b[pos] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:
            b[pos] = rng.randrange(256)
        elif kind == 2:
            del b[rng.randrange(len(b) + 1):]
        elif kind == 3:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.choice((1, 2, 4, 17, 300))))
        elif kind == 4:
            del b[pos : pos + rng.choice((1, 4, 16, 64))]
        elif kind == 5 and b:
            end = min(len(b), pos + rng.choice((4, 16, 100)))
            b[end:end] = b[pos:end]
        else:  # an integer field set to an edge value
            offset, size = rng.choice(fields)
            top = (1 << (8 * size)) - 1
            value = rng.choice((0, 1, 2, 3, 63, 64, 65, 1023, 1024, 1025, 4096, top, top - 1, top // 2 + 1,
                                rng.randrange(top + 1)))
            b[offset : offset + size] = (value & top).to_bytes(size, "big")
    if rng.random() < 0.5 and len(b) >= 4:
        b[-4:] = struct.pack(">I", zlib.crc32(b[:-4]))
    return bytes(b)


def check(data: bytes) -> str | None:
    """Decode `data`; None if the decoder refused it with its own error, "decoded" if it gave an image
    of the size and mode of its header, else what went wrong."""
    from aecodec import container
    from aecodec.codec import decompress
    from aecodec.errors import AecError

    start = time.process_time()
    try:
        image = decompress(data)
    except AecError:
        image = None
    except Exception as e:  # noqa: BLE001 - anything else is exactly what we look for
        return f"{type(e).__name__}: {e}"
    seconds = time.process_time() - start
    if seconds > LIMIT_S:
        return f"decode took {seconds:.2f} CPU s"
    if image is not None:
        h = container.read_header(io.BytesIO(data))
        if image.size != (h.width, h.height) or image.mode != h.mode:
            return f"decoded {image.mode} {image.size}, header says {h.mode} {(h.width, h.height)}"
        return "decoded"
    return None


def make_input(seed: int, index: int, seeds: list[bytes], fields: list[list[tuple[int, int]]]) -> bytes:
    rng = random.Random(seed * 1_000_000_007 + index)
    k = rng.randrange(len(seeds))
    return mutate(seeds[k], fields[k], rng)


def _worker(seed: int, start: int, stride: int, current, tried, decoded, failures, peak_kb) -> None:
    from aecodec.runtime import set_threads

    set_threads(1)
    seeds = seed_files()
    fields = [_fields(s) for s in seeds]
    index = start
    while True:
        current.value = index
        problem = check(make_input(seed, index, seeds, fields))
        if problem == "decoded":
            with decoded.get_lock():
                decoded.value += 1
        elif problem:
            failures.put((index, problem))
        with tried.get_lock():
            tried.value += 1
        index += stride
        if index % 1000 < stride:
            peak_kb.value = max(peak_kb.value, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def fuzz(seconds: float, jobs: int, seed: int, out: Path) -> int:
    ctx = mp.get_context("spawn")
    tried, decoded, failures = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Queue()
    workers: list = []
    found: list[tuple[int, str]] = []

    def start(j: int, first: int):
        current, peak = ctx.Value("q", first), ctx.Value("q", 0)
        p = ctx.Process(target=_worker, args=(seed, first, jobs, current, tried, decoded, failures, peak), daemon=True)
        p.start()
        return [p, current, peak, time.time(), -1]

    workers = [start(j, j) for j in range(jobs)]
    begin, last_report, peak_mb = time.time(), 0.0, 0.0
    while time.time() - begin < seconds:
        time.sleep(0.5)
        while not failures.empty():
            found.append(failures.get())
        for j, w in enumerate(workers):
            p, current, peak, since, seen = w
            peak_mb = max(peak_mb, peak.value / 1024)
            if current.value != seen:
                w[3], w[4] = time.time(), current.value
            stuck = time.time() - since > 10 * LIMIT_S + 30  # spawning and loading the model included
            if not p.is_alive() or stuck:
                what = "hang" if stuck else f"worker died (exit code {p.exitcode})"
                if stuck:
                    p.kill()
                found.append((current.value, what))
                workers[j] = start(j, current.value + jobs)
        if time.time() - last_report > 60:
            last_report = time.time()
            print(f"{time.time() - begin:6.0f} s  {tried.value:9d} inputs  {decoded.value:8d} decoded  {len(found)} failures  "
                  f"worker peak RSS {peak_mb:.0f} MB", flush=True)
    for p, *_ in workers:
        p.kill()
    while not failures.empty():
        found.append(failures.get())
    if found:
        out.mkdir(parents=True, exist_ok=True)
        seeds = seed_files()
        fields = [_fields(s) for s in seeds]
        for index, problem in found:
            (out / f"seed{seed}-input{index}.aec").write_bytes(make_input(seed, index, seeds, fields))
            print(f"FAIL seed {seed} input {index}: {problem}")
    print(f"{tried.value} inputs ({decoded.value} decoded to an image, the rest refused with FormatError) in "
          f"{time.time() - begin:.0f} s with {jobs} workers, {len(found)} failures, "
          f"worker peak RSS {peak_mb:.0f} MB")
    return 1 if found else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("fuzz-failures"))
    ap.add_argument("--replay", help="SEED:INDEX: rebuild one input and decode it in this process")
    args = ap.parse_args()
    if args.replay:
        seed, index = map(int, args.replay.split(":"))
        seeds = seed_files()
        data = make_input(seed, index, seeds, [_fields(s) for s in seeds])
        print(check(data) or "refused with the codec's own error")
        return
    sys.exit(fuzz(args.seconds, args.jobs, args.seed, args.out))


if __name__ == "__main__":
    main()
