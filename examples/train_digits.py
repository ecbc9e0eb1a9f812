"""Train the bundled DDPM on scikit-learn's 16×16 digits (``pitsolve.adapters.digits.MODEL_DIR``).

Model: ``UNet2DModel`` of ``pitsolve.adapters.digits.UNET_CONFIG`` (966,929
parameters: channels 32/48/64 at 16/8/4 pixels, self-attention at 8 and 4),
predicting the noise ε.  Scheduler: ``DDPMScheduler(num_train_timesteps=1000)``,
linear betas 1e-4 … 0.02, ``clip_sample=True`` (the data lie in [-1, 1]).
Loss: the simple DDPM objective ‖ε − ε_θ(√ᾱ_t x₀ + √(1−ᾱ_t) ε, t)‖² with t
uniform (Ho et al. 2020, Algorithm 1).  AdamW with a linear warm-up and a
cosine decay to 10 % of the peak rate over the run (measured in wall time
with ``--minutes``, in steps with ``--steps``), gradients clipped to norm 1,
an exponential moving average of the weights (the EMA is what is saved).
Data: the ``"train"`` split (1437 images), optionally shifted by up to
``--max-shift`` pixels.  Every random draw comes from generators seeded by
``--seed``; with ``--minutes`` the number of steps (and the learning rate
at each) depends on the machine's speed, which ``training.json`` records;
``--steps`` makes a run reproducible (the schedule then follows steps).
The bundled weights: ``--minutes 15`` on 2 shared CPU cores, 3123 steps of
batch 64, final loss 0.022 (mean of the last 100 steps).

Written into ``--out``: the ``DDPMPipeline`` folder (``save_pretrained``,
safetensors), ``loss.csv`` (step, seconds, loss, learning rate),
``loss.png`` and ``training.json``.

    python examples/train_digits.py --minutes 15    # into the package's MODEL_DIR
    python examples/train_digits.py --smoke --out /tmp/ddpm
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pitsolve.adapters.digits import MODEL_DIR, UNET_CONFIG, build_unet, load_digits_images  # noqa: E402
from pitsolve.adapters.digits.data import random_shift  # noqa: E402


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=MODEL_DIR, help="output folder (default: the package's MODEL_DIR)")
    p.add_argument("--minutes", type=float, default=10.0, help="wall-time budget of the training loop")
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps (overrides --minutes)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--ema-decay", type=float, default=0.998)
    p.add_argument("--max-shift", type=int, default=0, help="random translation augmentation, pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    # One thread: on 2 cores shared with other processes, 2 OpenMP threads stall each other (measured
    # 0.28 s/step with 1 thread against > 5 s/step with 2 under a load of 3); 2 help on an idle machine.
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--smoke", action="store_true", help="3 steps of batch 8, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.log_every, args.warmup = 3, 8, 1, 1
    return args


def learning_rate(args: argparse.Namespace, step: int, progress: float) -> float:
    """Linear warm-up over ``args.warmup`` steps, then cosine from ``args.lr`` to ``args.lr / 10`` as progress → 1."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema ← d·ema + (1 − d)·model with d = min(decay, (1 + step)/(10 + step)) (short warm-up of the average)."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, m in zip(ema.parameters(), model.parameters()):
        e.lerp_(m, 1.0 - d)


def plot_loss(rows: List[Dict[str, float]], path: Path, window: int) -> None:
    steps = [r["step"] for r in rows]
    loss = torch.tensor([r["loss"] for r in rows])
    smooth = torch.stack([loss[max(0, i - window + 1) : i + 1].mean() for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.5, alpha=0.35, label="loss per step")
    ax.plot(steps, smooth, lw=1.5, label=f"mean of last {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("ε-prediction MSE")
    ax.set_title("DDPM on 16×16 digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run(args: argparse.Namespace) -> Dict[str, object]:
    from diffusers import DDPMPipeline, DDPMScheduler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, _ = load_digits_images("train")
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        unet = build_unet()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"UNet2DModel: {n_params:,} parameters; {len(images)} training images; batch {args.batch_size}")

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    alphas_cumprod = scheduler.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60.0

    rows: List[Dict[str, float]] = []
    order = torch.randperm(len(images), generator=gen)
    cursor, step, start = 0, 0, time.perf_counter()
    unet.train()
    while True:
        elapsed = time.perf_counter() - start
        if args.steps is not None:
            if step >= args.steps:
                break
            progress = step / args.steps
        else:
            if elapsed >= budget:
                break
            progress = elapsed / budget
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        x0 = random_shift(images[order[cursor : cursor + args.batch_size]], args.max_shift, gen)
        cursor += args.batch_size

        # Ho et al. 2020, Algorithm 1: t ~ U{0..T-1}, ε ~ N(0, I), x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε.
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = F.mse_loss(unet(xt, t).sample, eps)

        lr = learning_rate(args, step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        update_ema(ema, unet, args.ema_decay, step)

        step += 1
        seconds = round(time.perf_counter() - start, 2)
        rows.append(dict(step=step, seconds=seconds, loss=float(f"{loss.item():.5g}"), lr=float(f"{lr:.5g}")))
        if step % args.log_every == 0:
            recent = sum(r["loss"] for r in rows[-args.log_every :]) / len(rows[-args.log_every :])
            print(f"step {step:6d}  {rows[-1]['seconds']:7.1f} s  loss {recent:.4f}  lr {lr:.2e}", flush=True)

    seconds = time.perf_counter() - start
    window = min(100, len(rows))
    final_loss = sum(r["loss"] for r in rows[-window:]) / max(window, 1)
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    with open(out / "loss.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "seconds", "loss", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    plot_loss(rows, out / "loss.png", window=max(1, min(50, len(rows))))
    summary = dict(
        parameters=n_params,
        steps=step,
        seconds=round(seconds, 1),
        final_loss=final_loss,
        final_loss_window=window,
        unet_config={k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
    )
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved EMA pipeline to {out}: {step} steps in {seconds:.0f} s, "
          f"loss (mean of last {window}) {final_loss:.4f}")
    return summary


def main(argv: Optional[Sequence[str]] = None):
    """Parse ``argv``, train and save; returns the summary written to disk. Restores torch's thread count."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
