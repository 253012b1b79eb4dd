"""Train the aecodec model on a rate-distortion objective. Read it top to bottom.

One network serves every quality: each sample of a batch draws one of the 8 levels, and the loss is
lambda_level * 255^2 * MSE + bpp. Resumable: the checkpoint (model, both optimizers, step, wall time,
RNG states) is written atomically every --ckpt-every steps and at the end.

    python tools/train.py --data ../shared/data/train --threads 2 --time-budget 3600
    python tools/train.py --data DIR --device cuda --batch 32 --time-budget 540   # bf16 autocast
    torchrun --nproc_per_node 8 tools/train.py --data DIR --device cuda            # DDP, one process per GPU
    python tools/train.py --export weights/aecodec-mshp-v1.safetensors            # checkpoint -> weights
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aecodec.model import GainedHyperprior, ModelConfig  # noqa: E402
from aecodec.files import atomic_write  # noqa: E402
from aecodec.weights import find_weights, load_model, load_state, save_weights  # noqa: E402
from crops import load_images, random_crops  # noqa: E402
from prepare_data import image_files, is_validation  # noqa: E402

# ----------------------------------------------------------------------------- arguments
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", type=Path, help="folder of training images (e.g. made by tools/prepare_data.py)")
p.add_argument("--ckpt", type=Path, default=Path.home() / ".cache/aecodec/train.pt", help="checkpoint to resume from and write")
p.add_argument("--init", type=Path, help="start from these .safetensors weights (fresh optimizers, step 0)")
p.add_argument("--export", type=Path, help="write the checkpoint's model to this .safetensors path and exit")
p.add_argument("--export-info", type=Path, help="JSON merged into the exported manifest (data, licences, results)")
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--crop", type=int, default=256)
p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
p.add_argument("--lr-min", type=float, default=1e-5, help="learning rate at the end of the cosine decay")
p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
p.add_argument("--steps", type=int, default=0, help="stop at this step, counted over all runs (0: no limit)")
p.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds of training in total (0: no limit)")
p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
p.add_argument("--val-every", type=int, default=500)
p.add_argument("--val-images", type=int, default=16)
p.add_argument("--ckpt-every", type=int, default=100)
p.add_argument("--log", type=Path, help="JSON lines of validation results (the learning curve)")
p.add_argument("--seed", type=int, default=0)
args = p.parse_args()


# ----------------------------------------------------------------------------- export only
def export(ckpt_path: Path, out: Path, info_path: Path | None) -> None:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = GainedHyperprior(ModelConfig.from_json(ckpt["config"]))
    load_state(model, ckpt["model"])
    info = {"steps": ckpt["step"], "train_seconds": round(ckpt["elapsed"]), "history": ckpt.get("history", [])}
    if info_path:
        info.update(json.loads(info_path.read_text()))
    model.build_tables()
    manifest = save_weights(model, out, info)
    print(f"wrote {out} ({manifest['sha256'][:16]}, step {ckpt['step']})")


if args.export:
    export(args.ckpt, args.export, args.export_info)
    sys.exit(0)
if args.data is None:
    p.error("--data is required for training")

# ----------------------------------------------------------------------------- device, DDP
ddp = "WORLD_SIZE" in os.environ
rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
if ddp:
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if args.device == "cuda" else args.device)
if device.type == "cuda":
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
if args.threads:
    torch.set_num_threads(args.threads)
amp = device.type == "cuda" if args.amp is None else args.amp
master = rank == 0
torch.manual_seed(args.seed + rank)


def log(msg: str) -> None:
    if master:
        print(msg, flush=True)


# ----------------------------------------------------------------------------- data
files = image_files(args.data)
train_images = load_images([f for f in files if not is_validation(f)], args.crop)
val_images = load_images([f for f in files if is_validation(f)][: args.val_images], 256)
if not train_images:
    sys.exit(f"no training images of at least {args.crop}px in {args.data}")
log(f"data: {len(train_images)} training images, {len(val_images)} validation images from {args.data}")
gen = torch.Generator().manual_seed(args.seed * 1000 + rank)


# ----------------------------------------------------------------------------- model, optimizers
config = ModelConfig()
model = GainedHyperprior(config)
step, elapsed, history = 0, 0.0, []
if args.init:
    # Continue the learning curve of the weights (their steps and history); the optimizers start afresh.
    init = find_weights(args.init.stem, args.init.parent)
    model = load_model(init)
    step, elapsed, history = init.manifest["steps"], init.manifest["train_seconds"], init.manifest["history"]
    log(f"initialised from {args.init} (step {step})")
model = model.to(device).to(memory_format=torch.channels_last)
aux_params = [model.entropy_bottleneck.quantiles]
net_params = [p for n, p in model.named_parameters() if n != "entropy_bottleneck.quantiles"]
optimizer = torch.optim.Adam(net_params, lr=args.lr)
aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
lambdas = torch.tensor(config.lambdas, device=device)

if args.ckpt.exists() and not args.init:
    ckpt = torch.load(args.ckpt, map_location=device, weights_only=False)
    load_state(model, ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    aux_optimizer.load_state_dict(ckpt["aux_optimizer"])
    step, elapsed, history = ckpt["step"], ckpt["elapsed"], ckpt.get("history", [])
    gen.set_state(ckpt["gen"].cpu())
    torch.set_rng_state(ckpt["rng"].cpu())
    log(f"resumed from {args.ckpt} at step {step} ({elapsed / 3600:.2f} h trained)")
if ddp:
    # The quantiles are fitted by the auxiliary loss alone, outside DDP's forward: each rank computes the
    # same aux gradient from the same synchronised parameters, so DDP must leave them out.
    DDP = torch.nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, ["entropy_bottleneck.quantiles"])
    train_model = DDP(model)
else:
    train_model = model


def learning_rate(progress: float) -> float:
    """Linear warm-up (each process, as its Adam moments may be fresh), then cosine decay to --lr-min."""
    if step - first_step < args.warmup:
        return args.lr * (step - first_step + 1) / args.warmup
    return args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(progress, 1.0)))


def progress() -> float:
    """Fraction of the run done, by steps or by wall time, whichever is further."""
    parts = [step / args.steps if args.steps else 0.0, elapsed / args.time_budget if args.time_budget else 0.0]
    return max(parts)


def save_checkpoint() -> None:
    if not master:
        return
    args.ckpt.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "config": config.to_json(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "aux_optimizer": aux_optimizer.state_dict(), "step": step, "elapsed": elapsed,
        "history": history, "gen": gen.get_state(), "rng": torch.get_rng_state(), "args": vars(args),
    }
    atomic_write(args.ckpt, lambda tmp: torch.save(state, tmp))


def rd_terms(x: torch.Tensor, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample bits per pixel and MSE."""
    pixels = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(out[k]).flatten(1).sum(1) for k in ("y_likelihoods", "z_likelihoods"))
    mse = (out["x_hat"].float() - x).square().flatten(1).mean(1)
    return bits / pixels, mse


