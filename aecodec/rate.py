"""Rate control: the continuous quality searched for a target rate, file size or PSNR.

The image is analysed once (g_a does not depend on the quality), then encoded at the qualities that a
regula falsi search picks; a target beyond what the qualities reach gives the nearest end's file and
says so in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


from . import container
from .codec import DEFAULT_CONTEXT, DEFAULT_TILE, Progress, analyse, decompress, encode_at_effort
from .errors import AecError


@dataclass(frozen=True)
class RateResult:
    """What a rate-controlled compression reached."""

    data: bytes
    quality: float
    bpp: float
    psnr: float | None  # measured on the decoded image when the target was a PSNR
    encodes: int  # how many encodes the search needed
    missed: str | None = None  # why the target was not met, in one line (what was asked, what was reached)


def compress_to(image, *, bpp: float | None = None, size: int | None = None, psnr: float | None = None,
                tile: int = DEFAULT_TILE, progress: Progress | None = None,
                icc: bytes | None = None, exif: bytes | None = None, effort: int = 0,
                context: bool = DEFAULT_CONTEXT) -> RateResult:
    """Compress to a target by searching the continuous quality; exactly one target must be given.

    Args:
        bpp: bits per pixel of the whole file; the closest reachable rate is chosen.
        size: file size in bytes; the best quality whose file is not larger (the lowest quality's file
            where even that is larger).
        psnr: PSNR-RGB in dB of the decoded image; the smallest file that reaches it (the highest
            quality's file where none does).
        effort, context: the encoder effort and entropy model of every file the search makes (`compress`).

    A target beyond what the qualities reach gives the nearest end's file, and `missed` says so.
    """
    targets = {k: v for k, v in {"bpp": bpp, "size": size, "psnr": psnr}.items() if v is not None}
    if len(targets) != 1:
        raise AecError("give exactly one of bpp, size, psnr")
    (kind, target), = targets.items()
    if not target > 0:
        raise AecError(f"{kind} target must be positive, got {target}")
    analysis = analyse(image, tile, progress, icc, exif)
    width, height = analysis.size
    probes: dict[float, tuple[bytes, float]] = {}

    def measure(q: float) -> float:
        q = round(q * container.QUALITY_SCALE) / container.QUALITY_SCALE
        if q not in probes:
            data = encode_at_effort(analysis, q, tile, effort, context=context)
            value = len(data) * 8 / (width * height) if kind != "psnr" else _psnr(analysis.distortion(decompress(data)))
            probes[q] = (data, value)
        return probes[q][1]

    goal = target * 8 / (width * height) if kind == "size" else target
    transform = math.log if kind != "psnr" else (lambda v: v)
    _search(measure, transform, goal, tolerance=0.002 if kind != "psnr" else 0.02)

    if kind == "bpp":
        q = min(probes, key=lambda k: abs(math.log(probes[k][1] / goal)))
    elif kind == "size":
        fitting = [k for k in probes if probes[k][1] <= goal]
        q = max(fitting) if fitting else min(probes)
    else:
        reaching = [k for k in probes if probes[k][1] >= goal]
        q = min(reaching) if reaching else max(probes)
    data, value = probes[q]
    return RateResult(data, q, len(data) * 8 / (width * height), value if kind == "psnr" else None, len(probes),
                      _missed(kind, target, goal, q, value, len(data)))


# A bpp target is met within 2%: the search stops within 0.2% unless the qualities end first.
_BPP_SLACK = 0.02


def _missed(kind: str, target: float, goal: float, q: float, value: float, size: int) -> str | None:
    """One line on a target that the chosen quality does not meet, or None."""
    low, high = q == container.QUALITY_MIN, q == container.QUALITY_MAX
    if kind == "bpp" and abs(math.log(value / goal)) > _BPP_SLACK:
        asked, reached, fewer = f"{target:g} bpp", f"{value:.3f} bpp", value > goal
    elif kind == "size" and value > goal:
        asked, reached, fewer = f"at most {int(target)} bytes", f"{size} bytes", True
    elif kind == "psnr" and value < goal:
        asked, reached, fewer = f"{target:g} dB", f"{value:.2f} dB", False
    else:
        return None
    if low and fewer:
        why = f"the lowest quality ({q:g}) gives " + ("no smaller file" if kind == "size" else "no fewer bits")
    elif high and not fewer:
        why = f"the highest quality ({q:g}) " + ("reaches no higher" if kind == "psnr" else "gives no more bits")
    else:
        why = f"the nearest quality ({q:g}) within the quality steps"
    return f"asked {asked}, reached {reached}: {why}"


def _search(measure: Callable[[float], float], transform: Callable[[float], float], goal: float,
            tolerance: float, max_encodes: int = 12) -> None:
    """Regula falsi (Illinois) on transform(measure(q)) - transform(goal) over q in [1, 8].

    The measure grows with q; rates are close to linear in q after a log, which makes this converge in
    a few encodes. Stops within `tolerance` of the goal, at the quality resolution, or at the limits."""
    def f(q: float) -> float:
        return transform(measure(q)) - transform(goal)

    lo, hi = container.QUALITY_MIN, container.QUALITY_MAX
    f_lo, f_hi = f(lo), f(hi)
    if f_lo >= 0 or f_hi <= 0:
        return  # the goal is outside the reachable range: the caller picks the nearest end
    side = 0
    for _ in range(max_encodes - 2):
        q = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        value = f(q)
        if abs(value) <= tolerance or hi - lo <= 2 / container.QUALITY_SCALE:
            return
        if value < 0:
            lo, f_lo = q, value
            f_hi = f_hi / 2 if side == -1 else f_hi
            side = -1
        else:
            hi, f_hi = q, value
            f_lo = f_lo / 2 if side == 1 else f_lo
            side = 1


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)
