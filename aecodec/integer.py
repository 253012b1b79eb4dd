"""The hyper-synthesis h_s as an integer network, so that every machine picks the same tables.

Learned codecs break when the encoder and the decoder compute slightly different scales and so pick
different probability tables: the rest of the image decodes to noise. Here h_s runs on integers
(Ballé, Johnston, Minnen 2019, "Integer Networks for Data Compression with Latent-Variable Models"),
derived from the trained float network after training:

- weights: per output channel, `round(w * 2^e)` with the largest `e` that keeps |w| below 2^15;
- activations: integers with `ACT_BITS` fractional bits, clamped to +-`ACT_LIMIT`;
- biases: rounded to the scale of their layer's sums.

Every convolution then sums integers held in float64 whose partial sums stay below 2^53 (checked
when the network is built), so the result is exact whatever the summation order, thread count,
BLAS or machine. Everything else is elementwise IEEE arithmetic (multiplications by powers of two,
one multiplication by the LeakyReLU slope, rounding), which is reproducible everywhere.

Numpy only: the decoder needs no deep-learning framework. `HyperSynthesis64` is the float network in
float64 that format version 1 used (not exact across machines, which is why version 2 exists).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

WEIGHT_BITS = 15  # |integer weight| < 2^15: 16-bit weights
ACT_BITS = 12  # fractional bits of every activation (and of z_hat)
ACT_LIMIT = float(1 << 24)  # |integer activation| <= 2^24: real values within +-4096
_EXACT = float(1 << 53)  # float64 holds every integer below this exactly

# model.h_s: (index of the convolution in the Sequential, whether it is transposed); a LeakyReLU with
# this slope follows every convolution but the last.
H_S_LAYERS = ((0, True), (2, True), (4, False))
SLOPE = 0.01

# A transposed 5x5 convolution with stride 2 (padding 2, output padding 1) is a 3x3 convolution with
# 4 outputs per channel and a pixel shuffle: output 2i + a sums input i + e (e in -1, 0, 1) times kernel
# tap a + 2 - 2e; tap 5 would lie beyond the kernel (a zero).
_TAPS = np.array([[4, 2, 0], [5, 3, 1]])


def subpixel(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A transposed 5x5 stride-2 convolution's (in, out, 5, 5) weight and bias -> the (4*out, in, 3, 3)
    weight and bias of its 3x3 form (channel 4c + 2a + b is output c at row phase a, column phase b)."""
    c_in, c_out = weight.shape[:2]
    out = np.zeros((c_out, 2, 2, c_in, 3, 3), dtype=weight.dtype)
    for (a, i), t in np.ndenumerate(_TAPS):
        for (b, j), u in np.ndenumerate(_TAPS):
            if t < 5 and u < 5:  # tap 5 is the zero beyond the kernel
                out[:, a, b, :, i, j] = weight[:, :, t, u].T
    return out.reshape(4 * c_out, c_in, 3, 3), np.repeat(bias, 4)


def taps(weight: np.ndarray) -> np.ndarray:
    """A (out, in, 3, 3) weight as nine contiguous (out, in) matrices, the form `conv3x3` takes (BLAS
    needs contiguous operands), in float32: every weight here is a float32 value (the trained ones, or
    integers below 2^15), so half the memory of float64 loses nothing."""
    return np.ascontiguousarray(weight.transpose(2, 3, 0, 1).reshape(9, *weight.shape[:2]), dtype=np.float32)


MatMul = Callable[[np.ndarray, np.ndarray], np.ndarray]  # float64 a @ b: numpy's, or ONNX Runtime's (runtime)


ALL_TAPS = range(9)
CROSS_TAPS = (1, 3, 5, 7)  # the four edge neighbours: all a checkerboard's other colour sees of it


def conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, matmul: MatMul = np.matmul,
            which: Sequence[int] = ALL_TAPS) -> np.ndarray:
    """(C, H, W) -> (C_out, H, W): a 3x3 convolution with zero padding, as matrix products in the
    dtype of `x`, one for each tap in `which` (the others add nothing); `weight` as `taps` gives it
    (widened one tap at a time)."""
    c, h, w = x.shape
    padded = np.zeros((c, h + 2, w + 2), dtype=x.dtype)
    padded[:, 1:-1, 1:-1] = x
    out = np.broadcast_to(bias[:, None], (len(bias), h * w)).copy()
    for k in which:
        i, j = divmod(k, 3)
        out += matmul(weight[k].astype(x.dtype), padded[:, i : i + h, j : j + w].reshape(c, -1))
    return out.reshape(-1, h, w)


