"""Train the bundled flow-matching (rectified-flow) model on scikit-learn's 16×16 digits (``FLOW_MODEL_DIR``).

Model: ``UNet2DModel`` of ``pitsolve.adapters.digits.UNET_CONFIG`` (the
DDPM's architecture, 966,929 parameters) predicting the velocity
``v = ε − x₀`` of the straight interpolation ``x_σ = (1 − σ) x₀ + σ ε``
(Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024, SD3) — Diffusers'
``FlowMatchEulerDiscreteScheduler`` convention: the model is called with
the timestep ``σ · num_train_timesteps`` (1000).  Loss: the conditional
flow-matching objective ‖(ε − x₀) − v_θ(x_σ, 1000 σ)‖² with σ drawn
logit-normally, σ = sigmoid(u), u ~ N(0, 1) (SD3's default), or uniformly
(``--sigma-sampling uniform``).  Optimisation as ``train_digits.py``: AdamW
with a linear warm-up and a cosine decay to 10 % of the peak rate over
``--steps``, gradients clipped to norm 1, an exponential moving average of
the weights (the EMA is what is saved).  Data: the ``"train"`` split (1437
images).  Every random draw comes from generators seeded by ``--seed``,
and the schedule follows steps, so a run is reproducible on one machine
(up to the thread count's effect on float sums).  The bundled weights: the
defaults (1200 steps of batch 64, 1 thread) ran 565 s on 2 shared CPU cores,
final loss 0.147 (mean of the last 100 steps); 360 Euler-28 samples are at
Fréchet d² 6.2 from the test digits (the DDPM's DDIM-28: 5.9).

Written into ``--out``: ``unet/`` (``save_pretrained``, safetensors),
``scheduler_config.json`` of ``FlowMatchEulerDiscreteScheduler(
num_train_timesteps=1000, shift=1.0)`` (so
``FlowMatchEulerDiscreteScheduler.from_pretrained(out)`` loads it),
``loss.csv`` (step, seconds, loss, learning rate), ``loss.png`` and
``training.json``.

    python examples/train_digits_flow.py                 # into the package's FLOW_MODEL_DIR
    python examples/train_digits_flow.py --smoke --out /tmp/flow
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

from pitsolve.adapters.digits import FLOW_MODEL_DIR, UNET_CONFIG, build_unet, load_digits_images  # noqa: E402

NUM_TRAIN_TIMESTEPS = 1000


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=FLOW_MODEL_DIR, help="output folder (default: FLOW_MODEL_DIR)")
    p.add_argument("--steps", type=int, default=1200, help="training steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--sigma-sampling", choices=("logit-normal", "uniform"), default="logit-normal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    # One thread by default: with another process on the 2 shared cores, 2 OpenMP threads stall each other
    # (measured 4.6 s/step with 2 threads against 0.45 s/step with 1, batch 64); 2 help on an idle machine.
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--smoke", action="store_true", help="3 steps of batch 8, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch_size, args.log_every, args.warmup = 3, 8, 1, 1
    return args


def learning_rate(args: argparse.Namespace, step: int) -> float:
    """Linear warm-up over ``args.warmup`` steps, then cosine from ``args.lr`` to ``args.lr / 10`` at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(step / max(args.steps, 1), 1.0)
    return args.lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema ← d·ema + (1 − d)·model with d = min(decay, (1 + step)/(10 + step)) (short warm-up of the average)."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, m in zip(ema.parameters(), model.parameters()):
        e.lerp_(m, 1.0 - d)


def draw_sigmas(n: int, how: str, generator: torch.Generator) -> torch.Tensor:
    """``[n]`` noise levels σ in (0, 1): sigmoid of a standard normal (logit-normal) or uniform."""
    if how == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    return torch.rand(n, generator=generator)


def plot_loss(rows: List[Dict[str, float]], path: Path, window: int) -> None:
    steps = [r["step"] for r in rows]
    loss = torch.tensor([r["loss"] for r in rows])
    smooth = torch.stack([loss[max(0, i - window + 1) : i + 1].mean() for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.5, alpha=0.35, label="loss per step")
    ax.plot(steps, smooth, lw=1.5, label=f"mean of last {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("velocity MSE")
    ax.set_title("Flow matching on 16×16 digits")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run(args: argparse.Namespace) -> Dict[str, object]:
    from diffusers import FlowMatchEulerDiscreteScheduler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images, _ = load_digits_images("train")
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        unet = build_unet()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"UNet2DModel: {n_params:,} parameters; {len(images)} training images; batch {args.batch_size}")

    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)

    rows: List[Dict[str, float]] = []
    order = torch.randperm(len(images), generator=gen)
    cursor, start = 0, time.perf_counter()
    unet.train()
    for step in range(args.steps):
        if cursor + args.batch_size > len(order):
            order, cursor = torch.randperm(len(images), generator=gen), 0
        x0 = images[order[cursor : cursor + args.batch_size]]
        cursor += args.batch_size

        # x_σ = (1 − σ) x₀ + σ ε, target v = dx_σ/dσ = ε − x₀, model timestep 1000 σ (Diffusers' convention).
        sigma = draw_sigmas(len(x0), args.sigma_sampling, gen)
        eps = torch.randn(x0.shape, generator=gen)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * eps
        loss = F.mse_loss(unet(xt, sigma * NUM_TRAIN_TIMESTEPS).sample, eps - x0)

        lr = learning_rate(args, step)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        update_ema(ema, unet, args.ema_decay, step)

        seconds = round(time.perf_counter() - start, 2)
        rows.append(dict(step=step + 1, seconds=seconds, loss=float(f"{loss.item():.5g}"), lr=float(f"{lr:.5g}")))
        if (step + 1) % args.log_every == 0:
            recent = sum(r["loss"] for r in rows[-args.log_every :]) / len(rows[-args.log_every :])
            print(f"step {step + 1:6d}  {seconds:7.1f} s  loss {recent:.4f}  lr {lr:.2e}", flush=True)

    seconds = time.perf_counter() - start
    window = min(100, len(rows))
    final_loss = sum(r["loss"] for r in rows[-window:]) / max(window, 1)
    ema.save_pretrained(out / "unet", safe_serialization=True)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=1.0).save_pretrained(out)
    with open(out / "loss.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", "seconds", "loss", "lr"])
        writer.writeheader()
        writer.writerows(rows)
    plot_loss(rows, out / "loss.png", window=max(1, min(50, len(rows))))
    summary = dict(
        parameters=n_params,
        steps=len(rows),
        seconds=round(seconds, 1),
        final_loss=final_loss,
        final_loss_window=window,
        unet_config={k: list(v) if isinstance(v, tuple) else v for k, v in UNET_CONFIG.items()},
        args={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"},
    )
    (out / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"saved EMA UNet and scheduler config to {out}: {len(rows)} steps in {seconds:.0f} s, "
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
