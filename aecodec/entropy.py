"""Symbols <-> bytes with constriction's range coder and integer CDF tables.

Every probability comes from an integer table (16-bit precision) chosen by an integer index, so the
encoder and the decoder use bit-identical models. Symbols are grouped by table and each group is
coded in one vectorized call. A value outside its table's range is coded as the table's escape
symbol, and its exact value follows at the end of the stream (Elias-gamma-like, with uniform models).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import constriction
import numpy as np

from .errors import FormatError

PRECISION = 16
_MAX_ESCAPE_BITS = 40  # |value| < 2^39: far beyond any latent a trained transform produces
_uniform_bits = constriction.stream.model.Uniform(_MAX_ESCAPE_BITS + 1)


@dataclass(frozen=True)
class CdfTables:
    """Integer tables: row t codes values offsets[t] .. offsets[t] + len(pmfs[t]) - 2; its last entry escapes."""

    pmfs: tuple[np.ndarray, ...]  # int64 frequencies summing to 2**PRECISION
    offsets: np.ndarray  # int64, one per table
    _models: list = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_cdfs(cls, cdfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> "CdfTables":
        """From CompressAI-style quantized CDFs: row t holds lengths[t] cumulative counts from 0 to 2**16."""
        pmfs = tuple(np.diff(cdfs[t, : lengths[t]].astype(np.int64)) for t in range(len(lengths)))
        for t, pmf in enumerate(pmfs):
            if pmf.sum() != 1 << PRECISION or (pmf <= 0).any():
                raise ValueError(f"CDF table {t} is not a valid {PRECISION}-bit distribution")
        return cls(pmfs, np.asarray(offsets, dtype=np.int64))

    def model(self, t: int):
        """constriction's model of table t, built once from the integer frequencies (exact dyadic floats)."""
        if not self._models:
            self._models.extend(
                constriction.stream.model.Categorical(pmf / float(1 << PRECISION), perfect=False)
                for pmf in self.pmfs
            )
        return self._models[t]


def _groups(indexes: np.ndarray, n_tables: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions sorted by table (stable), and where each table's run starts in that order. The
    indexes (checked to lie in [0, n_tables)) are sorted as 16-bit keys: numpy sorts those by radix,
    in the same order as int64 keys and 5x faster."""
    if indexes.size and (indexes.min() < 0 or indexes.max() >= n_tables):
        raise ValueError("table index out of range")
    keys = indexes.astype(np.uint16) if n_tables <= 1 << 16 else indexes
    order = np.argsort(keys, kind="stable")
    starts = np.concatenate(([0], np.cumsum(np.bincount(keys, minlength=n_tables))))
    return order, starts


class Encoder:
    """One stream, coded in passes: each pass's symbols grouped by table, then its escaped values.
    A decoder reads the passes back in the same order (`Decoder`), so a pass's tables may depend on
    the values of the passes before it."""

    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, values: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> None:
        """Code integer `values` (flat), each with the table named by `indexes` (same shape)."""
        values = np.asarray(values, dtype=np.int64).ravel()
        indexes = np.asarray(indexes, dtype=np.int64).ravel()
        order, starts = _groups(indexes, len(tables.pmfs))
        escaped = []
        for t in range(len(tables.pmfs)):
            if starts[t] == starts[t + 1]:
                continue
            v = values[order[starts[t] : starts[t + 1]]]
            symbols = v - tables.offsets[t]
            escape = len(tables.pmfs[t]) - 1
            out = (symbols < 0) | (symbols >= escape)
            symbols[out] = escape
            escaped.append(v[out])
            self._coder.encode(symbols.astype(np.int32), tables.model(t))
        for v in np.concatenate(escaped) if escaped else ():
            _encode_escape(self._coder, int(v))

    def finish(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class Decoder:
    """The passes of an `Encoder`'s stream, in order."""

    def __init__(self, data: bytes):
        if len(data) % 4:
            raise FormatError("entropy-coded stream length is not a multiple of 4 bytes")
        try:
            self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
        except (RuntimeError, ValueError) as e:
            raise FormatError(f"corrupt entropy-coded stream ({e or type(e).__name__})") from None

    def decode(self, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
        """The values of the next pass, flat, in the order of `indexes`."""
        indexes = np.asarray(indexes, dtype=np.int64).ravel()
        values = np.empty(indexes.size, dtype=np.int64)
        order, starts = _groups(indexes, len(tables.pmfs))
        try:
            escaped = []
            for t in range(len(tables.pmfs)):
                count = starts[t + 1] - starts[t]
                if count == 0:
                    continue
                symbols = self._coder.decode(tables.model(t), count).astype(np.int64)
                positions = order[starts[t] : starts[t + 1]]
                escape = len(tables.pmfs[t]) - 1
                values[positions] = symbols + tables.offsets[t]
                escaped.append(positions[symbols == escape])
            for pos in np.concatenate(escaped) if escaped else ():
                values[pos] = _decode_escape(self._coder)
        except (RuntimeError, ValueError, OverflowError, AssertionError) as e:  # constriction asserts on some invalid data
            raise FormatError(f"corrupt entropy-coded stream ({e or type(e).__name__})") from None
        return values


def encode(values: np.ndarray, indexes: np.ndarray, tables: CdfTables) -> bytes:
    """A stream of one pass: `values` (flat), each with the table named by `indexes` (same shape)."""
    encoder = Encoder()
    encoder.encode(values, indexes, tables)
    return encoder.finish()


def decode(data: bytes, indexes: np.ndarray, tables: CdfTables) -> np.ndarray:
    """Inverse of `encode`: the values, flat, in the order of `indexes`."""
    return Decoder(data).decode(indexes, tables)


def _encode_escape(coder, v: int) -> None:
    """A signed value as its zigzag code's bit length, then its bits below the leading one in 16-bit chunks."""
    u = 2 * v if v >= 0 else -2 * v - 1
    n = u.bit_length()
    if n > _MAX_ESCAPE_BITS:
        raise ValueError(f"latent value {v} is out of the codable range")
    coder.encode(n, _uniform_bits)
    for shift in range(0, max(n - 1, 0), 16):
        width = min(16, n - 1 - shift)
        coder.encode((u >> shift) & ((1 << width) - 1), constriction.stream.model.Uniform(1 << width))


def _decode_escape(coder) -> int:
    n = int(coder.decode(_uniform_bits))
    if n == 0:
        return 0
    u = 1 << (n - 1)
    for shift in range(0, n - 1, 16):
        width = min(16, n - 1 - shift)
        u |= int(coder.decode(constriction.stream.model.Uniform(1 << width))) << shift
    return u // 2 if u % 2 == 0 else -(u + 1) // 2
