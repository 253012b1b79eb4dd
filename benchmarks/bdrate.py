"""Bjøntegaard delta metrics (BD-rate, BD-PSNR) between two rate-quality curves.

Each curve is a list of (bpp, quality) points. For BD-rate, log(rate) is modelled as a
monotone cubic (PCHIP) function of quality, both curves are integrated over their
overlapping quality interval and the mean log-rate gap d gives (exp(d) - 1) * 100 percent.
BD-PSNR swaps the axes: quality as a PCHIP function of log(rate), mean quality gap.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator

Curve = Sequence[tuple[float, float]]


def _prepare(curve: Curve, name: str) -> tuple[np.ndarray, np.ndarray]:
    pts = np.asarray(curve, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"{name} curve needs at least 2 (bpp, quality) points, got {len(pts)}")
    if np.any(pts[:, 0] <= 0):
        raise ValueError(f"{name} curve has non-positive rates")
    return np.log(pts[:, 0]), pts[:, 1]


def _mean_gap(xa: np.ndarray, ya: np.ndarray, xt: np.ndarray, yt: np.ndarray, what: str) -> float:
    """Mean of (y_test - y_anchor) over the overlap of the x ranges, y = pchip(x)."""
    ia, it = np.argsort(xa), np.argsort(xt)
    xa, ya, xt, yt = xa[ia], ya[ia], xt[it], yt[it]
    if len(np.unique(xa)) != len(xa) or len(np.unique(xt)) != len(xt):
        raise ValueError(f"curves must have distinct {what} values")
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        raise ValueError(f"curves do not overlap in {what}: [{xa[0]:.4g}, {xa[-1]:.4g}] vs [{xt[0]:.4g}, {xt[-1]:.4g}]")
    fa, ft = PchipInterpolator(xa, ya), PchipInterpolator(xt, yt)
    return float((ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo))


def bd_rate(anchor: Curve, test: Curve) -> float:
    """Average rate difference (percent) of `test` vs `anchor` at equal quality; negative = test saves bits."""
    lra, qa = _prepare(anchor, "anchor")
    lrt, qt = _prepare(test, "test")
    d = _mean_gap(qa, lra, qt, lrt, "quality")
    return float((np.exp(d) - 1.0) * 100.0)


def bd_psnr(anchor: Curve, test: Curve) -> float:
    """Average quality difference (dB) of `test` vs `anchor` at equal rate; positive = test is better."""
    lra, qa = _prepare(anchor, "anchor")
    lrt, qt = _prepare(test, "test")
    return _mean_gap(lra, qa, lrt, qt, "log-rate")
