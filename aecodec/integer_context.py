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
from .integer import ALL_TAPS, CROSS_TAPS, MatMul, conv3x3, fixed, integer_layer, leaky, taps

INDEX_UNIT, VALUE_UNIT = 16.0, 8.0  # as `context`: the inputs' units
TABLES = 64  # Gaussian tables of y

BAND = 6144  # elements of y a row band holds at most (16 rows of a 6000 px wide image): bounds the memory

# One tile's share of a pass: (tile number, the tile's (channels, rows, columns) slices of y, the pass's
# positions in the tile (rows, columns) bool, table indexes and means of those elements, flat) ->
# their integer values round(y - mean), flat. Flat is C order over the channels and the positions.
Code = Callable[[int, tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def anchors(height: int, width: int) -> np.ndarray:
    """(height, width) bool: the checkerboard's first pass."""
    return np.add.outer(np.arange(height), np.arange(width)) % 2 == 0


class IntegerContext:
    """`context.ContextModel` on integers: `code_y(index0, means, quality, tiles, code, y_hat)`."""

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
               code: Code, y_hat: np.ndarray | None = None) -> None:
        """Code y pass by pass through `code`, tile by tile, from the hyperprior's table indexes (int)
        and means (float64) of the whole y, (M, H, W) each, the coding quality and the coding tiles
        (in y elements, in coding order); y_hat (M, H, W, float32), when given, receives the decoded
        values. The networks run BAND rows at a time; the fixed-point planes kept whole are float32,
        exact below 2^24."""
        m, height, width = means.shape
        band = max(4, BAND // width)  # rows
        first = anchors(height, width)
        decoded = np.zeros((m, height, width), np.float32)  # fixed(y_hat / 8), of y_hat in float64
        start = 0
        for (channel, spatial, hidden, out), c in zip(self._nets, self.groups):
            part = slice(start, start + c)

            def inputs(top: int, bottom: int, part=part, start=start) -> np.ndarray:
                rows = slice(top, bottom)
                q = [np.full((1, bottom - top, width), fixed(np.float64(quality) / VALUE_UNIT))] if self.quality else []
                return np.concatenate([fixed(index0[part, rows] / INDEX_UNIT), fixed(means[part, rows] / VALUE_UNIT),
                                       decoded[:start, rows].astype(np.float64)] + q)

            start += c
            context = np.concatenate([_conv_band(inputs, top, min(top + band, height), height, channel, self._matmul)
                                      .astype(np.float32) for top in range(0, height, band)], 1)
            for chosen in (first, ~first):  # in the second pass, the group's `decoded` holds its anchors alone
                index, mean = np.zeros((c, height, width), np.uint8), np.zeros((c, height, width))
                for top in range(0, height, band):
                    rows = slice(top, min(top + band, height))
                    here = context[:, rows].astype(np.float64)
                    if chosen is not first:  # the anchors, seen from the other elements: their edge neighbours
                        here += _conv_band(lambda a, b, part=part: decoded[part, a:b].astype(np.float64), top, rows.stop,
                                           height, spatial, self._matmul, CROSS_TAPS)
                    own = chosen[rows]
                    a = np.round(leaky(here[:, own]))  # (hidden, elements of the pass), still fixed-point
                    a = fixed(leaky(self._matmul(hidden[0], a) + hidden[1]) * hidden[2])
                    d = (self._matmul(out[0], a) + out[1]) * out[2]
                    index[:, rows][:, own] = np.clip(index0[part, rows][:, own] + np.round(d[:c]), 0, TABLES - 1)
                    mean[:, rows][:, own] = means[part, rows][:, own] + d[c:]
                for t, (top, left, bottom, right) in enumerate(tiles):
                    box = (slice(top, bottom), slice(left, right))
                    own = chosen[box]
                    tile_mean = mean[(slice(None), *box)][:, own]
                    values = code(t, (part, *box), own, index[(slice(None), *box)][:, own].ravel().astype(np.int64),
                                  tile_mean.ravel())
                    exact = values.reshape(tile_mean.shape) + tile_mean  # float64
                    if y_hat is not None:
                        y_hat[(part, *box)][:, own] = exact
                    decoded[(part, *box)][:, own] = fixed(exact / VALUE_UNIT)


def _conv_band(inputs: Callable[[int, int], np.ndarray], top: int, bottom: int, height: int, layer,
               matmul: MatMul, which: Sequence[int] = ALL_TAPS) -> np.ndarray:
    """fixed(conv3x3(x) * scale) in rows [top, bottom) of a (C, height, W) float64 input, of which
    `inputs(a, b)` gives rows [a, b): the band and a row each side. The sums are exact, so the bands
    make the convolution of the whole, with a band of the input in memory; fixed-point values
    (below 2^24) are exact in float32 too."""
    weight, bias, to_real = layer
    above, below = max(top - 1, 0), min(bottom + 1, height)
    out = conv3x3(inputs(above, below), weight, bias, matmul, which)
    return fixed(out[:, top - above : bottom - above] * to_real)
