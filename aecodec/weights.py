"""Find and verify (sha256) the shipped weights and their graphs; load them for coding.

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .files import atomic_write

DEFAULT_NAME = "aecodec-mshp-v1"
HEAD_NAMES = {"super-resolution": "aecodec-sr-v1", "denoising": "aecodec-denoise-v3"}
CONTEXT_NAME = "aecodec-context-v1"  # the context model for y (format version 3)
MODEL_ID_BYTES = 8


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


@lru_cache(maxsize=4)
def load_coding_model(name: str = DEFAULT_NAME, folder: Path | None = None):
    """(weights, the verified backbone on ONNX Runtime and numpy), cached per process: no torch."""
    from .runtime import CodingModel

    weights = find_weights(name, folder)
    return weights, CodingModel(weights)


def _on_backbone(name: str, folder: Path | None, trainer: str) -> Weights:
    """Verified weights that build on the backbone, refused if trained on other backbone weights than the installed ones."""
    weights = find_weights(name, folder)
    backbone = find_weights(DEFAULT_NAME, folder)
    if weights.manifest.get("backbone") != backbone.manifest["model_id"]:
        raise WeightsError(f"{weights.path.name} was trained for backbone {weights.manifest.get('backbone')}, "
                           f"not the installed {backbone.manifest['model_id']}: retrain it with tools/{trainer}")
    return weights


def head_weights(kind: str, folder: Path | None = None) -> Weights:
    """The verified head of this kind, for the installed backbone."""
    return _on_backbone(HEAD_NAMES[kind], folder, "train_heads.py")


@lru_cache(maxsize=4)
def load_coding_head(kind: str, folder: Path | None = None):
    """The head of this kind ("super-resolution" or "denoising") on ONNX Runtime, cached per process."""
    from .runtime import HeadModel

    return HeadModel(head_weights(kind, folder), load_coding_model(DEFAULT_NAME, folder)[1])


@lru_cache(maxsize=4)
def load_context(folder: Path | None = None):
    """(weights, the context model as an integer network), refused if it was trained on other backbone
    weights than the installed ones; cached per process."""
    from .runtime import context_model

    weights = _on_backbone(CONTEXT_NAME, folder, "train_context.py")
    return weights, context_model(weights)


def update_manifest(weights: Weights, fields: dict[str, Any]) -> None:
    """Merge measured results (never the sha256 or config) into the manifest beside the weights."""
    if {"sha256", "config", "model_id"} & fields.keys():
        raise ValueError("the identity fields of a manifest are written only by save_weights")
    manifest = {**weights.manifest, **fields}
    path = weights.path.with_suffix(".json")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
