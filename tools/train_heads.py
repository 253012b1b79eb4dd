"""Train a head (super-resolution or denoising) on the frozen backbone. Read it top to bottom.

The backbone (the shipped codec weights) never changes here: the codec's own rate-distortion is
untouched, and a head is tied to the backbone it was trained on (its manifest names the model id).

super-resolution: a 256x256 crop is reduced to 128x128 (bicubic, antialiased, rounded to 8 bits), coded
    at a random quality (rounded latent, as a file would hold it), and the head learns the crop from the
    decoder's features and a base image: the decoded one (as `decompress --scale 2`) for half the
    batches, the reduced original (as `upscale`) for the other half. Loss = MSE.
denoising: a crop gets Gaussian noise (sigma 0..50) or Poisson-Gaussian noise, rounded to 8 bits; the
    adapters analyse it, the frozen codec codes it at a random quality, and the loss is the codec's own
    rate-distortion against the clean crop, plus the same distortion term for the refiner's output.
    --init HEAD starts from an exported head; with --refiner-only, its adapters stay frozen and the
    refiner trains alone: the codec's part of each step then runs without gradients. --second-channels
    adds a second refiner after the first, which starts as nothing; --second-only trains it alone.

    python tools/train_heads.py --head super-resolution --data ../shared/data/train --threads 1 --time-budget 3000
    python tools/train_heads.py --head denoising --export weights/aecodec-denoise-v3.safetensors
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # compressai's import

from aecodec.heads import HeadConfig, build_head  # noqa: E402
from aecodec.torch_weights import load_model, save_weights  # noqa: E402
from aecodec.weights import HEAD_NAMES, find_weights  # noqa: E402
from crops import load_images, random_crops  # noqa: E402
from prepare_data import image_files, is_validation  # noqa: E402

# ----------------------------------------------------------------------------- arguments
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--head", choices=sorted(HEAD_NAMES), required=True)
p.add_argument("--data", type=Path, help="folder of training images")
p.add_argument("--ckpt", type=Path, help="checkpoint to resume from and write (default ~/.cache/aecodec/head-KIND.pt)")
p.add_argument("--export", type=Path, help="write the checkpoint's head to this .safetensors path and exit")
p.add_argument("--init", type=Path, help="start from this exported head (.safetensors): every tensor whose shape fits")
p.add_argument("--refiner-only", action="store_true", help="denoising: freeze the adapters, train the refiner alone")
p.add_argument("--second-only", action="store_true", help="denoising: train the second refiner alone")
p.add_argument("--refine-channels", type=int, default=HeadConfig.refine_channels, help="denoising refiner: hidden channels")
p.add_argument("--refine-layers", type=int, default=HeadConfig.refine_layers, help="denoising refiner: convolutions")
p.add_argument("--refine-fold", type=int, default=HeadConfig.refine_fold, help="denoising refiner: pixel-unshuffle factor")
p.add_argument("--second-channels", type=int, default=HeadConfig.second_channels,
               help="denoising: hidden channels of a second refiner after the first (0: none)")
p.add_argument("--second-layers", type=int, default=HeadConfig.second_layers, help="denoising second refiner: convolutions")
p.add_argument("--second-fold", type=int, default=HeadConfig.second_fold, help="denoising second refiner: pixel-unshuffle factor")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--crop", type=int, default=0, help="training crop (default: 256 for super-resolution, 128 for denoising)")
p.add_argument("--steps", type=int, default=0, help="stop at this step (0: no limit)")
p.add_argument("--time-budget", type=float, default=0, help="stop after this many seconds in total (0: no limit)")
add_common_arguments(p, lr=5e-4, warmup=100, val_every=250, ckpt_every=50)
args = p.parse_args()
short = "sr" if args.head == "super-resolution" else "denoise"
args.ckpt = args.ckpt or Path.home() / f".cache/aecodec/head-{short}.pt"
args.crop = args.crop or (256 if args.head == "super-resolution" else 128)

backbone = find_weights()
if args.export:
    if not args.ckpt.is_file():
        sys.exit(f"no checkpoint at {args.ckpt}: train first (or give --ckpt)")
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    head = build_head(HeadConfig.from_json(ckpt["config"]))
    head.load_state_dict(ckpt["head"])
    info = {"kind": args.head, "backbone": ckpt["backbone"], "steps": ckpt["step"],
            "train_seconds": round(ckpt["elapsed"]), "history": ckpt["history"]}
    if args.export_info:
        info.update(json.loads(args.export_info.read_text()))
    manifest = save_weights(head, args.export, info, backbone=(load_model(backbone).eval(), backbone.path))
    print(f"wrote {args.export} ({manifest['sha256'][:16]}, step {ckpt['step']})")
    sys.exit(0)
if args.data is None:
    p.error("--data is required for training")
if (args.refiner_only or args.second_only) and args.head != "denoising":
    p.error("--refiner-only and --second-only go with --head denoising")
if args.second_only and not args.second_channels:
    p.error("--second-only needs a second refiner (--second-channels)")
torch.manual_seed(args.seed)
device = torch.device(args.device)
configure(device, args.threads)

# ----------------------------------------------------------------------------- data
files = image_files(args.data)
train_images = load_images([f for f in files if not is_validation(f)], args.crop)
val_images = load_images([f for f in files if is_validation(f)][: args.val_images], 256)
print(f"data: {len(train_images)} training images, {len(val_images)} validation images from {args.data}", flush=True)
gen = torch.Generator().manual_seed(args.seed)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """What a PNG would hold: clipped to [0,1] and rounded to 1/255."""
    return x.clamp(0, 1).mul(255).round().div(255)


def reduce(hr: torch.Tensor) -> torch.Tensor:
    """The low-resolution input of super-resolution: bicubic, antialiased (as Pillow's), 8 bits."""
    return to_8bit(F.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False))


