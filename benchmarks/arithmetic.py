"""Faster arithmetic for g_s on this ONNX Runtime: what int8, float16 and bfloat16 give, in one run.

    python -m benchmarks.arithmetic KODAK_DIR --calibration ../shared/data/photos [--images 24]
        [--qualities 1,2,3,4,5,6,7,8] [--threads 2] [--out arithmetic.json]

g_s is most of a decode (benchmarks.speed), so this asks the runtime the light install ships with
what lower-precision g_s it can run, and at what cost:
- float32: the shipped graph, its weights embedded (the reference);
- int8 (every convolution) and int8 (the two largest layers only): ONNX Runtime's own static
  quantisation (QDQ, per-channel int8 weights, uint8 activations), calibrated on g_s inputs of
  `--calibration` photos (never Kodak) at qualities 2, 5, 8;
- float16 and bfloat16: whether the CPU provider runs a Conv in them at all, and how fast.
For each: g_s alone on one 768x512 latent (median of 5 runs after one, `--threads`), the share of its
kernel time by operator (ONNX Runtime's profiler), and decoding Kodak's files (made once, by the
float32 encoder) through it: PSNR-RGB and the BD-rate against the float32 decoder. Needs onnx (the
train extra).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".avif"}
SIZE = (32, 48)  # latent rows, columns of a 768x512 image


def full_graph(weights, state: dict) -> onnx.ModelProto:  # noqa: F821 (onnx is imported where it runs)
    """The shipped g_s graph with its weights embedded, as ONNX Runtime's quantiser needs it."""
    import onnx
    from onnx import numpy_helper

    data, names = weights.graph("synthesis")
    graph = onnx.load_from_string(data)
    kept = [t for t in graph.graph.initializer if t.name not in names]
    del graph.graph.initializer[:]
    graph.graph.initializer.extend(kept + [numpy_helper.from_array(np.array(state[n]), n) for n in names])
    return graph


def session(path: str, threads: int, profile: str | None = None, folded: str | None = None):
    """A session as `runtime.Graph` opens one; `folded`: also write the graph with its constants folded
    (the weights the convolutions see, which the quantiser needs as initializers)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if folded:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = folded
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_mem_pattern = False
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def calibration_inputs(model, folder: Path, count: int) -> list[np.ndarray]:
    """g_s inputs (y_hat times the inverse gain) of `count` photos, short side 512, at qualities 2, 5, 8."""
    from aecodec import codec

    inputs = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]:
        image = Image.open(path).convert("RGB")
        image.thumbnail((768, 768))
        latent = codec.analyse(image, codec.DEFAULT_TILE, None, b"", b"").latent
        for q in (2, 5, 8):
            gain, inv_gain = model.gains(q)
            inputs.append((np.round(latent * gain) * inv_gain).astype(np.float32)[None])
    return inputs


def quantised(float_path: str, out: str, inputs: list[np.ndarray], nodes: list[str] | None) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            y = next(self.items, None)
            return None if y is None else {"y": y}

    quantize_static(float_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    nodes_to_quantize=nodes)


def largest_convolutions(graph, layers: int) -> list[str]:
    """The Conv nodes of the `layers` transposed layers with the most multiply-adds (each is four
    phase convolutions of 128 channels: the ones fed by the widest inputs at the finest grid, which in
    g_s are the last layers but one)."""
    import onnx

    weights = {t.name: onnx.numpy_helper.to_array(t).shape for t in graph.graph.initializer}
    convs = [n for n in graph.graph.node if n.op_type == "Conv" and len(weights.get(n.input[1], ())) == 4]
    phase = [n for n in convs if weights[n.input[1]][2:] != (1, 1) and weights[n.input[1]][0] > 3]
    return [n.name for n in phase[-4 * layers:]]


def time_graph(sess, y: np.ndarray, repeat: int = 5) -> float:
    sess.run(None, {"y": y})
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        sess.run(None, {"y": y})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def operator_shares(path: str, y: np.ndarray, threads: int) -> dict[str, float]:
    """Percent of g_s's kernel time by operator over 3 runs."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(path, threads, os.path.join(tmp, "profile"))
        for _ in range(3):
            sess.run(None, {"y": y})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"]["op_name"]] += e["dur"]
    total = sum(by.values())
    return {op: round(100 * t / total, 1) for op, t in by.most_common()}


