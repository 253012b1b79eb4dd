"""The torch side of the weights files: the networks built from them, and their writing after training.

Needs the `train` extra (torch, compressai; onnx to write the graphs). Coding never comes here: it
reads the same files through `weights` and `runtime`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from .errors import MissingExtraError, require
from .files import atomic_write
from .weights import MODEL_ID_BYTES, Weights, head_weights, sha256_file


def load_model(weights: Weights, device: str = "cpu"):
    """The torch network (training, benchmarks, tests): built from the file's own config, every
    tensor loaded, the CDF tables included."""
    from safetensors import safe_open

    require("train", "the torch model", "torch", "compressai")

    with warnings.catch_warnings():  # compressai's import scripts functions with a deprecated torch.jit
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        from .model import GainedHyperprior, ModelConfig, load_state

    with safe_open(str(weights.path), framework="pt", device=device) as f:
        config = ModelConfig.from_json(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = GainedHyperprior(config)
    load_state(model, state)
    return model.to(device)


def load_head(kind: str, folder: Path | None = None):
    """The torch head of this kind, in eval mode (training and benchmarks)."""
    from safetensors import safe_open

    require("train", "the torch heads", "torch", "compressai")

    from .heads import HeadConfig, build_head

    weights = head_weights(kind, folder)
    with safe_open(str(weights.path), framework="pt", device="cpu") as f:
        head = build_head(HeadConfig.from_json(f.metadata()["config"]))
        head.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    return head.eval().requires_grad_(False)


def save_weights(model, path: Path, info: dict[str, Any], backbone: tuple[Any, Path] | None = None,
                 graphs: bool = True) -> dict[str, Any]:
    """Write `path` (.safetensors), its ONNX graphs (`export`; none with `graphs=False`, for the
    context model, which codes as an integer network in numpy) and the manifest beside them, all
    atomically. The model's `config` goes in the file's metadata; a codec model needs its tables built
    first (`build_tables`); a head needs its `backbone` (the torch model and its weights file).

    Without the onnx package (a training machine may lack it) the weights and the manifest are still
    written, without graphs: `tools/export_graphs.py` adds them later. Trained weights are never lost
    for want of an exporter."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"config": model.config.to_json()}))
    sha = sha256_file(path)
    entries = {}
    try:
        from .export import export_graphs, export_head_graphs, write_graphs

        if graphs:
            entries = {"graphs": write_graphs(export_graphs(model, path) if backbone is None
                                              else export_head_graphs(model, backbone[0], path, backbone[1]), path)}
    except MissingExtraError as e:
        warnings.warn(f"{path.name}: written without its ONNX graphs ({e}); add them with tools/export_graphs.py",
                      stacklevel=2)
    manifest = {
        "name": path.stem,
        "file": path.name,
        "sha256": sha,
        "model_id": sha[: 2 * MODEL_ID_BYTES],
        "config": json.loads(model.config.to_json()),
        "parameters": sum(p.numel() for p in model.parameters()),
        **entries,
        **info,
    }
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest
