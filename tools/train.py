"""Train the aecodec model on a rate-distortion objective. Read it top to bottom.

One network serves every quality: each sample of a batch draws one of the levels, and the loss is
lambda_level * 255^2 * MSE + bpp. The training photos live on the device as uint8 and every batch is
cut there (tools/photo_bank.py), so a step needs no host work and no host synchronisation: the
non-finite check is read every --log-every steps and rolls back to the last good state. Constant peak
learning rate, a decay over the last --decay-frac of the budget, and an EMA of the weights; the end of
the run validates both and marks the better one for export. On CUDA the first --trial-seconds of each
configuration in --configs (eager, torch.compile, CUDA graphs, larger batches) are timed, as real
training steps, and the fastest one trains; one that fails falls back to the others. Resumable: the
checkpoint is written atomically every --ckpt-every steps and at the end.

--context trains the context model for y (aecodec.context) with the backbone: the rate term is then
the mean of the hyperprior's y bits and the context model's, so the backbone stays fitted to both
entropy models (the hyperprior alone still codes version 2 files); --export-context writes it.

    python tools/train.py --data ../shared/data/photos --threads 2 --time-budget 3600
    python tools/train.py --data DIR --device cuda --batch 32 --time-budget 540 --configs eager,compile,compile-x2
    torchrun --nproc_per_node 8 tools/train.py --data DIR --device cuda            # DDP, one process per GPU
    python tools/train.py --export weights/aecodec-mshp-v2.safetensors            # checkpoint -> weights
    python tools/train.py --export W.safetensors --export-context C.safetensors   # and its context model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

# First: without the train extra, this says which to install, in one line.
from training import add_common_arguments, configure, record_validation, write_checkpoint

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from aecodec.context import ContextConfig, ContextModel  # noqa: E402
from aecodec.model import GainedHyperprior, ModelConfig  # noqa: E402
from aecodec.model import load_state  # noqa: E402
from aecodec.torch_weights import load_model, save_weights  # noqa: E402
from aecodec.weights import find_weights  # noqa: E402
from photo_bank import PhotoBank, ScaleJitter, decode  # noqa: E402
from prepare_data import image_files, is_validation  # noqa: E402

# ----------------------------------------------------------------------------- arguments
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", type=Path, help="folder of training photos, whole or cropped (tools/prepare_data.py)")
p.add_argument("--ckpt", type=Path, default=Path.home() / ".cache/aecodec/train.pt", help="checkpoint to resume from and write")
p.add_argument("--init", type=Path, help="start from these .safetensors weights (fresh optimizers, a new schedule)")
p.add_argument("--export", type=Path, help="write the checkpoint's model (its EMA where that validated better) and exit")
p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
p.add_argument("--batch", type=int, default=8, help="batch of the plain configuration ('-xK' multiplies it)")
p.add_argument("--crop", type=int, default=256)
p.add_argument("--channels", help="N,M of a fresh model (default: the config's 128,192), for small-scale experiments")
p.add_argument("--scale-max", type=float, default=1.0, help="crops cut at a scale log-uniform in [1, this] and shrunk")
p.add_argument("--lambdas", help="comma-separated lambdas of the quality levels (default: the config's; with --init, "
                                 "new levels start from the trained gains, interpolated in log lambda)")
p.add_argument("--decay-frac", type=float, default=0.15, help="the last fraction of the budget, where the lr decays")
p.add_argument("--ema", type=float, default=0.999, help="decay of the weights' EMA (0: none)")
p.add_argument("--steps", type=int, default=0, help="budget in steps of this schedule, over all its runs (0: no limit)")
p.add_argument("--time-budget", type=float, default=0, help="budget in seconds of this schedule, over all its runs (0: none)")
p.add_argument("--stop-after", type=float, default=0, help="end this run after so many seconds, schedule unfinished")
p.add_argument("--configs", default="eager", help="comma-separated configurations to time, then train with the fastest: "
                                                 "eager, compile, cudagraphs, each optionally -xK (K times --batch)")
p.add_argument("--trial-seconds", type=float, default=15, help="seconds each configuration trains while timed")
p.add_argument("--profile", type=Path, help="folder for the configurations' timings and a profile of the chosen one")
p.add_argument("--clip", type=float, default=1.0, help="gradient norm clip")
p.add_argument("--log-every", type=int, default=100, help="steps between logs and non-finite checks (host syncs)")
p.add_argument("--val-size", type=int, default=512, help="held-out photos are validated on their central crop of this size")
p.add_argument("--context", action="store_true", help="train the context model for y with the backbone (a fresh one)")
p.add_argument("--export-context", type=Path, help="with --export: also write the checkpoint's context model here")
add_common_arguments(p, lr=3e-4, warmup=200, val_every=500, ckpt_every=1000)  # --lr: for --batch (sqrt-scaled for larger)
args = p.parse_args()


# ----------------------------------------------------------------------------- export only
def export(ckpt_path: Path, out: Path, info_path: Path | None) -> None:
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    model = GainedHyperprior(ModelConfig.from_json(ckpt["config"]))
    load_state(model, ckpt["model"])
    chosen = ckpt.get("export", "raw")
    if chosen == "ema":
        with torch.no_grad():
            for param, average in zip(trained_parameters(model), ckpt["ema"]):
                param.copy_(average)
    info = {"steps": ckpt["step"], "train_seconds": round(ckpt["elapsed"]), "history": ckpt.get("history", []),
            "exported": chosen, "final_validation": ckpt.get("final_validation", {})}
    if info_path:
        info.update(json.loads(info_path.read_text()))
    model.build_tables()
    manifest = save_weights(model, out, info)
    print(f"wrote {out} ({manifest['sha256'][:16]}, step {ckpt['step']}, {chosen} weights)")
    if args.export_context:
        if "context" not in ckpt:
            sys.exit(f"{ckpt_path} has no context model: train with --context")
        context = ContextModel(ContextConfig.from_json(ckpt["context_config"]))
        context.load_state_dict(ckpt["context"])
        if chosen == "ema":
            with torch.no_grad():
                for param, average in zip(context.parameters(), ckpt["ema"][len(trained_parameters(model)):]):
                    param.copy_(average)
        written = save_weights(context, args.export_context, {"kind": "context", "backbone": manifest["model_id"],
                                                              "steps": ckpt["step"], "trained_with": "the backbone"},
                               graphs=False)
        print(f"wrote {args.export_context} ({written['sha256'][:16]}, for backbone {manifest['model_id']})")


def trained_parameters(model: GainedHyperprior) -> list[torch.Tensor]:
    """The parameters of the rate-distortion loss (all but the quantiles, which the aux loss fits)."""
    return [p for n, p in model.named_parameters() if n != "entropy_bottleneck.quantiles"]


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
configure(device, args.threads)
amp = device.type == "cuda" if args.amp is None else args.amp
master = rank == 0
torch.manual_seed(args.seed + rank)


def log(msg: str) -> None:
    if master:
        print(msg, flush=True)


def sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- data
def centre(a, size: int) -> torch.Tensor:
    """The central size x size crop of an HxWx3 photo, as a (3,size,size) uint8 tensor."""
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return torch.from_numpy(a[top : top + size, left : left + size].copy()).permute(2, 0, 1)


t0 = time.time()
files = image_files(args.data)
train_photos = [a for a in decode([f for f in files if not is_validation(f)]) if min(a.shape[:2]) >= args.crop]
if not train_photos:
    sys.exit(f"no training photos of at least {args.crop}px in {args.data}")
bank = PhotoBank(train_photos, device)
del train_photos
val_photos = [a for a in decode([f for f in files if is_validation(f)]) if min(a.shape[:2]) >= args.val_size]
val_images = [centre(a, args.val_size) for a in val_photos[: args.val_images]]
log(f"data: {len(bank)} training photos ({bank.pixels / 1e6:.1f} Mpx on {device}), {len(val_images)} held out "
    f"({args.val_size}px centres) from {args.data} in {time.time() - t0:.1f} s")
gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + rank)
jitter = ScaleJitter(args.scale_max, args.seed * 1000 + rank)

# ----------------------------------------------------------------------------- model, optimizers
resume = torch.load(args.ckpt, map_location=device, weights_only=False) if args.ckpt.exists() and not args.init else None
step, elapsed, history = 0, 0.0, []
if resume:
    model = GainedHyperprior(ModelConfig.from_json(resume["config"]))
    load_state(model, resume["model"])
    step, elapsed, history = resume["step"], resume["elapsed"], resume["history"]
elif args.init:
    # Continue the learning curve of the weights (their steps and history); the optimizers start afresh.
    init = find_weights(args.init.stem, args.init.parent)
    model = load_model(init)
    step, elapsed, history = init.manifest["steps"], init.manifest["train_seconds"], init.manifest["history"]
    log(f"initialised from {args.init} (step {step})")
else:
    sizes = dict(zip("NM", map(int, args.channels.split(",")))) if args.channels else {}
    model = GainedHyperprior(ModelConfig(**sizes))
if args.lambdas and not resume:
    model = model.with_lambdas(tuple(float(v) for v in args.lambdas.split(",")))
config = model.config
# The schedule (warm-up, budget, decay) counts from a fresh model or from --init, over all resumes.
origin_step, origin_elapsed = resume["origin"] if resume else (step, elapsed)
model = model.to(device).to(memory_format=torch.channels_last)
context = None
if args.context or (resume and "context" in resume):
    context = ContextModel(ContextConfig.from_json(resume["context_config"]) if resume else ContextConfig(M=config.M))
    if resume:
        context.load_state_dict(resume["context"])
    context = context.to(device)
# The context model's parameters come last: the EMA and the export take the backbone's first.
net_params = trained_parameters(model) + (list(context.parameters()) if context else [])
optimizer = torch.optim.Adam(net_params, lr=args.lr, **({"fused": True} if device.type == "cuda" else {}))
aux_optimizer = torch.optim.Adam([model.entropy_bottleneck.quantiles], lr=1e-3)
ema = [p.detach().clone() for p in net_params] if args.ema else []
lambda_of_level = torch.tensor(config.lambdas, device=device)
if resume:
    optimizer.load_state_dict(resume["optimizer"])
    aux_optimizer.load_state_dict(resume["aux_optimizer"])
    if ema and resume["ema"]:
        torch._foreach_copy_(ema, resume["ema"])
    gen.set_state(resume["gen"].cpu())
    jitter.rng.setstate(resume["jitter"])
    torch.set_rng_state(resume["rng"].cpu())
    log(f"resumed from {args.ckpt} at step {step} ({elapsed / 3600:.2f} h trained)")
    del resume
log(f"quality levels: lambdas {config.lambdas}")
if ddp:
    # The quantiles are fitted by the auxiliary loss alone, outside DDP's forward: each rank computes the
    # same aux gradient from the same synchronised parameters, so DDP must leave them out.
    DDP = torch.nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, ["entropy_bottleneck.quantiles"])
    train_model = DDP(model)
    train_context = DDP(context) if context else None
else:
    train_model, train_context = model, context


def progress() -> float:
    """Fraction of this schedule done, by steps or by wall time, whichever is further."""
    parts = [(step - origin_step) / args.steps if args.steps else 0.0,
             (elapsed - origin_elapsed) / args.time_budget if args.time_budget else 0.0]
    return max(parts)


def learning_rate(peak: float) -> float:
    """A linear warm-up over the schedule's first --warmup steps (a resumed run goes on with it), the
    peak, then a cosine decay to --lr-min over the last --decay-frac of the budget."""
    into_decay = (progress() - (1 - args.decay_frac)) / args.decay_frac
    lr = peak if into_decay <= 0 else args.lr_min + 0.5 * (peak - args.lr_min) * (1 + math.cos(math.pi * min(into_decay, 1.0)))
    return lr * min(1.0, (step - origin_step + 1) / args.warmup) if args.warmup else lr


def finished() -> bool:
    over = ((args.steps and step - origin_step >= args.steps)
            or (args.time_budget and elapsed - origin_elapsed >= args.time_budget))
    return bool(over or (args.stop_after and time.time() - run_start >= args.stop_after))


def clone(state):
    """A deep copy of nested dicts and lists of tensors (model and optimizer states), on their device."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: clone(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(clone(v) for v in state)
    return state