def half_precision(threads: int) -> dict[str, str]:
    """Whether the CPU provider runs a 128-channel 3x3 Conv on 192x128 in float16 / bfloat16, and its
    time against float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((128, 128, 3, 3)) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, 128, 192, 128)).astype(np.float32)
    out = {}
    for name, kind in (("float32", TensorProto.FLOAT), ("float16", TensorProto.FLOAT16), ("bfloat16", TensorProto.BFLOAT16)):
        if kind == TensorProto.BFLOAT16:
            init = helper.make_tensor("w", kind, w.shape, (w.view(np.uint32) >> 16).astype(np.uint16).tobytes(), raw=True)
        else:
            init = numpy_helper.from_array(w.astype(np.float16 if kind == TensorProto.FLOAT16 else np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["y", "w"], ["x"], pads=[1, 1, 1, 1])], "conv",
                                  [helper.make_tensor_value_info("y", kind, list(x.shape))],
                                  [helper.make_tensor_value_info("x", kind, None)], [init])
        with tempfile.NamedTemporaryFile(suffix=".onnx") as f:
            onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), f.name)
            try:
                feed = x.astype(np.float16) if kind == TensorProto.FLOAT16 else x
                out[name] = f"{time_graph(session(f.name, threads), feed) * 1000:.1f} ms"
            except Exception as e:  # noqa: BLE001 (the runtime's refusal is the finding)
                out[name] = f"not run: {str(e).splitlines()[0][:160]}"
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kodak", type=Path)
    ap.add_argument("--calibration", type=Path, required=True, help="photos to calibrate the int8 ranges on (never Kodak)")
    ap.add_argument("--calibration-images", type=int, default=8)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--qualities", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import onnx

    import aecodec
    from aecodec import codec, runtime
    from benchmarks.bdrate import bd_rate
    from benchmarks.speed import machine

    runtime.set_threads(args.threads)
    weights, model = codec.coding_model()
    qualities = [float(q) for q in args.qualities.split(",")]
    result: dict = {"machine": machine(), "threads": args.threads, "weights": weights.model_id.hex(),
                    "half_precision": half_precision(args.threads), "variants": {}}
    print(json.dumps(result["half_precision"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = os.path.join(tmp, "float32.onnx")
        onnx.save(full_graph(weights, model.state), os.path.join(tmp, "shipped.onnx"))
        session(os.path.join(tmp, "shipped.onnx"), args.threads, folded=float_path)
        graph = onnx.load(float_path)
        inputs = calibration_inputs(model, args.calibration, args.calibration_images)
        paths = {"float32": float_path}
        for name, nodes in (("int8, every convolution", None), ("int8, the two largest layers", largest_convolutions(graph, 2))):
            paths[name] = os.path.join(tmp, f"{len(paths)}.onnx")
            quantised(float_path, paths[name], inputs, nodes)
        y = np.asarray(inputs[0][..., : SIZE[0], : SIZE[1]])
        if y.shape[2:] != SIZE:
            raise SystemExit(f"the first calibration photo must give a latent of at least {SIZE}")
        images = sorted(args.kodak.glob("*.png"))[: args.images]
        files = {(p.stem, q): aecodec.compress(Image.open(p).convert("RGB"), q) for p in images for q in qualities}
        originals = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in images}
        for name, path in paths.items():
            model.__dict__["_synthesis"] = runtime.Graph(Path(path).read_bytes(), [], {})  # the decoder's g_s
            points = {}
            for (stem, q), data in files.items():
                points.setdefault(q, []).append((len(data) * 8 / originals[stem][:, :, 0].size,
                                                 psnr(originals[stem], np.asarray(aecodec.decompress(data)))))
            curve = [(statistics.mean(b for b, _ in v), statistics.mean(p for _, p in v)) for _, v in sorted(points.items())]
            result["variants"][name] = {"g_s_ms": round(time_graph(session(path, args.threads), y) * 1000, 1),
                                        "operators_pct": operator_shares(path, y, args.threads), "curve": curve}
            print(name, json.dumps(result["variants"][name]), flush=True)
        del model.__dict__["_synthesis"]
    reference = result["variants"]["float32"]
    for v in result["variants"].values():
        v["bd_rate_vs_float32_pct"] = round(bd_rate(reference["curve"], v["curve"]), 2)
        v["psnr_change_db"] = [round(p - r, 3) for (_, p), (_, r) in zip(v["curve"], reference["curve"])]
        v["speed_vs_float32"] = round(reference["g_s_ms"] / v["g_s_ms"], 2)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