def add_noise(clean: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise of sigma 0..50 (8-bit units), or for a quarter of the samples Poisson-Gaussian noise
    (variance a*x + b); 8-bit result. Returns (noisy, the effective sigma of each sample)."""
    b, dev = clean.shape[0], clean.device  # drawn on the CPU from the seeded generator, as on any device
    sigma = torch.rand(b, generator=gen).to(dev) * 50 / 255
    shot = (torch.rand(b, generator=gen) * 0.025 * (torch.rand(b, generator=gen) < 0.25)).to(dev)
    read = torch.where(shot > 0, sigma / 2, sigma)
    variance = shot.view(-1, 1, 1, 1) * clean + read.view(-1, 1, 1, 1) ** 2
    noise = torch.randn(clean.shape, generator=gen).to(dev) * variance.sqrt()
    return to_8bit(clean + noise), variance.flatten(1).mean(1).sqrt() * 255


def random_quality(b: int, gen: torch.Generator) -> torch.Tensor:
    """Qualities in [1, 8], denser near 8 (density grows linearly): the heads matter most at high rates."""
    return (1 + 7 * torch.rand(b, generator=gen).sqrt()).to(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / (a.clamp(0, 1) - b).square().flatten(1).mean(1).clamp_min(1e-10))).mean().item()


def psnr_y(a: torch.Tensor, b: torch.Tensor, border: int) -> float:
    """PSNR of BT.601 luma (16..235), `border` pixels cropped: how super-resolution is usually scored."""
    w = torch.tensor([65.481, 128.553, 24.966], device=a.device).view(1, 3, 1, 1) / 255

    def luma(x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) * w).sum(1)[:, border:-border, border:-border] + 16 / 255

    return psnr(luma(a)[:, None], luma(b)[:, None])


# ----------------------------------------------------------------------------- backbone, head, optimizer
model = load_model(backbone).requires_grad_(False).to(device)
# Training mode only matters to the entropy models: noisy latents for the rate the denoiser pays.
model.train(args.head == "denoising")
if args.head == "denoising":
    config = HeadConfig(args.head, refine_channels=args.refine_channels, refine_layers=args.refine_layers,
                        refine_fold=args.refine_fold, second_channels=args.second_channels,
                        second_layers=args.second_layers, second_fold=args.second_fold)
else:
    config = HeadConfig(args.head)
ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False) if args.ckpt.exists() else None
if ckpt and HeadConfig.from_json(ckpt["config"]) != config:
    sys.exit(f"{args.ckpt} holds a head of another shape ({ckpt['config']}): give its options, or another --ckpt")
head = build_head(config)
if args.init and not ckpt:
    from safetensors.torch import load_file

    own = head.state_dict()
    fits = {k: v for k, v in load_file(args.init).items() if k in own and own[k].shape == v.shape}
    head.load_state_dict(fits, strict=False)
    fresh = sorted({k.rsplit(".", 1)[0] for k in own if k not in fits})
    print(f"init from {args.init}: {len(fits)} of {len(own)} tensors" + (f"; fresh: {', '.join(fresh)}" if fresh else ""))
head.to(device)
if args.refiner_only or args.second_only:
    head.adapters.requires_grad_(False)
if args.second_only:
    head.refiner.requires_grad_(False)
optimizer = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=args.lr)
lambdas = torch.tensor(model.config.lambdas, device=device)
step, elapsed, history = 0, 0.0, []
if ckpt:
    if ckpt["backbone"] != backbone.manifest["model_id"]:
        sys.exit(f"{args.ckpt} was trained on backbone {ckpt['backbone']}, not {backbone.manifest['model_id']}")
    head.load_state_dict(ckpt["head"])
    optimizer.load_state_dict(ckpt["optimizer"])
    step, elapsed, history = ckpt["step"], ckpt["elapsed"], ckpt["history"]
    gen.set_state(ckpt["gen"])
    torch.set_rng_state(ckpt["rng"])
    print(f"resumed from {args.ckpt} at step {step}", flush=True)
print(f"{args.head} head: {sum(p.numel() for p in head.parameters())} parameters; backbone frozen", flush=True)


def lambda_of(q: torch.Tensor) -> torch.Tensor:
    """The MSE lambda of real qualities: log-linear between the levels, as the gains interpolate."""
    lo = (q - 1).floor().long().clamp(max=len(lambdas) - 2)
    frac = q - 1 - lo
    return torch.exp((1 - frac) * lambdas[lo].log() + frac * lambdas[lo + 1].log())


def loss_of(x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """One batch of clean crops at qualities q -> (loss, figures for the progress line)."""
    if args.head == "super-resolution":
        small = reduce(x)
        with torch.no_grad():
            out = model(small, q)
        original = bool(torch.rand(1, generator=gen) < 0.5)
        sr = head(out["features"], small if original else to_8bit(out["x_hat"]), original)
        mse = (sr - x).square().mean()
        return mse, {"psnr": 10 * math.log10(1 / mse.item())}
    noisy, sigma = add_noise(x, gen)
    with torch.set_grad_enabled(not (args.refiner_only or args.second_only)):
        out = model.rate_distortion(head.analyse(model.g_a, noisy, sigma), q)
    x_hat = out["x_hat"]
    decoded = x_hat + (to_8bit(x_hat) - x_hat).detach()  # the refiner sees the 8-bit decoded image
    refined = head.refine(noisy, decoded, sigma)
    bits = sum(-torch.log2(out[k]).flatten(1).sum(1) for k in ("y_likelihoods", "z_likelihoods"))
    bpp = bits / (x.shape[2] * x.shape[3])
    mse_base = (x_hat - x).square().flatten(1).mean(1)
    mse_refined = (refined - x).square().flatten(1).mean(1)
    loss = (lambda_of(q) * 255**2 * (mse_base + mse_refined) + bpp).mean()
    return loss, {"bpp": bpp.mean().item(), "psnr": 10 * math.log10(1 / mse_base.mean().item()),
                  "refined": 10 * math.log10(1 / mse_refined.mean().item())}


@torch.no_grad()
def validate() -> dict:
    """Held-out photos at quality 8: super-resolution against bicubic (PSNR-Y); denoising at sigma 25."""
    head.eval()
    model.eval()
    x = torch.stack([img[:, :256, :256] for img in val_images]).to(device).float().div_(255)
    q = torch.full((len(x),), 8.0, device=device)
    result = {"step": step, "hours": round(elapsed / 3600, 3)}
    if args.head == "super-resolution":
        small = reduce(x)
        out = model(small, q)
        decoded = head(out["features"], to_8bit(out["x_hat"]), False)
        upscaled = head(out["features"], small, True)
        bicubic = F.interpolate(small, scale_factor=2, mode="bicubic", align_corners=False)
        result.update(decoded_y=round(psnr_y(decoded, x, 2), 3), upscaled_y=round(psnr_y(upscaled, x, 2), 3),
                      bicubic_y=round(psnr_y(bicubic, x, 2), 3))
    else:
        g = torch.Generator().manual_seed(1)
        noisy = to_8bit(x + torch.randn(x.shape, generator=g).to(device) * 25 / 255)
        sigma = torch.full((len(x),), 25.0, device=device)
        out = model.rate_distortion(head.analyse(model.g_a, noisy, sigma), q)
        x_hat = to_8bit(out["x_hat"])
        refined = head.refine(noisy, x_hat, sigma)
        result.update(noisy=round(psnr(noisy, x), 3), decoded=round(psnr(x_hat, x), 3), refined=round(psnr(refined, x), 3))
    head.train()
    model.train(args.head == "denoising")
    return result


def save_checkpoint() -> None:
    write_checkpoint(args.ckpt, {
        "config": config.to_json(), "backbone": backbone.manifest["model_id"], "head": head.state_dict(),
        "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed, "history": history,
        "gen": gen.get_state(), "rng": torch.get_rng_state(), "args": {k: str(v) for k, v in vars(args).items()}})


# ----------------------------------------------------------------------------- training loop
first_step, start = step, time.time() - elapsed
smooth: dict[str, float] = {}
while (not args.steps or step < args.steps) and (not args.time_budget or elapsed < args.time_budget):
    progress = max(step / args.steps if args.steps else 0.0, elapsed / args.time_budget if args.time_budget else 0.0)
    warm = min(1.0, (step - first_step + 1) / args.warmup)
    lr = warm * (args.lr_min + 0.5 * (args.lr - args.lr_min) * (1 + math.cos(math.pi * min(progress, 1.0))))
    for group in optimizer.param_groups:
        group["lr"] = lr
    x = random_crops(train_images, args.batch, args.crop, gen, device)
    loss, figures = loss_of(x, random_quality(args.batch, gen))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], 1.0)
    optimizer.step()

    step += 1
    elapsed = time.time() - start
    figures["loss"] = loss.item()
    smooth = {k: v if k not in smooth else 0.98 * smooth[k] + 0.02 * v for k, v in figures.items()}
    if step % 20 == 0 or step == 1:
        line = " | ".join(f"{k} {v:.3f}" for k, v in smooth.items())
        print(f"step {step:6d} {100 * progress:3.0f}% | {elapsed / 60:6.1f} min | "
              f"{elapsed / step:5.2f} s/step | lr {lr:.2e} | {line}", flush=True)
    if step % args.val_every == 0 and val_images:
        record_validation(history, validate(), args.log, lambda line: print(line, flush=True))
    if step % args.ckpt_every == 0:
        save_checkpoint()

save_checkpoint()
print(f"stopped at step {step} after {elapsed / 3600:.2f} h; checkpoint {args.ckpt}", flush=True)
