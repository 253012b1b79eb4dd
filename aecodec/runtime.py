"""The coding model on ONNX Runtime and numpy: what `codec` computes with, without torch.

g_a, h_a, g_s and the heads run as ONNX graphs (`export`) whose weights come from the safetensors
file; the gains, the medians, the probability tables and the integer h_s (numpy, exact) come from the
same file. Every array here is one image: (C, H, W), float32 unless said otherwise.

Pixels do not depend on the thread count: ONNX Runtime's CPU kernels split a convolution's outputs
between threads, never one output's sum (checked by tests at 1, 2 and 3 threads).
"""

from __future__ import annotations

import base64
import json
import os
from functools import cached_property

import numpy as np

from . import entropy
from .integer import HyperSynthesis64, IntegerHyperSynthesis

_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(n: int) -> None:
    """Threads of the sessions opened from now on (default: the CPUs this process may use)."""
    global _threads
    _threads = max(1, int(n))


def threads() -> int:
    """Threads of the sessions opened from now on."""
    return _threads


class Graph:
    """One ONNX graph with its weights: `graph(name=array, ...)` -> its outputs, in order.

    `weights` names the graph's external initializers (the manifest lists them): ONNX Runtime takes
    exactly those, neither fewer nor more."""

    def __init__(self, graph: bytes, weights: list[str], tensors: dict[str, np.ndarray]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _threads
        options.inter_op_num_threads = 1
        # No busy-waiting between runs: numpy's BLAS (the integer h_s) runs next on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The memory pattern keeps one plan of buffers per input shape: a third more peak memory for g_s
        # at no gain in speed (measured on 768x512).
        options.enable_mem_pattern = False
        # ONNX Runtime reads these arrays in place: they must outlive the session.
        self._values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tensors[n])) for n in weights]
        options.add_external_initializers(list(weights), self._values)
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """(C, H, W) images and (1,) values in, (C, H, W) images out, float32."""
        feeds = {k: np.asarray(v, np.float32)[None] if v.ndim == 3 else np.asarray(v, np.float32)
                 for k, v in inputs.items()}
        return [out[0] for out in self.run(**feeds)]

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for its inputs as they are (contiguous, of the graph's types and shapes)."""
        return self._session.run(None, inputs)


# One float64 MatMul node (inputs a, b; output c), opset 17: built with onnx.helper, which the light
# install lacks (tests/test_runtime.py builds it again and compares).
MATMUL64 = base64.b64decode("CAgSB2FlY29kZWM6YgoRCgFhCgFiEgFjIgZNYXRNdWwSCG1hdG11bDY0WhUKAWESEAoOCAsSCgoDEgFtCgMSAWta"
                            "FQoBYhIQCg4ICxIKCgMSAWsKAxIBbmIVCgFjEhAKDggLEgoKAxIBbQoDEgFuQgQKABAR")


class MatMul64:
    """`a @ b` in float64 on ONNX Runtime's thread pool, for the integer h_s. numpy's OpenBLAS would do
    as well, but its idle threads then busy-wait for a tenth of a second and slow the g_s that follows
    by a quarter."""

    def __init__(self):
        self._graph = Graph(MATMUL64, [], {})

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._graph.run(a=np.ascontiguousarray(a), b=np.ascontiguousarray(b))[0]


_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "I16": np.int16,
           "U8": np.uint8, "I8": np.int8}