def pixel_shuffle(x: np.ndarray) -> np.ndarray:
    """(4C, H, W) -> (C, 2H, 2W), channel 4c + 2a + b going to row phase a and column phase b."""
    c4, h, w = x.shape
    return x.reshape(c4 // 4, 2, 2, h, w).transpose(0, 3, 1, 4, 2).reshape(c4 // 4, 2 * h, 2 * w)


def _layers(state: dict[str, np.ndarray], prefix: str = "h_s") -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(weight as stored, float32; bias, float64; transposed) of each convolution."""
    return [(state[f"{prefix}.{i}.weight"].astype(np.float32), state[f"{prefix}.{i}.bias"].astype(np.float64), t)
            for i, t in H_S_LAYERS]


def _run(layers, a: np.ndarray, activation, matmul: MatMul) -> tuple[np.ndarray, np.ndarray]:
    for k, (weight, bias, transposed, to_real) in enumerate(layers):
        s = conv3x3(a, weight, bias, matmul)
        s = pixel_shuffle(s) if transposed else s
        if k == len(layers) - 1:
            out = s * to_real
            return out[: len(out) // 2], out[len(out) // 2 :]
        a = activation(leaky(s), to_real)
    raise ValueError("h_s has no layers")


def integer_layer(w: np.ndarray, b: np.ndarray | None, out_dim: int = 0, name: str = "layer"):
    """A trained convolution's float32 weight (output channels along `out_dim`) and bias as integers:
    per output channel, weight `round(w * 2^e)` below 2^15 and bias `round(b * 2^(e + ACT_BITS))`, so
    that its sums over activations with ACT_BITS fractional bits are real values times 2^(e + ACT_BITS);
    and `to_real`, the 2^-(e + ACT_BITS) of each output. Refused if a sum could reach 2^53."""
    peak = np.abs(w).swapaxes(0, out_dim).reshape(w.shape[out_dim], -1).max(axis=1)
    exps = [WEIGHT_BITS - math.frexp(float(m))[1] if m > 0 else 0 for m in peak]
    shape = [1] * w.ndim
    shape[out_dim] = -1
    # exact in float32: a power of two times a float32, rounded to an integer below 2^15
    weight = np.round(w * np.array([math.ldexp(1.0, e) for e in exps], np.float32).reshape(shape))
    b = np.zeros(len(exps)) if b is None else b.astype(np.float64)
    bias = np.round(b * np.array([math.ldexp(1.0, e + ACT_BITS) for e in exps]))
    to_real = np.array([math.ldexp(1.0, -e - ACT_BITS) for e in exps])
    per_output = np.abs(weight).swapaxes(0, out_dim).reshape(weight.shape[out_dim], -1).sum(axis=1, dtype=np.float64)
    if float((per_output * ACT_LIMIT + np.abs(bias)).max()) >= _EXACT:
        raise ValueError(f"{name}: integer sums could reach 2^53; the weights are out of range")
    return weight, bias, to_real


def fixed(x: np.ndarray) -> np.ndarray:
    """Real values -> integer activations with ACT_BITS fractional bits (float64), clamped."""
    return np.clip(np.round(x * float(1 << ACT_BITS)), -ACT_LIMIT, ACT_LIMIT)


def activate(s: np.ndarray, to_real: np.ndarray) -> np.ndarray:
    """A layer's integer sums -> integer activations (ACT_BITS fractional bits), clamped."""
    return fixed(s * to_real)


def leaky(s: np.ndarray) -> np.ndarray:
    return np.where(s >= 0, s, s * SLOPE)


class IntegerHyperSynthesis:
    """z symbols (integers, before the medians) -> (scales, means) of y, exactly, in float64."""

    def __init__(self, state: dict[str, np.ndarray], medians: np.ndarray, matmul: MatMul = np.matmul):
        """From a weights file's tensors (`h_s.*`) and the factorized prior's medians (N,). Any `matmul`
        gives the same result: every sum is of integers below 2^53."""
        self._matmul = matmul
        self._layers = []
        for i, (w, b, transposed) in enumerate(_layers(state)):
            weight, bias, to_real = integer_layer(w, b, 1 if transposed else 0, f"h_s layer {i}")
            if transposed:  # the scales stay per output channel: the pixel shuffle only moves values
                weight, bias = subpixel(weight, bias)
            self._layers.append((taps(weight), bias, transposed, to_real[:, None, None]))
        self._medians = np.round(medians.astype(np.float64).reshape(-1, 1, 1) * (1 << ACT_BITS))

    def __call__(self, z_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, h, w) integer symbols `round(z - median)` -> (scales, means), each (M, 4h, 4w)."""
        a = np.clip(z_values.astype(np.float64) * (1 << ACT_BITS) + self._medians, -ACT_LIMIT, ACT_LIMIT)
        return _run(self._layers, a, activate, self._matmul)


class HyperSynthesis64:
    """The float h_s in float64: z_hat (N, h, w) -> (scales, means), as format version 1 files were made."""

    def __init__(self, state: dict[str, np.ndarray], matmul: MatMul = np.matmul):
        self._matmul = matmul
        self._layers = []
        for w, b, transposed in _layers(state):
            w, b = subpixel(w, b) if transposed else (w, b)
            self._layers.append((taps(w), b, transposed, 1.0))

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _run(self._layers, z_hat.astype(np.float64), lambda s, _: s, self._matmul)