@torch.no_grad()
def validate() -> dict:
    """bpp (from the likelihoods, rounded latents) and PSNR per quality level on the held-out photos."""
    model.eval()
    x = torch.stack([img[:, :256, :256] for img in val_images]).to(device).float().div_(255)
    result = {"step": step, "hours": round(elapsed / 3600, 3), "device": device.type, "levels": []}
    for level in range(1, config.levels + 1):
        q = torch.full((len(x),), float(level), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            bpp, mse = rd_terms(x, model(x, q))
        psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()
        result["levels"].append({"level": level, "bpp": round(bpp.mean().item(), 4), "psnr": round(psnr, 3)})
    model.train()
    return result


# ----------------------------------------------------------------------------- training loop
log(f"training on {device} (world {world}, amp {amp}), batch {args.batch}x{args.crop}, from step {step}")
model.train()
first_step, start = step, time.time() - elapsed
smooth, skipped = None, 0
while (not args.steps or step < args.steps) and (not args.time_budget or elapsed < args.time_budget):
    lr = learning_rate(progress())
    for group in optimizer.param_groups:
        group["lr"] = lr
    x = random_crops(train_images, args.batch, args.crop, gen, device)
    levels = torch.randint(config.levels, (args.batch,), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = train_model(x, levels.float() + 1)
    bpp, mse = rd_terms(x, out)
    loss = (lambdas[levels] * 255**2 * mse + bpp).mean()

    optimizer.zero_grad(set_to_none=True)
    aux_optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        skipped += 1
        log(f"step {step}: non-finite loss, batch skipped")
        if skipped > 20:
            sys.exit("training diverged: 20 non-finite losses in a row; resume from the last checkpoint with a lower --lr")
        continue
    skipped = 0
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net_params, args.clip)
    optimizer.step()
    aux_loss = model.aux_loss()
    aux_loss.backward()
    aux_optimizer.step()

    step += 1
    elapsed = time.time() - start
    stats = torch.stack([loss.detach(), bpp.detach().mean(), (10 * torch.log10(1 / mse.detach())).mean()])
    smooth = stats if smooth is None else 0.98 * smooth + 0.02 * stats
    if step % 20 == 0 or step == 1:
        l, b, ps = smooth.tolist()
        log(f"step {step:6d} {100 * progress():3.0f}% | {elapsed / 60:6.1f} min | {elapsed / step:5.2f} s/step | lr {lr:.2e} | "
            f"loss {l:.3f} | bpp {b:.3f} | psnr {ps:.2f} | aux {aux_loss.item():.1f}")
    if step % args.val_every == 0 and master and val_images:
        history.append(validate())
        log("val " + json.dumps(history[-1]))
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(history[-1]) + "\n")
    if step % args.ckpt_every == 0:
        save_checkpoint()

save_checkpoint()
log(f"stopped at step {step} after {elapsed / 3600:.2f} h; checkpoint {args.ckpt}")
if ddp:
    dist.destroy_process_group()
