"""The transforms and heads as ONNX graphs without their weights, for the light coding path.

A graph holds the structure only: each weight is an external initializer named by its key in the
safetensors file, which `runtime` hands to ONNX Runtime when it opens the graph. So the graphs are a
few kilobytes, the safetensors file stays the one home of the weights (and of the model id), and a
graph fits every weights file of its architecture.

What the weights file stores is not always what the graph computes with, so the graph derives it
from the stored tensors with ONNX operators, which ONNX Runtime folds once when the session opens:
- GDN's beta and gamma are stored reparametrized (compressai): the graph squares their lower bound
  and takes the pedestal off, as `GDN.forward` does.
- A transposed convolution (5x5, stride 2) becomes four convolutions, one per output phase, and an
  interleave (the same sums, without the inserted zeros): 1.3x faster than one 3x3 convolution with
  4 times the outputs and a pixel shuffle, and ONNX Runtime's ConvTranspose is slower still.

Needs torch, compressai and onnx (the `train` extra): graphs are made with the weights, not at coding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import require

require("train", "exporting graphs", "torch", "compressai", "onnx")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from compressai.layers import GDN  # noqa: E402
from torch import Tensor  # noqa: E402

from .heads import SCALE, _level_map  # noqa: E402

OPSET = 17

# Transposed 5x5 convolution, stride 2, padding 2, output padding 1: output row 2i + a is the sum over
# input rows i + e of kernel tap a + 2 - 2e. Row phase 0 takes taps (4, 2, 0) of rows i - 1, i, i + 1;
# phase 1 takes taps (3, 1) of rows i, i + 1 (its third tap would fall outside the kernel); columns
# alike. So the layer is four plain convolutions of 3x3, 3x2, 2x3 and 2x2 taps, one per phase, whose
# outputs interleave: 25 products an output pixel, where one 3x3 convolution with 4 times the
# outputs would spend 36 (a third of them on zeros).
_PHASE_TAPS = ((4, 2, 0), (3, 1))
_PHASE_PADS = ((1, 1), (0, 1))  # zero rows (columns) before and after the input, per phase


class _Interleave(torch.autograd.Function):
    """(B, 4C, H, W) of four phases (row phase a, column phase b at channels (2a + b) C ...) ->
    (B, C, 2H, 2W): ONNX's DepthToSpace in its DCR mode."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        b, c4, h, w = x.shape
        return x.view(b, 2, 2, c4 // 4, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, c4 // 4, 2 * h, 2 * w)

    @staticmethod
    def symbolic(g, x):
        return g.op("DepthToSpace", x, blocksize_i=2, mode_s="DCR")


class _PaddedConv(torch.autograd.Function):
    """`conv2d` with its own zero padding (top, left, bottom, right): one ONNX Conv with those pads."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
        top, left, bottom, right = pads
        return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias)

    @staticmethod
    def symbolic(g, x, weight, bias, pads):
        return g.op("Conv", x, weight, bias, pads_i=[pads[0], pads[1], pads[2], pads[3]])


def _subpixel(deconv: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    if (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding) != ((5, 5), (2, 2), (2, 2), (1, 1)):
        raise ValueError(f"no sub-pixel form for {deconv}")
    phases = []
    for rows, (top, bottom) in zip(_PHASE_TAPS, _PHASE_PADS):
        for cols, (left, right) in zip(_PHASE_TAPS, _PHASE_PADS):
            w = deconv.weight[:, :, list(rows)][:, :, :, list(cols)].transpose(0, 1)  # (out, in, rows, cols)
            phases.append(_PaddedConv.apply(x, w, deconv.bias, (top, left, bottom, right)))
    return _Interleave.apply(torch.cat(phases, 1))


def _gdn(gdn: GDN, x: Tensor) -> Tensor:
    def stored(value: Tensor, reparam) -> Tensor:
        return torch.maximum(value, reparam.lower_bound.bound) ** 2 - reparam.pedestal

    beta = stored(gdn.beta, gdn.beta_reparam)
    gamma = stored(gdn.gamma, gdn.gamma_reparam)[:, :, None, None]
    norm = F.conv2d(x * x, gamma, beta)
    return x * (torch.sqrt(norm) if gdn.inverse else torch.rsqrt(norm))


def run_layers(layers, x: Tensor) -> Tensor:
    """`layers(x)` in the graph's form (what ONNX Runtime will compute), for export and for tests."""
    for layer in layers:
        if isinstance(layer, nn.ConvTranspose2d):
            x = _subpixel(layer, x)
        elif isinstance(layer, GDN):
            x = _gdn(layer, x)
        else:
            x = layer(x)
    return x


class _Analysis(nn.Module):
    """Pixels in [0,1] -> g_a's latent (before the gain)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return run_layers(self.net.g_a, x)


class _HyperAnalysis(_Analysis):
    """Gained latent y -> hyper-latent z."""

    def forward(self, y: Tensor) -> Tensor:
        return run_layers(self.net.h_a, y)


class _Synthesis(_Analysis):
    """Dequantized latent times the inverse gain -> (pixels, not clamped; g_s's last hidden layer)."""

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        features = run_layers(self.net.g_s[:-1], y)
        return run_layers(self.net.g_s[-1:], features), features


class _SuperResolution(_Analysis):
    """g_s's features, the base image, 1 if the base is the original (else 0) -> enlarged (not clamped)."""

    def forward(self, features: Tensor, base: Tensor, original: Tensor) -> Tensor:
        return self.net(features, base, original)


class _DenoisingAnalysis(nn.Module):
    """Noisy pixels and the noise level (1,) -> latent, through g_a with the denoising adapters."""

    def __init__(self, backbone, head):
        super().__init__()
        self.net, self.head = backbone, head

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        adapters = iter(self.head.adapters)
        for layer in self.net.g_a:
            x = run_layers([layer], x)
            if isinstance(layer, GDN):
                x = x + next(adapters)(torch.cat([x, _level_map(sigma, x)], 1))
        return x


class _Refine(_Analysis):
    """Noisy image, decoded image, noise level (1,) -> refined image (not clamped). Sizes must be
    multiples of the refiners' folds (the codec's windows are multiples of 16 pixels)."""

    def forward(self, noisy: Tensor, decoded: Tensor, sigma: Tensor) -> Tensor:
        return self.net.refine(noisy, decoded, sigma)


def _keys(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@dataclass(frozen=True)
class Exported:
    data: bytes  # the ONNX graph
    weights: list[str]  # the names of the weights it takes
    info: dict = field(default_factory=dict)  # what the codec needs to know to run it (window margin, scale)


def _export(module: nn.Module, inputs: dict[str, Tensor], outputs: list[str], sources: dict[str, Path],
            **info) -> Exported:
    """`module` as ONNX with every weight external: the weights under the wrapper's attribute `name`
    come from the safetensors file `sources[name]` and are named by their keys there."""
    import onnx

    dynamic = {name: {2: "height", 3: "width"} for name, t in inputs.items() if t.ndim == 4}
    dynamic.update({name: {2: "height", 3: "width"} for name in outputs})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module.eval(), tuple(inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=list(inputs), output_names=outputs, dynamic_axes=dynamic,
                          do_constant_folding=False)  # folding would bake the weights into the graph
    graph = onnx.load_from_string(buffer.getvalue())
    keys = {name: _keys(path) for name, path in sources.items()}
    renames = {}
    for tensor in graph.graph.initializer:
        name, _, key = tensor.name.partition(".")
        if name not in sources:
            if tensor.ByteSize() > 4096:
                raise ValueError(f"{tensor.name}: a large constant that is not a stored weight")
            continue
        if key not in keys[name]:
            raise ValueError(f"{tensor.name}: no tensor {key!r} in {sources[name].name}")
        renames[tensor.name] = key
        tensor.name = key
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        tensor.external_data.add(key="location", value=sources[name].name)
    for node in graph.graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    return Exported(graph.SerializeToString(), sorted(renames.values()), info)


def export_graphs(model, weights_path: Path) -> dict[str, Exported]:
    """The coding graphs of a GainedHyperprior whose weights are in `weights_path` (safetensors)."""
    x, y = torch.zeros(1, 3, 128, 128), torch.zeros(1, model.config.M, 8, 8)
    net = {"net": weights_path}
    return {
        "analysis": _export(_Analysis(model), {"x": x}, ["y"], net),
        "hyper_analysis": _export(_HyperAnalysis(model), {"y": y}, ["z"], net),
        "synthesis": _export(_Synthesis(model), {"y": y}, ["x", "features"], net),
    }


def export_head_graphs(head, model, head_path: Path, weights_path: Path) -> dict[str, Exported]:
    """The inference graphs of a head (`heads.SuperResolution` or `heads.Denoising`) in `head_path`,
    on the backbone `model` in `weights_path`."""
    features, base, level = torch.zeros(1, head.config.N, 16, 16), torch.zeros(1, 3, 32, 32), torch.zeros(1)
    if head.config.kind == "super-resolution":
        return {"head": _export(_SuperResolution(head), {"features": features, "base": base, "original": level},
                                ["x"], {"net": head_path}, margin=head.margin, scale=SCALE)}
    return {
        "analysis": _export(_DenoisingAnalysis(model, head), {"x": base, "sigma": level}, ["y"],
                            {"net": weights_path, "head": head_path}, margin=head.analysis_margin),
        "refine": _export(_Refine(head), {"noisy": base, "decoded": base, "sigma": level}, ["x"], {"net": head_path},
                          margin=head.refine_margin),
    }


def write_graphs(graphs: dict[str, Exported], weights_path: Path) -> dict[str, dict]:
    """Write each graph beside its weights as `<weights stem>.<graph>.onnx`; the manifest's `graphs` entry."""
    from .files import atomic_write
    from .weights import sha256_file

    entries = {}
    for name, graph in graphs.items():
        path = weights_path.with_name(f"{weights_path.stem}.{name}.onnx")
        atomic_write(path, lambda tmp: tmp.write_bytes(graph.data))
        entries[name] = {"file": path.name, "sha256": sha256_file(path), **graph.info, "weights": graph.weights}
    return entries
