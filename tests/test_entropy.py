import numpy as np
import pytest

from aecodec import entropy
from aecodec.errors import FormatError


def gaussian_tables(scales=(0.5, 2.0, 8.0)) -> entropy.CdfTables:
    """Integer tables for discretized Gaussians, built here without the model."""
    from math import erf, sqrt

    cdfs, lengths, offsets = [], [], []
    for s in scales:
        k = int(np.ceil(5 * s))
        probs = np.array([0.5 * (erf((v + 0.5) / (s * sqrt(2))) - erf((v - 0.5) / (s * sqrt(2)))) for v in range(-k, k + 1)])
        freqs = np.maximum(1, np.floor(probs * (65536 - 2 * k - 2))).astype(np.int64)
        freqs = np.append(freqs, 1)  # escape
        freqs[k] += 65536 - freqs.sum()
        cdfs.append(np.concatenate([[0], np.cumsum(freqs)]))
        lengths.append(len(freqs) + 1)
        offsets.append(-k)
    width = max(lengths)
    table = np.zeros((len(scales), width), dtype=np.int64)
    for t, c in enumerate(cdfs):
        table[t, : len(c)] = c
    return entropy.CdfTables.from_cdfs(table, np.array(lengths), np.array(offsets))


def test_round_trip_with_escapes():
    tables = gaussian_tables()
    rng = np.random.default_rng(1)
    indexes = rng.integers(0, 3, 5000)
    values = np.round(rng.normal(0, np.array([0.5, 2.0, 8.0])[indexes])).astype(np.int64)
    values[[3, 10, 4000]] = [1000, -123456789012, 2**38]  # far outside every table
    data = entropy.encode(values, indexes, tables)
    assert np.array_equal(entropy.decode(data, indexes, tables), values)


def test_rate_follows_the_model():
    """Coding Gaussian samples costs close to their entropy: the tables are really used."""
    tables = gaussian_tables()
    rng = np.random.default_rng(2)
    values = np.round(rng.normal(0, 0.5, 20000)).astype(np.int64)
    narrow = len(entropy.encode(values, np.zeros(20000, int), tables))
    wide = len(entropy.encode(values, np.full(20000, 2), tables))
    # A rounded N(0, 0.5) has about 1.27 bits of entropy; under the scale-8 table a symbol costs over 3.
    assert narrow * 8 / 20000 < 1.32 and wide * 8 / 20000 > 3.0


def test_empty_and_misaligned_streams():
    tables = gaussian_tables()
    assert entropy.decode(entropy.encode(np.zeros(0, int), np.zeros(0, int), tables), np.zeros(0, int), tables).size == 0
    with pytest.raises(FormatError):
        entropy.decode(b"abc", np.zeros(4, int), tables)


def test_invalid_tables_are_refused():
    with pytest.raises(ValueError):
        entropy.CdfTables.from_cdfs(np.array([[0, 100, 200]]), np.array([3]), np.array([0]))