def snapshot() -> dict:
    return clone({"model": model.state_dict(), "context": context.state_dict() if context else None,
                  "optimizer": optimizer.state_dict(),
                  "aux_optimizer": aux_optimizer.state_dict(), "ema": ema, "step": step})


def restore(snap: dict) -> None:
    global step
    model.load_state_dict(snap["model"])  # copies into the parameters, so compiled graphs stay valid
    if context:
        context.load_state_dict(snap["context"])
    optimizer.load_state_dict(clone(snap["optimizer"]))
    aux_optimizer.load_state_dict(clone(snap["aux_optimizer"]))
    if ema:
        torch._foreach_copy_(ema, snap["ema"])
    step = snap["step"]


def save_checkpoint() -> None:
    if not master:
        return
    write_checkpoint(args.ckpt, {
        "config": config.to_json(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "aux_optimizer": aux_optimizer.state_dict(), "ema": ema, "step": step, "elapsed": elapsed,
        "origin": (origin_step, origin_elapsed), "history": history, "gen": gen.get_state(),
        "jitter": jitter.rng.getstate(), "rng": torch.get_rng_state(), "args": vars(args), **final,
        **({"context": context.state_dict(), "context_config": context.config.to_json()} if context else {}),
    })


def rd_terms(x: torch.Tensor, out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample bits per pixel and MSE."""
    pixels = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(out[k]).flatten(1).sum(1) for k in ("y_likelihoods", "z_likelihoods"))
    mse = (out["x_hat"].float() - x).square().flatten(1).mean(1)
    return bits / pixels, mse


def context_bpp(x: torch.Tensor, out: dict[str, torch.Tensor], quality: torch.Tensor, net=None) -> torch.Tensor:
    """Per-sample bits per pixel with y coded by the context model (z as with the hyperprior), in float32."""
    with torch.autocast(device.type, enabled=False):
        y_bits = (context if net is None else net)(out["y"].float(), out["scales"].float(), out["means"].float(), quality)["bits"]
    z_bits = -torch.log2(out["z_likelihoods"]).flatten(1).sum(1)
    return (y_bits.flatten(1).sum(1) + z_bits) / (x.shape[2] * x.shape[3])


def rd_loss(x: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training objective of one batch (the part that torch.compile compiles): loss, bpp, MSE."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = train_model(x, levels.float() + 1)
    bpp, mse = rd_terms(x, out)
    rate = bpp if context is None else 0.5 * (bpp + context_bpp(x, out, levels.float() + 1, train_context))
    return (lambda_of_level[levels] * 255**2 * mse + rate).mean(), bpp, mse


@torch.no_grad()
def validate(weights: list[torch.Tensor] | None = None) -> dict:
    """bpp (from the likelihoods, rounded latents), PSNR and the RD loss per level on the held-out photos,
    with the training weights or, swapped in for the time, others of the same shapes (the EMA)."""
    if weights is not None:
        kept = [p.detach().clone() for p in net_params]
        torch._foreach_copy_([p.detach() for p in net_params], weights)
    model.eval()
    result = {"step": step, "hours": round(elapsed / 3600, 3), "device": device.type, "levels": []}
    losses = []
    for level in range(1, config.levels + 1):
        bpp_sum, mse_sum, psnr_sum, context_sum = 0.0, 0.0, 0.0, 0.0
        for img in val_images:
            x = img[None].to(device).float().div_(255).contiguous(memory_format=torch.channels_last)
            quality = torch.full((1,), float(level), device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(x, quality)
            bpp, mse = rd_terms(x, out)
            bpp_sum, mse_sum = bpp_sum + bpp.item(), mse_sum + mse.item()
            context_sum += context_bpp(x, out, quality).item() if context else 0.0
            psnr_sum += 10 * math.log10(1 / max(mse.item(), 1e-10))
        n = max(len(val_images), 1)
        losses.append(config.lambdas[level - 1] * 255**2 * mse_sum / n + bpp_sum / n)
        result["levels"].append({"level": level, "bpp": round(bpp_sum / n, 4), "psnr": round(psnr_sum / n, 3),
                                 **({"bpp_context": round(context_sum / n, 4)} if context else {})})
    result["loss"] = round(sum(losses) / len(losses), 5)
    model.train()
    if weights is not None:
        torch._foreach_copy_([p.detach() for p in net_params], kept)
    return result


# ----------------------------------------------------------------------------- one step
def parse_config(name: str) -> tuple[str, int]:
    mode, _, times = name.partition("-x")
    if mode not in ("eager", "compile", "cudagraphs") or (times and not times.isdigit()):
        sys.exit(f"unknown configuration {name!r}: eager, compile or cudagraphs, optionally -xK")
    return mode, int(times or 1)


def make_loss(mode: str):
    if mode == "eager":
        return rd_loss
    # Static shapes: each batch size gets its own graph rather than one with a symbolic batch.
    return torch.compile(rd_loss, mode="reduce-overhead" if mode == "cudagraphs" else None, dynamic=False)


def train_step(loss_fn, batch: int, peak: float) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimizer step; returns the lr and, on the device, the step's statistics and a non-finite flag.
    Nothing here waits for the device."""
    global step, elapsed
    lr = learning_rate(peak)
    for group in optimizer.param_groups:
        group["lr"] = lr
    x = bank.batch(batch, args.crop, gen, jitter())
    levels = torch.randint(config.levels, (batch,), device=device, generator=gen)
    loss, bpp, mse = loss_fn(x, levels)
    optimizer.zero_grad(set_to_none=True)
    aux_optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(net_params, args.clip)
    optimizer.step()
    aux_loss = model.aux_loss()
    aux_loss.backward()
    aux_optimizer.step()
    if ema:
        # The EMA follows from the start of the schedule at a shorter horizon, reaching --ema after ~10/(1-ema) steps.
        decay = min(args.ema, (1 + step - origin_step) / (10 + step - origin_step))
        torch._foreach_lerp_(ema, [p.detach() for p in net_params], 1 - decay)
    step += 1
    elapsed = time.time() - run_clock
    bad = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
    stats = torch.stack([loss.detach(), bpp.detach().mean(), (10 * torch.log10(1 / mse.detach())).mean(), aux_loss.detach()])
    return lr, stats, bad


def timed_trials(names: list[str]) -> tuple[str, object, int, float, list[dict]]:
    """Train --trial-seconds with each configuration, timing it; return the fastest that worked. A failure
    (compile error, out of memory, non-finite loss) rolls the model back to where the trial began."""
    trials = []
    for name in names:
        mode, times = parse_config(name)
        if mode == "cudagraphs" and device.type != "cuda":
            trials.append({"config": name, "error": "CUDA graphs need CUDA"})
            log(f"trial {name}: skipped, CUDA graphs need CUDA")
            continue
        batch, peak = args.batch * times, args.lr * math.sqrt(times)
        before, loss_fn, trial = snapshot(), make_loss(mode), {"config": name, "batch": batch, "lr": peak}
        try:
            t0 = time.time()
            _, _, bad = train_step(loss_fn, batch, peak)
            sync()
            trial["first_step_s"] = round(time.time() - t0, 2)  # compilation included
            steps, t1 = 0, time.time()
            while time.time() - t0 < args.trial_seconds or steps < 3:
                _, _, flag = train_step(loss_fn, batch, peak)
                bad |= flag
                steps += 1
            sync()
            seconds = time.time() - t1
            if bad.item():
                raise FloatingPointError("non-finite loss")
            trial.update(steps=steps, step_s=round(seconds / steps, 4),
                         mpx_s=float(f"{steps * batch * args.crop**2 * world / seconds / 1e6:.3g}"))
            trial["loss_fn"] = loss_fn
        except Exception as e:  # noqa: BLE001 - any failure of a configuration sends us to the next one
            restore(before)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            trial["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        log(f"trial {name}: " + json.dumps({k: v for k, v in trial.items() if k != "loss_fn"}))
        trials.append(trial)
    working = [t for t in trials if "loss_fn" in t]
    if not working:
        log("every configuration failed: training eager at --batch")
        return "eager", rd_loss, args.batch, args.lr, trials
    best = max(working, key=lambda t: t["mpx_s"])
    return best["config"], best["loss_fn"], best["batch"], best["lr"], trials


def host_syncs(loss_fn, batch: int, peak: float) -> list[str]:
    """The operations of one step that make the host wait for the device (CUDA's sync debug mode)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_step(loss_fn, batch, peak)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sorted({str(w.message).splitlines()[0][:200] for w in caught})


def write_profile(loss_fn, batch: int, peak: float, folder: Path) -> None:
    """Operator times of a few steps of the chosen configuration, to see where the next speed-up is."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(5):
            train_step(loss_fn, batch, peak)
        sync()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    (folder / "profile.txt").write_text(prof.key_averages().table(sort_by=key, row_limit=30))


# ----------------------------------------------------------------------------- training loop
log(f"training on {device} (world {world}, amp {amp}), crops {args.crop} at scales 1..{args.scale_max}, "
    f"{config.levels} levels, from step {step}")
model.train()
run_first_step, run_start = step, time.time()
run_clock = time.time() - elapsed  # elapsed = time.time() - run_clock
final: dict = {}
chosen, loss_fn, batch, peak, trials = timed_trials(args.configs.split(","))
log(f"training with {chosen}: batch {batch}, peak lr {peak:.2e}")
if args.profile and master:
    args.profile.mkdir(parents=True, exist_ok=True)
    write_profile(loss_fn, batch, peak, args.profile)
    cuda = device.type == "cuda"
    (args.profile / "configs.json").write_text(json.dumps(
        {"chosen": chosen, "batch": batch, "lr": peak, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
         "host_syncs_per_step": host_syncs(loss_fn, batch, peak) if cuda else None,
         "trials": [{k: v for k, v in t.items() if k != "loss_fn"} for t in trials]}, indent=2) + "\n")
good, rollbacks, smooth = snapshot(), 0, None
bad = torch.zeros((), dtype=torch.bool, device=device)
while not finished():
    lr, stats, flag = train_step(loss_fn, batch, peak)
    bad |= flag
    smooth = stats if smooth is None else 0.98 * smooth + 0.02 * stats
    if step % args.log_every == 0 or finished():
        if bad.item():  # the one host sync of these steps
            rollbacks += 1
            if rollbacks > 5:
                sys.exit("training diverged: 5 rollbacks; resume from the last checkpoint with a lower --lr")
            restore(good)
            bad.zero_()
            smooth = None
            peak /= 2
            if chosen != "eager":
                chosen, loss_fn = "eager", rd_loss
            log(f"step {step}: non-finite loss since the last check; rolled back, training {chosen} at peak lr {peak:.2e}")
            continue
        good = snapshot()
        avg_loss, avg_bpp, avg_psnr, aux = smooth.tolist()
        per_step = (time.time() - run_start) / (step - run_first_step)
        log(f"step {step:6d} {100 * progress():3.0f}% | {elapsed / 60:6.1f} min | {per_step:5.3f} s/step | lr {lr:.2e} | "
            f"loss {avg_loss:.3f} | bpp {avg_bpp:.3f} | psnr {avg_psnr:.2f} | aux {aux:.1f}")
    if step % args.val_every == 0 and master and val_images:
        record_validation(history, validate(), args.log, log)
    if step % args.ckpt_every == 0:
        save_checkpoint()

if master and val_images:
    # The exported weights are whichever of the trained ones and their EMA does better on held-out photos.
    final["final_validation"] = {"raw": validate(), **({"ema": validate(ema)} if ema else {})}
    final["export"] = min(final["final_validation"], key=lambda k: final["final_validation"][k]["loss"])
    log("final " + json.dumps({k: v["loss"] for k, v in final["final_validation"].items()}) + f": export {final['export']}")
save_checkpoint()
log(f"stopped at step {step} after {elapsed / 3600:.2f} h; checkpoint {args.ckpt}")
if ddp:
    dist.destroy_process_group()
