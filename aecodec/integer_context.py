"""The context model for y (`aecodec.context`) as an integer network, and y coded pass by pass with it.

The encoder and the decoder must pick identical tables and means for every element, or the rest of
the image decodes to noise; so every network here is integer (`integer.integer_layer`: 16-bit weights,
activations with 12 fractional bits, sums of integers below 2^53 in float64, exact in any order).
Its inputs are exact too: the integer table index of the hyperprior's scale, the hyperprior's means
(integer sums times powers of two) and the y_hat already decoded (integers plus those means).

Coding order: for each channel group in turn, its anchors (row + column even), then the rest. Each
pass runs over the whole image, so that the context crosses tile borders and the pixels do not depend
on the tile size; tiles split the streams only: each pass calls `code` once per tile, in tile order,
with the tile's elements of the pass, which the encoder makes encode and the decoder decode.

Numpy only, as `integer`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .grid import Box
from .integer import MatMul, conv3x3, fixed, integer_layer, leaky, taps

INDEX_UNIT, VALUE_UNIT = 16.0, 8.0  # as `context`: the inputs' units
TABLES = 64  # Gaussian tables of y

BAND = 64  # rows of y whose context inputs are in memory at a time (16 channels' worth of the image otherwise)

# One tile's share of a pass: (tile number, the tile's (channels, rows, columns) slices of y, the pass's
# positions in the tile (rows, columns) bool, table indexes and means of those elements, flat) ->
# their integer values round(y - mean), flat. Flat is C order over the channels and the positions.
Code = Callable[[int, tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def anchors(height: int, width: int) -> np.ndarray:
    """(height, width) bool: the checkerboard's first pass."""
    return np.add.outer(np.arange(height), np.arange(width)) % 2 == 0


class IntegerContext:
    """`context.ContextModel` on integers: `code_y(index0, means, quality, tiles, code)` -> y_hat."""

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

    def code_y(self, index0: np.ndarray, means: np.ndarray, quality: float, tiles: Sequence[Box],
               code: Code) -> np.ndarray:
        """The hyperprior's table indexes (int) and means (float64) of the whole y, (M, H, W) each, the
        coding quality and the coding tiles (in y elements, in coding order) -> y_hat (M, H, W),
        float64, every pass coded through `code` tile by tile."""
        m, height, width = means.shape
        first = anchors(height, width)
        y_hat = np.zeros((m, height, width))
        start = 0
        for (channel, spatial, hidden, out), c in zip(self._nets, self.groups):
            part = slice(start, start + c)

            def inputs(top: int, bottom: int, part=part, start=start) -> np.ndarray:
                rows = slice(top, bottom)
                q = [np.full((1, bottom - top, width), fixed(np.float64(quality) / VALUE_UNIT))] if self.quality else []
                return np.concatenate([fixed(index0[part, rows] / INDEX_UNIT), fixed(means[part, rows] / VALUE_UNIT),
                                       fixed(y_hat[:start, rows] / VALUE_UNIT)] + q)

            start += c
            context = _banded_conv3x3(inputs, height, channel, self._matmul)
            anchored = np.zeros((c, height, width))
            for chosen in (first, ~first):
                if chosen is not first:
                    context = context + fixed(conv3x3(anchored, spatial[0], spatial[1], self._matmul) * spatial[2])
                a = np.round(leaky(context[:, chosen]))  # (hidden, elements of the pass), still fixed-point
                a = fixed(leaky(self._matmul(hidden[0], a) + hidden[1]) * hidden[2])
                d = (self._matmul(out[0], a) + out[1]) * out[2]
                d_index, d_mean = d[:c], d[c:]
                base = index0[part][:, chosen]
                index, mean = np.zeros((c, height, width), np.int64), np.zeros((c, height, width))
                index[:, chosen] = np.clip(base + np.round(d_index), 0, TABLES - 1)
                mean[:, chosen] = means[part][:, chosen] + d_mean
                values = np.zeros((c, height, width))
                for t, (top, left, bottom, right) in enumerate(tiles):
                    where = (part, slice(top, bottom), slice(left, right))
                    own = chosen[where[1:]]
                    values[:, where[1], where[2]][:, own] = code(t, where, own, index[:, where[1], where[2]][:, own].ravel(),
                                                                 mean[:, where[1], where[2]][:, own].ravel()).reshape(c, -1)
                y_hat[part][:, chosen] = values[:, chosen] + mean[:, chosen]
                if chosen is first:
                    anchored[:, chosen] = fixed(y_hat[part][:, chosen] / VALUE_UNIT)
        return y_hat


def _banded_conv3x3(inputs: Callable[[int, int], np.ndarray], height: int, layer, matmul: MatMul) -> np.ndarray:
    """fixed(conv3x3(x) * scale) of the (C, height, W) input that `inputs(top, bottom)` gives row by row,
    made BAND rows at a time with a row of context each side: the sums are exact, so it is the
    convolution of the whole, with a band of the input in memory."""
    weight, bias, to_real = layer
    bands = []
    for top in range(0, height, BAND):
        bottom = min(top + BAND, height)
        above, below = max(top - 1, 0), min(bottom + 1, height)
        out = conv3x3(inputs(above, below), weight, bias, matmul)
        bands.append(fixed(out[:, top - above : bottom - above] * to_real))
    return np.concatenate(bands, 1)
