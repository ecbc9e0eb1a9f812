"""``pitsolve sample``: the sequential and the parallel sampler side by side, same noise, one table."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Dict, List

import torch

import pitsolve
from pitsolve import InputValueError

from ..diffusers.options import SolveOptions, resolve
from ..diffusion.rules.registry import sampler
from ..diffusers.sampling import DEFAULT_TOL, build_system
from ..diffusion.init import PosteriorInit
from .. import plots
from . import checks, options, record
from .models import DEFAULT_STEPS, SCHEDULERS, config_dict, load_model, make_scheduler, sampler_help, weights_digest
from .table import format_table

__all__ = ["add_parser", "add_arguments", "run"]

#: The largest seed torch.Generator.manual_seed takes.
MAX_SEED = 2**64 - 1

#: The defaults of the parallel solve of ``pitsolve sample``, all in this one place (docs/cli.md lists them).
#: ``None``: the sampler's measured default (its registry entry, as ``parallel_sample`` resolves it).
DEFAULTS = {
    "window": None,
    "tol": DEFAULT_TOL,
    "stopping": "error",
    "scale_floor": 1.0,
    "preconditioning_steps": None,
    "jacobian": None,
}
SAMPLER = "the sampler's measured default"

DESCRIPTION = """\
Sample a diffusion model twice with the same noise: with the sequential
sampler and with pitsolve's parallel-in-time solver (ParaSolver-style sweeps),
and compare them. Prints wall time, speed-up, iterations, depth (sequential
model-call waves), NFE (model calls), the error of the parallel sample against
the sequential one and, for the bundled digits model, the Fréchet distance to
real digits. Writes the image grids, stats.json and plots to --output.

