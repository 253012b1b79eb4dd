"""Train the context model for y (`aecodec.context`) on the frozen shipped backbone. Read it top to bottom.

The transforms never change: g_a's latent of every training photo is computed once (by the codec
itself, on ONNX Runtime) and cached; a step cuts latent crops, gains them at random qualities in
[1, 8], runs the frozen h_a and h_s for the hyperprior's parameters and trains the context networks on
the bits of the rounded y (the rounding moves with the predicted mean, as in coding). h_a and h_s see
MARGIN latent elements around each crop, as the codec's tiles do, so the hyperprior is the one coding
gives, not one weakened at crop borders (which a context model would learn to repair, and then
misjudge on whole images). The hyperprior alone is measured on the same crops, so every figure is a
saving against today's coder. Validation: whole held-out photos at qualities 1..8.

    python tools/train_context.py --data ../shared/data/photos --cache ~/.cache/aecodec/latents \
        --time-budget 5400 --log context-curve.jsonl
    python tools/train_context.py --export weights/aecodec-context-v1.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

# First: without the train extra, this says which to install, in one line.
from training import add_common_arguments, configure, record_validation, write_checkpoint

import numpy as np  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # compressai's import

from aecodec import codec  # noqa: E402
from aecodec.context import ContextConfig, ContextModel  # noqa: E402
from aecodec.torch_weights import load_model  # noqa: E402
from prepare_data import image_files, is_validation  # noqa: E402

# ----------------------------------------------------------------------------- arguments
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", type=Path, help="folder of training photos (never Kodak)")
p.add_argument("--cache", type=Path, default=Path.home() / ".cache/aecodec/latents", help="g_a's latents, one .npy a photo")
p.add_argument("--ckpt", type=Path, default=Path.home() / ".cache/aecodec/context.pt", help="checkpoint to resume from and write")
p.add_argument("--export", type=Path, help="write the checkpoint's context model to this .safetensors path and exit")
p.add_argument("--groups", default=",".join(map(str, ContextConfig.groups)), help="channels of each group, in coding order")
p.add_argument("--hidden", type=int, default=ContextConfig.hidden)
p.add_argument("--no-quality", action="store_true", help="do not give the networks the coding quality")
p.add_argument("--batch", type=int, default=16)
p.add_argument("--crop", type=int, default=32, help="latent elements a side (16 pixels each)")
p.add_argument("--steps", type=int, default=100_000)
p.add_argument("--time-budget", type=float, default=0, help="seconds of training, then a last validation (0: steps)")
add_common_arguments(p, lr=1e-3, warmup=200, val_every=500, ckpt_every=250)
args = p.parse_args()
configure(torch.device("cpu"), args.threads)
say = lambda s: print(s, flush=True)  # noqa: E731

weights, _ = codec.coding_model()
backbone = load_model(weights).eval().requires_grad_(False)
z_medians = backbone.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)

ckpt = torch.load(args.ckpt, weights_only=False) if args.ckpt.exists() else None
config = (ContextConfig.from_json(ckpt["config"]) if ckpt else
          ContextConfig(M=backbone.config.M, groups=tuple(int(g) for g in args.groups.split(",")),
                        hidden=args.hidden, quality=not args.no_quality))
model = ContextModel(config)
if ckpt:
    model.load_state_dict(ckpt["model"])

if args.export:
    from aecodec.torch_weights import save_weights

    if not ckpt:
        sys.exit(f"no checkpoint at {args.ckpt}")
    info = json.loads(args.export_info.read_text()) if args.export_info else {}
    manifest = save_weights(model, args.export, {"kind": "context", "backbone": weights.manifest["model_id"], "steps": ckpt["step"],
                                                 "wall_time_s": round(ckpt["wall_time_s"]),
                                                 "learning_curve": ckpt["history"], **info}, graphs=False)
    say(f"wrote {args.export} ({manifest['sha256'][:16]})")
    sys.exit(0)


# ----------------------------------------------------------------------------- data: g_a's latents, once
def latent_of(path: Path) -> np.ndarray:
    """g_a's latent (before the gain) of a photo, as the codec computes it, cached as float16."""
    from PIL import Image

    cached = args.cache / f"{path.stem}.{weights.manifest['model_id']}.npy"
    if not cached.exists():
        with Image.open(path) as im:
            latent = codec.analyse(im.convert("RGB"), codec.DEFAULT_TILE, None, b"", b"").latent
        args.cache.mkdir(parents=True, exist_ok=True)
        np.save(cached, latent.astype(np.float16))
    return np.load(cached)


