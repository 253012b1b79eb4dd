"""Find, verify (sha256) and load the shipped weights; write them from training.

A weights file is safetensors (never a pickle) holding the network, the gains and the integer CDF
tables of both entropy models, with the model config in its metadata. Beside it, a JSON manifest
records its sha256, the architecture, the training data and the measured result. The model id, which
every `.aec` file carries, is the first 8 bytes of that sha256: a file names the exact weights that
can decode it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import MissingExtraError, require
from .files import atomic_write

DEFAULT_NAME = "aecodec-mshp-v1"
HEAD_NAMES = {"super-resolution": "aecodec-sr-v1", "denoising": "aecodec-denoise-v3"}
MODEL_ID_BYTES = 8
# Buffers whose size is only known once the tables are built (compressai registers them empty).
_TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


class WeightsError(RuntimeError):
    """The weights are missing, corrupt or do not match their manifest."""


@dataclass(frozen=True)
class Weights:
    """A verified weights file and its manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def model_id(self) -> bytes:
        return bytes.fromhex(self.manifest["sha256"])[:MODEL_ID_BYTES]

    def graph(self, name: str) -> tuple[bytes, list[str]]:
        """One of the ONNX graphs beside the weights (checked against the manifest's sha256), and the
        names of the weights it takes."""
        entry = self.manifest.get("graphs", {}).get(name)
        if entry is None:
            raise WeightsError(f"{self.path.name} has no {name!r} graph: write them with tools/export_graphs.py")
        path = self.path.with_name(entry["file"])
        try:
            data = path.read_bytes()
        except OSError:
            raise WeightsError(f"{path} is missing (set AECODEC_WEIGHTS to the weights' folder)") from None
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise WeightsError(f"{path} is corrupt: its sha256 does not match the manifest")
        return data, entry["weights"]


def weights_dir() -> Path:
    """Where weights are looked up: $AECODEC_WEIGHTS, the wheel's bundled copy, or the source tree's weights/."""
    env = os.environ.get("AECODEC_WEIGHTS")
    if env:
        return Path(env)
    bundled = Path(__file__).resolve().parent / "weights"
    return bundled if bundled.is_dir() else Path(__file__).resolve().parents[1] / "weights"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_weights(name: str = DEFAULT_NAME, folder: Path | None = None) -> Weights:
    """Locate `name`.safetensors and its manifest, and check the file against the manifest's sha256."""
    folder = weights_dir() if folder is None else folder
    path = folder / f"{name}.safetensors"
    manifest_path = folder / f"{name}.json"
    if not path.is_file() or not manifest_path.is_file():
        raise WeightsError(f"weights {name!r} not found in {folder} (set AECODEC_WEIGHTS to their folder)")
    manifest = json.loads(manifest_path.read_text())
    actual = sha256_file(path)
    if actual != manifest.get("sha256"):
        raise WeightsError(f"{path} is corrupt: sha256 {actual[:16]}... does not match its manifest")
    return Weights(path, manifest)


def expected_model_id(name: str = DEFAULT_NAME) -> bytes | None:
    """The model id of the installed weights from their manifest alone (no hashing), or None if absent."""
    try:
        manifest = json.loads((weights_dir() / f"{name}.json").read_text())
        return bytes.fromhex(manifest["sha256"])[:MODEL_ID_BYTES]
    except (OSError, ValueError, KeyError):
        return None


def load_model(weights: Weights, device: str = "cpu"):
    """The torch network (training, benchmarks, tests): built from the file's own config, every
    tensor loaded, the CDF tables included."""
    from safetensors import safe_open

    require("train", "the torch model", "torch", "compressai")

    with warnings.catch_warnings():  # compressai's import scripts functions with a deprecated torch.jit
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
        from .model import GainedHyperprior, ModelConfig

    with safe_open(str(weights.path), framework="pt", device=device) as f:
        config = ModelConfig.from_json(f.metadata()["config"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    model = GainedHyperprior(config)
    load_state(model, state)
    return model.to(device)


def load_state(model, state: dict) -> None:
    """`model.load_state_dict(state)`, sizing the entropy models' table buffers to the state's first
    (a fresh model has them empty; weights and checkpoints made after `build_tables` have them full)."""
    for name, module in model.named_modules():
        for buf in _TABLE_BUFFERS:
            key = f"{name}.{buf}"
            if key in state:
                getattr(module, buf).resize_(state[key].shape)
    model.load_state_dict(state)


@lru_cache(maxsize=4)
def load_coding_model(name: str = DEFAULT_NAME, folder: Path | None = None):
    """(weights, the verified backbone on ONNX Runtime and numpy), cached per process: no torch."""
    from .runtime import CodingModel

    weights = find_weights(name, folder)
    return weights, CodingModel(weights)


def _head_weights(kind: str, folder: Path | None) -> Weights:
    """The verified head of this kind, refused if it was trained on other backbone weights than the installed ones."""
    weights = find_weights(HEAD_NAMES[kind], folder)
    backbone = find_weights(DEFAULT_NAME, folder)
    if weights.manifest.get("backbone") != backbone.manifest["model_id"]:
        raise WeightsError(f"{weights.path.name} was trained for backbone {weights.manifest.get('backbone')}, "
                           f"not the installed {backbone.manifest['model_id']}: retrain it with tools/train_heads.py")
    return weights


@lru_cache(maxsize=4)
def load_coding_head(kind: str, folder: Path | None = None):
    """The head of this kind ("super-resolution" or "denoising") on ONNX Runtime, cached per process."""
    from .runtime import HeadModel

    return HeadModel(_head_weights(kind, folder), load_coding_model(DEFAULT_NAME, folder)[1])


def load_head(kind: str, folder: Path | None = None):
    """The torch head of this kind, in eval mode (training and benchmarks)."""
    from safetensors import safe_open

    require("train", "the torch heads", "torch", "compressai")

    from .heads import HeadConfig, build_head

    weights = _head_weights(kind, folder)
    with safe_open(str(weights.path), framework="pt", device="cpu") as f:
        head = build_head(HeadConfig.from_json(f.metadata()["config"]))
        head.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    return head.eval().requires_grad_(False)


def save_weights(model, path: Path, info: dict[str, Any], backbone: tuple[Any, Path] | None = None) -> dict[str, Any]:
    """Write `path` (.safetensors), its ONNX graphs (`export`) and the manifest beside them, all
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
    try:
        from .export import export_graphs, export_head_graphs, write_graphs

        graphs = {"graphs": write_graphs(export_graphs(model, path) if backbone is None
                                         else export_head_graphs(model, backbone[0], path, backbone[1]), path)}
    except MissingExtraError as e:
        warnings.warn(f"{path.name}: written without its ONNX graphs ({e}); add them with tools/export_graphs.py",
                      stacklevel=2)
        graphs = {}
    manifest = {
        "name": path.stem,
        "file": path.name,
        "sha256": sha,
        "model_id": sha[: 2 * MODEL_ID_BYTES],
        "config": json.loads(model.config.to_json()),
        "parameters": sum(p.numel() for p in model.parameters()),
        **graphs,
        **info,
    }
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    return manifest


def update_manifest(weights: Weights, fields: dict[str, Any]) -> None:
    """Merge measured results (never the sha256 or config) into the manifest beside the weights."""
    if {"sha256", "config", "model_id"} & fields.keys():
        raise ValueError("the identity fields of a manifest are written only by save_weights")
    manifest = {**weights.manifest, **fields}
    path = weights.path.with_suffix(".json")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
