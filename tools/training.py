"""What tools/train.py (the backbone) and tools/train_heads.py (the heads) share: the options both
take, the device set-up, the checkpoint writer and the validation log."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aecodec.errors import MissingExtraError, require  # noqa: E402

try:
    require("train", "training", "torch", "compressai")
except MissingExtraError as e:  # the one line, not a traceback
    sys.exit(str(e))

import torch  # noqa: E402

from aecodec.files import atomic_write  # noqa: E402


def add_common_arguments(p: argparse.ArgumentParser, *, lr: float, warmup: int, val_every: int,
                         ckpt_every: int) -> None:
    """The options of both training scripts, with each script's defaults."""
    p.add_argument("--export-info", type=Path, help="JSON merged into the exported manifest (data, licences, results)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    p.add_argument("--lr-min", type=float, default=1e-5, help="learning rate at the end of the decay")
    p.add_argument("--warmup", type=int, default=warmup, help="linear warm-up steps")
    p.add_argument("--val-every", type=int, default=val_every, help="steps between validations")
    p.add_argument("--val-images", type=int, default=16, help="held-out images validated on")
    p.add_argument("--ckpt-every", type=int, default=ckpt_every, help="steps between checkpoints")
    p.add_argument("--log", type=Path, help="JSON lines of validation results (the learning curve)")
    p.add_argument("--seed", type=int, default=0)


def configure(device: torch.device, threads: int) -> None:
    """CPU threads, and on CUDA the fast kernels (cuDNN autotuning, TF32 matrix products)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if threads:
        torch.set_num_threads(threads)


def write_checkpoint(path: Path, state: dict) -> None:
    """`torch.save(state)` to `path`, atomically: a crash leaves the last complete checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def record_validation(history: list[dict], result: dict, log_path: Path | None, say: Callable[[str], None]) -> None:
    """Keep a validation result, print it, and append it to the JSON-lines log."""
    history.append(result)
    say("val " + json.dumps(result))
    if log_path:
        with open(log_path, "a") as f:
            f.write(json.dumps(result) + "\n")