if not args.data:
    sys.exit("--data: the training photos' folder")
paths = image_files(args.data)
t0 = time.time()
train = [torch.from_numpy(latent_of(f)) for f in paths if not is_validation(f)]
val = [torch.from_numpy(latent_of(f)) for f in paths if is_validation(f)][: args.val_images]
say(f"{len(train)} training photos, {len(val)} held out; latents in {time.time() - t0:.0f} s")


def hyperprior(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen h_a and h_s: gained y -> the hyperprior's (scales, means), z rounded as coded."""
    z = backbone.h_a(y)
    z_hat = torch.round(z - z_medians) + z_medians
    scales, means = backbone.h_s(z_hat).chunk(2, 1)
    return scales, means


MARGIN = 8  # latent elements of context for h_a and h_s around a crop (the codec's 2 z elements)


def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent crops of random photos at random positions, with MARGIN around them (where the photo
    has it), and a random quality for each."""
    crops, side = [], args.crop + 2 * MARGIN
    for i in torch.randint(len(train), (args.batch,), generator=gen).tolist():
        lat = train[i]
        top = torch.randint(lat.shape[1] - side + 1, (1,), generator=gen).item()
        left = torch.randint(lat.shape[2] - side + 1, (1,), generator=gen).item()
        crops.append(lat[:, top : top + side, left : left + side])
    quality = 1 + 7 * torch.rand(args.batch, generator=gen)
    return torch.stack(crops).float(), quality


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validate() -> dict:
    """y bits of the held-out photos at qualities 1..8 with the context model and the hyperprior alone."""
    model.eval()
    saving = {}
    for q in range(1, backbone.config.levels + 1):
        ours = base = 0.0
        quality = torch.tensor([float(q)])
        for lat in val:
            gain, _ = backbone.gains(quality)
            y = lat[None].float() * gain
            scales, means = hyperprior(y)
            out = model(y, scales, means, quality)
            ours, base = ours + out["bits"].sum().item(), base + out["hyperprior"].sum().item()
        saving[q] = round(100 * (ours / base - 1), 3)
    model.train()
    return {"step": step, "wall_time_s": round(wall), "y_bits_change_pct": saving,
            "mean_pct": round(sum(saving.values()) / len(saving), 3)}


# ----------------------------------------------------------------------------- training
optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
step, wall, history = 0, 0.0, []
if ckpt:
    optimizer.load_state_dict(ckpt["optimizer"])
    step, wall, history = ckpt["step"], ckpt["wall_time_s"], ckpt["history"]
gen = torch.Generator().manual_seed(args.seed + step)


def learning_rate(step: int) -> float:
    """Linear warm-up, then a cosine decay to lr-min over the steps (or the time budget's share of them)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    done = wall / args.time_budget if args.time_budget else step / args.steps
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(done, 1.0)))


def save() -> None:
    write_checkpoint(args.ckpt, {"config": config.to_json(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "step": step, "wall_time_s": wall, "history": history})


if not history:
    record_validation(history, validate(), args.log, say)
model.train()
start, since = time.time() - wall, []
while step < args.steps and not (args.time_budget and wall >= args.time_budget):
    y, quality = batch(gen)
    with torch.no_grad():
        gain, _ = backbone.gains(quality)
        y = y * gain
        inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
        y, (scales, means) = y[inner], (t[inner] for t in hyperprior(y))
    out = model(y, scales, means, quality)
    loss = out["bits"].mean()
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    since.append(100 * (out["bits"].sum().item() / out["hyperprior"].sum().item() - 1))
    step, wall = step + 1, time.time() - start
    if step % 50 == 0:
        say(f"step {step} {wall:.0f} s  y bits {np.mean(since):+.2f}% against the hyperprior (last 50 batches)")
        since = []
    if step % args.val_every == 0:
        record_validation(history, validate(), args.log, say)
    if step % args.ckpt_every == 0:
        save()
record_validation(history, validate(), args.log, say)
save()
