"""aecodec in the benchmark's codec registry: real .aec files at qualities 1..8, on one thread."""

from __future__ import annotations

import numpy as np

from benchmarks.classical import Codec, register


def _encode(img: np.ndarray, quality: float) -> bytes:
    import torch

    import aecodec

    torch.set_num_threads(1)  # like every other codec in the benchmark
    return aecodec.compress(img, quality=quality)


def _decode(data: bytes) -> np.ndarray:
    import aecodec

    return np.asarray(aecodec.decompress(data).convert("RGB"))


def _version() -> str:
    from importlib.metadata import version

    from aecodec.weights import find_weights

    w = find_weights()
    return f"aecodec {version('aecodec')}, model {w.model_id.hex()} ({w.manifest.get('steps')} steps)"


register(Codec(
    "aecodec", _encode, _decode, (1, 2, 3, 4, 5, 6, 7, 8), "quality",
    {"library": "aecodec (this project)", "model": "mean-scale hyperprior with gain units, N=128, M=192",
     "entropy_coder": "constriction range coder", "threads": 1, "sweep": "quality levels 1-8"},
    _version, requires=("aecodec",)))
