"""Train the context model for y (`aecodec.context`) on the frozen shipped backbone. Read it top to bottom.

The transforms never change: g_a's latent of every training photo is computed once (by the codec
itself, on ONNX Runtime) and cached; a step cuts latent crops, gains them at random qualities in
[1, 8], runs the frozen h_a and h_s for the hyperprior's parameters and trains the context networks on
the bits of the rounded y (the rounding moves with the predicted mean, as in coding). h_a and h_s see
MARGIN latent elements around each crop, as the codec's tiles do, so the hyperprior is the one coding
gives, not one weakened at crop borders (which a context model would learn to repair, and then
misjudge on whole images). The hyperprior alone is measured on the same crops, so every figure is a
saving against today's coder. Validation: whole held-out photos at qualities 1..8.

`--hyper` also trains h_a, h_s and the factorized prior of z with the context model (an ablation:
the codec has no place yet for a retrained h_s, so such a checkpoint is not exported); the saving is
then of y and z bits together against the frozen hyperprior's.

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
from aecodec.context import SCALE_MIN, STEP, ContextConfig, ContextModel, bits, table_index  # noqa: E402
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
p.add_argument("--hyper", action="store_true", help="train h_a, h_s and z's prior too (an ablation: not exported)")
p.add_argument("--init", type=Path, help="a new run starts the context model from these weights (a .safetensors of --export)")
p.add_argument("--hyper-lr", type=float, default=0.1, help="--hyper: their learning rate, a fraction of --lr")
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
elif args.init:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(args.init)))

if args.export:
    from aecodec.torch_weights import save_weights

    if not ckpt:
        sys.exit(f"no checkpoint at {args.ckpt}")
    if "hyper" in ckpt:
        sys.exit(f"{args.ckpt} retrained h_a and h_s (--hyper): the codec cannot code with them, so it is not exported")
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


MARGIN = 8  # latent elements of context for h_a and h_s around a crop (the codec's 2 z elements)
Z_MARGIN = MARGIN // 4  # h_a halves twice


def hyperprior(y: torch.Tensor, z_margin: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h_a and h_s: gained y -> the hyperprior's (scales, means) and each sample's z bits (without
    z_margin elements at each border). z is rounded as coded, the gradient passed straight through."""
    z = backbone.h_a(y)
    z_hat = z + (torch.round(z - z_medians) + z_medians - z).detach()
    scales, means = backbone.h_s(z_hat).chunk(2, 1)
    if z_margin:
        z_hat = z_hat[..., z_margin:-z_margin, z_margin:-z_margin]
    prior = backbone.entropy_bottleneck
    likelihood, _, _ = prior._likelihood(z_hat.transpose(0, 1).reshape(z_hat.shape[1], 1, -1))
    z_bits = -torch.log2(prior.likelihood_lower_bound(likelihood)).reshape(z_hat.shape[1], z_hat.shape[0], -1)
    return scales, means, z_bits.sum((0, 2))


def y_bits(y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Bits of every element of y under the context model. With --hyper the table index passes its
    gradient straight through to log(scale), so that h_s learns its scales too."""
    if not hyper:
        return model(y, scales, means, quality)["bits"]
    index0 = table_index(scales)
    soft = torch.log(scales.clamp(min=SCALE_MIN) / SCALE_MIN) / STEP
    index0 = soft + (index0 - soft).detach()
    shift, mean = model.parameters_of(y, index0, means, quality)
    return bits(y, index0 + shift, mean)


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
def held_out_bits(context: bool) -> dict[int, tuple[float, float]]:
    """y and z bits of the held-out photos at each quality 1..8, with the context model or the hyperprior alone."""
    totals = {}
    for q in range(1, backbone.config.levels + 1):
        totals[q] = (0.0, 0.0)
        quality = torch.tensor([float(q)])
        for lat in val:
            gain, _ = backbone.gains(quality)
            y = lat[None].float() * gain
            scales, means, z_bits = hyperprior(y)
            out = model(y, scales, means, quality)
            y_sum = (out["bits"] if context else out["hyperprior"]).sum().item()
            totals[q] = (totals[q][0] + y_sum, totals[q][1] + z_bits.item())
    return totals


baseline = held_out_bits(context=False)  # today's coder, before --hyper changes anything


def validate() -> dict:
    """The held-out saving at each quality: of y bits, and of y and z bits together."""
    model.eval()
    ours = held_out_bits(context=True)
    model.train()
    y_change = {q: round(100 * (ours[q][0] / baseline[q][0] - 1), 3) for q in ours}
    yz_change = {q: round(100 * (sum(ours[q]) / sum(baseline[q]) - 1), 3) for q in ours}
    return {"step": step, "wall_time_s": round(wall), "y_bits_change_pct": y_change,
            "mean_pct": round(sum(y_change.values()) / len(y_change), 3), "yz_bits_change_pct": yz_change,
            "yz_mean_pct": round(sum(yz_change.values()) / len(yz_change), 3)}


# ----------------------------------------------------------------------------- training
hyper_nets = torch.nn.ModuleDict({"h_a": backbone.h_a, "h_s": backbone.h_s, "z_prior": backbone.entropy_bottleneck})
hyper = args.hyper or bool(ckpt and "hyper" in ckpt)
groups = [{"params": list(model.parameters()), "scale": 1.0}]
if hyper:
    if ckpt:
        hyper_nets.load_state_dict(ckpt["hyper"])
    trained = [p for name, p in hyper_nets.named_parameters() if not name.endswith("quantiles")]  # z's medians stay
    groups.append({"params": [p.requires_grad_(True) for p in trained], "scale": args.hyper_lr})
optimizer = torch.optim.Adam(groups, lr=args.lr)
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
    state = {"config": config.to_json(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "step": step, "wall_time_s": wall, "history": history}
    write_checkpoint(args.ckpt, {**state, "hyper": hyper_nets.state_dict()} if hyper else state)


if not history:
    record_validation(history, validate(), args.log, say)
model.train()
start, since = time.time() - wall, []
while step < args.steps and not (args.time_budget and wall >= args.time_budget):
    y, quality = batch(gen)
    with torch.no_grad():
        gain, _ = backbone.gains(quality)
        y = y * gain
    with torch.set_grad_enabled(hyper):
        scales, means, z_bits = hyperprior(y, Z_MARGIN)
    inner = (slice(None), slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    y, scales, means = y[inner], scales[inner], means[inner]
    ours = y_bits(y, scales, means, quality)
    loss = (ours.sum() + z_bits.sum() if hyper else ours.sum()) / ours.numel()  # z's bits count only if they can move
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step) * group["scale"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        since.append(100 * (ours.sum().item() / bits(y, table_index(scales), means).sum().item() - 1))
    step, wall = step + 1, time.time() - start
    if step % 50 == 0:
        say(f"step {step} {wall:.0f} s  y bits {np.mean(since):+.2f}% against this step's hyperprior (last 50 batches)")
        since = []
    if step % args.val_every == 0:
        record_validation(history, validate(), args.log, say)
    if step % args.ckpt_every == 0:
        save()
record_validation(history, validate(), args.log, say)
save()
