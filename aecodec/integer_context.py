"""The context model for y (`aecodec.context`) as an integer network, and y coded pass by pass with it.

The encoder and the decoder must pick identical tables and means for every element, or the rest of
the image decodes to noise; so every network here is integer (`integer.integer_layer`: 16-bit weights,
activations with 12 fractional bits, sums of integers below 2^53 in float64, exact in any order).
Its inputs are exact too: the integer table index of the hyperprior's scale, the hyperprior's means
(integer sums times powers of two) and the y_hat already decoded (integers plus those means).

Coding order, per tile: for each channel group in turn, its anchors (row + column even), then the
rest; each pass is one call of `code`, which the encoder makes encode and the decoder decode.

Numpy only, as `integer`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .integer import MatMul, conv3x3, fixed, integer_layer, leaky, taps

INDEX_UNIT, VALUE_UNIT = 16.0, 8.0  # as `context`: the inputs' units
TABLES = 64  # Gaussian tables of y

# One pass: (the group's channels, the pass's positions (H, W) bool, table indexes and means of its
# elements, flat) -> their integer values round(y - mean), flat.
Code = Callable[[slice, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def anchors(height: int, width: int) -> np.ndarray:
    """(height, width) bool: the checkerboard's first pass."""
    return np.add.outer(np.arange(height), np.arange(width)) % 2 == 0


class IntegerContext:
    """`context.ContextModel` on integers: `code_y(index0, means, quality, code)` -> y_hat."""

    def __init__(self, state: dict[str, np.ndarray], config: dict, matmul: MatMul = np.matmul):
        """From a context weights file's tensors and its config (`context.ContextConfig` as a dict)."""
        self.groups = tuple(config["groups"])
        self.quality = bool(config["quality"])
        self._matmul = matmul
        self._nets = []
        for k in range(len(self.groups)):
            def layer(name, bias=True):
                w = state[f"{name}.weight"].astype(np.float32)
                weight, b, to_real = integer_layer(w, state[f"{name}.bias"] if bias else None, 0, name)
                return weight, b, to_real[:, None]
            ch_w, ch_b, ch_r = layer(f"channel.{k}")
            sp_w, sp_b, sp_r = layer(f"spatial.{k}", bias=False)
            h_w, h_b, h_r = layer(f"out.{k}.1")
            o_w, o_b, o_r = layer(f"out.{k}.3")
            self._nets.append(((taps(ch_w), ch_b, ch_r[:, :, None]), (taps(sp_w), sp_b, sp_r[:, :, None]),
                               (h_w[:, :, 0, 0].astype(np.float64), h_b[:, None], h_r),
                               (o_w[:, :, 0, 0].astype(np.float64), o_b[:, None], o_r)))

    def code_y(self, index0: np.ndarray, means: np.ndarray, quality: float, code: Code) -> np.ndarray:
        """The hyperprior's table indexes (int) and means (float64), (M, H, W) each, and the coding
        quality -> y_hat (M, H, W), float64, every pass coded through `code` in order."""
        m, height, width = means.shape
        first = anchors(height, width)
        y_hat = np.zeros((m, height, width))
        decoded: list[np.ndarray] = []  # fixed-point y_hat of the groups done
        q = [np.full((1, height, width), fixed(np.float64(quality) / VALUE_UNIT))] if self.quality else []
        start = 0
        for (channel, spatial, hidden, out), c in zip(self._nets, self.groups):
            part = slice(start, start + c)
            start += c
            inputs = np.concatenate([fixed(index0[part] / INDEX_UNIT), fixed(means[part] / VALUE_UNIT)] + decoded + q)
            context = fixed(conv3x3(inputs, channel[0], channel[1], self._matmul) * channel[2])
            anchored = np.zeros((c, height, width))
            for chosen in (first, ~first):
                if chosen is not first:
                    context = context + fixed(conv3x3(anchored, spatial[0], spatial[1], self._matmul) * spatial[2])
                a = np.round(leaky(context[:, chosen]))  # (hidden, elements of the pass), still fixed-point
                a = fixed(leaky(self._matmul(hidden[0], a) + hidden[1]) * hidden[2])
                d = (self._matmul(out[0], a) + out[1]) * out[2]
                d_index, d_mean = d[:c], d[c:]
                base = index0[part][:, chosen]
                index = np.clip(base + np.round(d_index), 0, TABLES - 1).astype(np.int64)
                mean = means[part][:, chosen] + d_mean
                values = code(part, chosen, index.ravel(), mean.ravel()).reshape(mean.shape)
                y_hat[part][:, chosen] = values + mean
                if chosen is first:
                    anchored[:, chosen] = fixed(y_hat[part][:, chosen] / VALUE_UNIT)
            decoded.append(fixed(y_hat[part] / VALUE_UNIT))
        return y_hat