def _tensors(path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as a read-only numpy view of the mapped file, and its
    metadata: a tensor costs memory only once read, so a decoder never holds g_a's weights."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(raw[:8].view("<u8")[0])
    header = json.loads(raw[8 : 8 + size].tobytes())
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + size
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        tensors[name] = raw[base + start : base + end].view(dtype).reshape(entry["shape"])
    return tensors, metadata


def _cdf_tables(state: dict[str, np.ndarray], model: str) -> entropy.CdfTables:
    """The integer tables of one entropy model, stored under compressai's buffer names."""
    return entropy.CdfTables.from_cdfs(state[f"{model}._quantized_cdf"], state[f"{model}._cdf_length"],
                                       state[f"{model}._offset"])


class CodingModel:
    """The shipped backbone at coding time: the pieces the codec calls, for one image at a time."""

    Z_PER_Y = 4  # y elements per z element along each side: h_a and h_s each resample by 2 twice

    def __init__(self, weights):
        """From verified `weights.Weights` (the safetensors file and its manifest with the graphs)."""
        self.weights = weights
        self.state, metadata = _tensors(weights.path)
        config = json.loads(metadata["config"])
        self.N, self.M, self.lambdas = config["N"], config["M"], tuple(config["lambdas"])
        self.levels = len(self.lambdas)
        self.log_gain, self.log_inv_gain = self.state["log_gain"], self.state["log_inv_gain"]
        self.medians = self.state["entropy_bottleneck.quantiles"][:, 0, 1]  # the factorized prior's medians
        self.z_tables = _cdf_tables(self.state, "entropy_bottleneck")
        self.y_tables = _cdf_tables(self.state, "gaussian_conditional")
        # The Gaussian table of a scale: how many of the scale table's first 63 entries lie below it.
        self._scale_bounds = self.state["gaussian_conditional.scale_table"][:-1].astype(np.float64)
        self._lowest_scale = float(self.state["gaussian_conditional.lower_bound_scale.bound"][0])

    def _graph(self, name: str, extra: dict[str, np.ndarray] | None = None) -> Graph:
        data, names = self.weights.graph(name)
        return Graph(data, names, {**self.state, **(extra or {})})

    @cached_property
    def _analysis(self) -> Graph:
        return self._graph("analysis")

    @cached_property
    def _hyper_analysis(self) -> Graph:
        return self._graph("hyper_analysis")

    @cached_property
    def _synthesis(self) -> Graph:
        return self._graph("synthesis")

    @cached_property
    def integer_h_s(self) -> IntegerHyperSynthesis:
        return IntegerHyperSynthesis(self.state, self.medians, MatMul64())

    @cached_property
    def _h_s64(self) -> HyperSynthesis64:
        return HyperSynthesis64(self.state, MatMul64())

    def gains(self, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """Gain and inverse gain, (M, 1, 1) each, for a real quality in [1, levels]: interpolated
        linearly in log space between the two nearest levels (in float32, as the torch model)."""
        one = np.float32(1)
        q = np.clip(np.float32(quality), one, np.float32(self.levels)) - one
        lo = min(int(np.floor(q)), self.levels - 2)
        frac = q - np.float32(lo)
        log_g = (one - frac) * self.log_gain[lo] + frac * self.log_gain[lo + 1]
        log_ig = (one - frac) * self.log_inv_gain[lo] + frac * self.log_inv_gain[lo + 1]
        return np.exp(log_g)[:, None, None], np.exp(log_ig)[:, None, None]

    def analyse(self, x: np.ndarray) -> np.ndarray:
        """Pixels in [0,1] (3, H, W), H and W multiples of 64 -> latent before the gain (M, H/16, W/16)."""
        return self._analysis(x=x)[0]

    def hyper_analyse(self, y: np.ndarray) -> np.ndarray:
        """Gained latent y -> hyper-latent z (N, h/4, w/4)."""
        return self._hyper_analysis(y=y)[0]

    def exact_entropy_parameters(self, z_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer z symbols `round(z - median)` -> (scales, means) of y through the integer h_s, identical
        on every machine (float64): format version 2."""
        return self.integer_h_s(z_values)

    def entropy_parameters(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """z_hat -> (scales, means) of y through the float h_s in float64: format version 1."""
        return self._h_s64(z_hat)

    def table_indexes(self, scales: np.ndarray) -> np.ndarray:
        """The Gaussian table of each scale (compressai's `build_indexes`, exactly)."""
        return np.searchsorted(self._scale_bounds, np.maximum(scales, self._lowest_scale))

    def synthesise(self, y_hat: np.ndarray, quality: float) -> tuple[np.ndarray, np.ndarray]:
        """Dequantized y -> (pixels, not clamped; g_s's last hidden layer, on which the heads build)."""
        _, inv_gain = self.gains(quality)
        x, features = self._synthesis(y=y_hat.astype(np.float32) * inv_gain)
        return x, features


class HeadModel:
    """A head's graphs on the backbone: `run(graph, **inputs)`."""

    def __init__(self, weights, backbone: CodingModel):
        self.weights = weights
        state, metadata = _tensors(weights.path)
        self.config = json.loads(metadata["config"])
        self._tensors = {**backbone.state, **state}
        self._graphs: dict[str, Graph] = {}

    def margin(self, graph: str) -> int:
        """Pixels of window context the graph needs (declared beside the head's network, in `heads`)."""
        return self.weights.manifest["graphs"][graph]["margin"]

    @property
    def scale(self) -> int:
        """The super-resolution factor."""
        return self.weights.manifest["graphs"]["head"]["scale"]

    def run(self, graph: str, **inputs: np.ndarray) -> np.ndarray:
        if graph not in self._graphs:
            data, names = self.weights.graph(graph)
            self._graphs[graph] = Graph(data, names, self._tensors)
        return self._graphs[graph](**inputs)[0]


def context_model(weights):
    """The context model of verified `weights.Weights` as the integer network that codes y
    (`integer_context.IntegerContext`), its tensors read in place from the mapped file."""
    from .integer_context import IntegerContext

    state, metadata = _tensors(weights.path)
    return IntegerContext(state, json.loads(metadata["config"]), MatMul64())