example:
  pitsolve sample                                   # bundled digits DDPM, DDPM-1000, 16 images
  pitsolve sample --scheduler ddim --steps 50 --intervals 10 --jacobian anderson
  pitsolve sample --model path/to/ddpm-pipeline --num-images 4 --device cuda
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="sample a diffusion model sequentially and in parallel, and compare",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(command=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``pitsolve sample``: the shared vocabulary (:mod:`.options`) at :data:`DEFAULTS`, and its own."""
    p.add_argument("--model", default=None, metavar="PATH",
                   help="a Diffusers DDPMPipeline or UNet2DModel folder (default: the bundled digits DDPM)")
    p.add_argument("--scheduler", choices=list(SCHEDULERS), default="ddpm", help=sampler_help())
    p.add_argument("--steps", type=int, default=None, metavar="T",
                   help="sampling steps (default: the sampler's, listed under --scheduler)")
    options.add(p, "intervals", None, shown="T")
    options.add(p, "window", DEFAULTS["window"], shown=f"{SAMPLER}: auto with its sweep model")
    options.add(p, "tol", DEFAULTS["tol"])
    options.add(p, "stopping", DEFAULTS["stopping"])
    p.add_argument("--scale-floor", type=float, default=DEFAULTS["scale_floor"], metavar="C",
                   help="measure errors relative to max(sigma_t, C); 1 = the data scale, so tol is the "
                        f"final sample's relative error (default: {DEFAULTS['scale_floor']:g})")
    p.add_argument("--preconditioning-steps", "-M", type=int, default=DEFAULTS["preconditioning_steps"], metavar="M",
                   help="sequential model steps before the Eq. 17 rollout; 0 = copy-forward start "
                        f"(default: {SAMPLER})")
    options.add(p, "jacobian", DEFAULTS["jacobian"], shown=f"{SAMPLER}; identity is ParaSolver's update")
    options.add(p, "guard")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (default: 0)")
    p.add_argument("--num-images", type=int, default=16, help="images per run (default: 16)")
    options.add(p, "seed", 0)
    options.add(p, "device", "cpu")
    p.add_argument("--max-batch", type=int, default=None, help="cap on rows per model call (default: none)")
    options.add(p, "output", Path("outputs/sample"))
    options.add(p, "progress")
    return p


def _check(args) -> None:
    for name in ("steps", "intervals", "num_images", "max_batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputValueError(f"--{name.replace('_', '-')}={value} must be >= 1.")
    if args.window is not None:
        options.check_window(args.window)
    if args.preconditioning_steps is not None and args.preconditioning_steps < 0:
        raise InputValueError(f"--preconditioning-steps={args.preconditioning_steps} must be >= 0.")
    checks.tolerance(args.tol)
    if args.scale_floor is not None and not (math.isfinite(args.scale_floor) and args.scale_floor > 0):
        raise InputValueError(f"--scale-floor={args.scale_floor} must be a finite number > 0, e.g. 1.")
    if not 0 <= args.seed <= MAX_SEED:
        raise InputValueError(
            f"--seed={args.seed} is outside 0..{MAX_SEED} (2**64 - 1), the seeds a torch.Generator takes; "
            "pass a seed in that range, e.g. --seed 0."
        )
    if args.eta != 0 and args.scheduler != "ddim":
        raise InputValueError(f"--eta={args.eta} applies to --scheduler ddim only.")
    checks.device(args.device)
    checks.output_folder(args.output, "--output")


def run(args) -> Dict:
    _check(args)
    steps = args.steps or DEFAULT_STEPS[args.scheduler]
    N = args.intervals or steps
    if N > steps:
        raise InputValueError(f"--intervals={N} is larger than --steps={steps}; pass 1 <= N <= {steps}.")
    solve, provenance = _resolved(args, steps)
    if solve.preconditioning_steps > steps:
        raise InputValueError(
            f"--preconditioning-steps={solve.preconditioning_steps} is larger than --steps={steps}; "
            f"pass 0 <= M <= {steps}."
        )
    model_path = None if args.model is None else os.path.abspath(args.model)
    guard = record.guard(args)
    unet, base, label = load_model(args.model)
    model = {"label": label, "path": model_path, "parameters": sum(p.numel() for p in unet.parameters()),
             "weights_sha256": weights_digest(unet), "unet_config": config_dict(unet),
             "scheduler_config": config_dict(base)}
    unet = unet.to(args.device).eval()
    scheduler = make_scheduler(args.scheduler, base)
    window = solve.window
    auto = window == "auto" or isinstance(window, pitsolve.AutoWindow)
    warm_rows = 1 if auto else (window or N)  # the tuner warms up its own widths
    shape = (args.num_images, unet.config.in_channels, *_size(unet.config.sample_size))

    def system():
        return build_system(unet, scheduler, num_inference_steps=steps, generator=torch.Generator().manual_seed(args.seed),
                            shape=shape, intervals=N, eta=args.eta, max_batch=args.max_batch,
                            scale_floor=args.scale_floor)

    print(f"model: {label} ({model['parameters'] / 1e6:.2f} M parameters), "
          f"{args.scheduler}-{steps}, {args.num_images} images, seed {args.seed}, device {args.device}")
    print(f"parallel: N={N} intervals, window={window or N}, tol={args.tol}, M={solve.preconditioning_steps}, "
          f"jacobian={solve.jacobian}{'' if guard else ', no guard'}")
    with torch.no_grad():
        _warm_up(unet, shape, warm_rows * args.num_images, args.device)
        seq_sol = pitsolve.sequential(system(), progress=not args.no_progress)
    seq = seq_sol.y[0]
    frames: List[torch.Tensor] = []

    def keep_frame(it: pitsolve.Iteration) -> None:
        frames.append(it.states[1][-1, 0].detach().cpu())  # x̂_0 carried at the window's last point, image 0

    with torch.no_grad():
        par_sol = pitsolve.solve(system(), solve.jacobian, window=window, tol=args.tol,
                                 init=PosteriorInit(solve.preconditioning_steps), progress=not args.no_progress,
                                 callback=keep_frame, throw=False, guard=guard, stopping=args.stopping)
    par_sol.settings = {**par_sol.settings, **provenance}
    par = par_sol.y[0]
    if par_sol.tuning is not None:
        curve = ", ".join(f"{p}: {1e3 * t:.1f}" for p, t in par_sol.tuning["curve"])
        print(f"window=auto chose {par_sol.tuning['window']} (batch cost [ms] by window: {curve})")
    error = float((par - seq).float().pow(2).mean().sqrt() / seq.float().pow(2).mean().sqrt())
    fd_seq = fd_par = None
    if tuple(shape[1:]) == (1, 16, 16) and args.num_images >= 2:  # a covariance needs two images
        from pitsolve.adapters.digits import frechet_distance

        fd_seq, fd_par = frechet_distance(seq.cpu()), frechet_distance(par.cpu())
    rows = [
        _row("sequential", seq_sol, seq_sol, 0.0, fd_seq),
        _row(f"parallel ({solve.jacobian})", par_sol, seq_sol, error, fd_par),
    ]
    print(format_table(rows, steps))
    if not par_sol.converged:
        print(f"warning: {par_sol.message}")

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "grid": plots.save_image_grid(par.cpu(), out / "grid.png"),
        "grid_sequential": plots.save_image_grid(seq.cpu(), out / "grid_sequential.png"),
        "residuals": plots.residual_heatmap(par_sol, out / "residuals.png", tol=args.tol),
        "x0_strip": plots.x0_strip(frames[:16], out / "x0_strip.png",
                                   title="x̂0 at the window's last point after each iteration (image 0)"),
    }
    settings = {"model": model_path, "scheduler": args.scheduler, "steps": steps, "intervals": N,
                "window": window if not isinstance(window, pitsolve.AutoWindow) else repr(window),
                "tol": args.tol, "stopping": args.stopping, "scale_floor": args.scale_floor,
                "preconditioning_steps": solve.preconditioning_steps, "jacobian": solve.jacobian,
                "guard": record.guard_setting(guard), "eta": args.eta, "num_images": args.num_images,
                "seed": args.seed, "device": args.device, "max_batch": args.max_batch}
    stats = {
        **record.header(record.command("sample", args, add_arguments, model=model_path),
                        device=args.device, seed=args.seed, settings=settings),
        "model": model,
        "rows": rows,
        "window_chosen": par_sol.tuning["window"] if par_sol.tuning else window,
        "solve_settings": par_sol.settings,
        "tuning": None if par_sol.tuning is None else {**par_sol.tuning, "curve_ms": [
            [p, 1e3 * t] for p, t in par_sol.tuning["curve"]]},
        "status": par_sol.status.name,
        "message": par_sol.message,
        "files": {k: str(v) for k, v in files.items()},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(f"images:  {files['grid']} (parallel), {files['grid_sequential']} (sequential)")
    print(f"plots:   {files['residuals']}, {files['x0_strip']}")
    print(f"stats:   {out / 'stats.json'}")
    return stats


def _resolved(args, steps: int):
    """``(SolveOptions, provenance)``: the flags given, the sampler's measured defaults for the others."""
    given = {"jacobian": args.jacobian, "preconditioning_steps": args.preconditioning_steps}
    if args.window is not None:
        given["window"] = options.resolve_window(args.window, args.intervals or steps)
    return resolve(SolveOptions(**{k: v for k, v in given.items() if v is not None}),
                   sampler(args.scheduler).scheduler)


def _warm_up(unet, shape, rows: int, device) -> None:
    """One untimed call at each batch size the runs use, so neither run pays for lazy initialisation."""
    for batch in sorted({shape[0], rows}):
        x = torch.zeros((batch, *shape[1:]), dtype=unet.dtype, device=device)
        unet(x, torch.zeros(batch, dtype=torch.long, device=device))


def _row(name, sol, ref, error, fd) -> Dict:
    return {"method": name, "wall_time": sol.wall_time, "speedup": ref.wall_time / sol.wall_time,
            "iterations": sol.iterations, "depth": sol.depth, "nfe": sol.nfe, "error": error, "frechet": fd,
            "converged": sol.converged, **record.guard_fields(sol)}


def _size(sample_size):
    return (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)

