"""Which Diffusers schedulers pitsolve serves, checked against Diffusers' own loop; writes docs/schedulers.md.

``python -m pitsolve.adapters.diffusers.support [--output docs/schedulers.md]``

Every ``*Scheduler`` class that ``diffusers.schedulers`` ships is probed:
a class a registered rule serves is a "hand-written rule"; any other is
built through the generic bridge and its sequential sample compared with
Diffusers' own loop (``set_timesteps``; for ``t``: ``scale_model_input``,
model, ``step``) on :class:`TinyDenoiser` with the same generator.  A class
is a "generic bridge" when the two agree to :data:`EXACT` (relative, float32)
and "not supported" with the reason otherwise.  The statuses are computed,
not written by hand; ``tests/test_scheduler_matrix.py`` runs the same
:func:`compare_with_diffusers` over prediction types and spacings.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from pitsolve import InputValueError

from ..diffusion.rules.registry import REGISTRY, rule_class_for
from .sampling import sequential_sample
from .schedulers import rule_from_scheduler

__all__ = [
    "TinyDenoiser", "scheduler_classes", "compare_with_diffusers", "diffusers_loop", "probe", "support_table", "main",
    "EXACT", "SHAPE", "STEPS",
]

#: Relative agreement with Diffusers' own loop that counts as "the same sampler" (float32).
EXACT = 1e-6
#: The probe's sample shape ``[images, C, H, W]`` and number of inference steps (5 divides 1000, so the
#: hand-written DDIM/DDPM rules, which follow the schedule rather than Diffusers' fixed stride, agree too).
SHAPE = (2, 2, 4, 4)
STEPS = 5


class TinyDenoiser(torch.nn.Module):
    r"""A closed-form stand-in for a UNet: ``out = tanh(0.8 x − 0.3 mean_c(x)) · (0.5 + t/2000)``.

    Smooth, bounded, nonlinear and coupled across channels; it accepts integer
    and float timesteps (Karras σ grids, flow matching), a 0-d ``t`` (Diffusers'
    loop) or one per row (pitsolve's batched calls), and computes in float32
    either way, so both loops run the same arithmetic.
    """

    def forward(self, sample: torch.Tensor, timestep, return_dict: bool = True):
        t = torch.as_tensor(timestep).to(torch.float32).reshape(-1, *([1] * (sample.ndim - 1)))
        out = torch.tanh(0.8 * sample - 0.3 * sample.mean(dim=1, keepdim=True)) * (0.5 + t / 2000.0)
        return _Output(out) if return_dict else (out,)


class _Output:
    def __init__(self, sample):
        self.sample = sample


def scheduler_classes() -> List[str]:
    """Every ``*Scheduler`` class (a ``SchedulerMixin``) that ``diffusers.schedulers`` exports, sorted."""
    import diffusers

    names = []
    for name in dir(diffusers.schedulers):
        if not name.endswith("Scheduler"):
            continue
        try:
            cls = getattr(diffusers, name)
        except (AttributeError, ImportError):  # an optional dependency missing (e.g. flax, torchsde)
            continue
        if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin):
            names.append(name)
    return sorted(set(names))


def _init_params(name: str):
    import diffusers

    return inspect.signature(getattr(diffusers, name).__init__).parameters


def prediction_types(name: str) -> Tuple[str, ...]:
    """The prediction types to try: ε, v and sample where the class takes a ``prediction_type``, else its default."""
    return ("epsilon", "v_prediction", "sample") if "prediction_type" in _init_params(name) else (None,)


def timestep_spacings(name: str) -> Tuple[Optional[str], ...]:
    """The spacings to try: leading, trailing, linspace where the class takes a ``timestep_spacing``."""
    return ("leading", "trailing", "linspace") if "timestep_spacing" in _init_params(name) else (None,)


def make_scheduler(name: str, prediction_type: Optional[str] = None, spacing: Optional[str] = None, **config):
    """``diffusers.<name>`` with the given prediction type and spacing (``None``: the class default)."""
    import diffusers

    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    if spacing is not None:
        config["timestep_spacing"] = spacing
    return getattr(diffusers, name)(**config)


def diffusers_loop(scheduler, model, latents: torch.Tensor, generator: torch.Generator, steps: int = STEPS):
    """Diffusers' own sampling loop on a fresh copy of ``scheduler`` (as its pipelines run it)."""
    s = type(scheduler).from_config({k: v for k, v in scheduler.config.items() if k != "_use_default_values"})
    s.set_timesteps(steps)
    x = latents * getattr(s, "init_noise_sigma", 1.0)
    takes_generator = "generator" in inspect.signature(s.step).parameters
    smi = getattr(type(s), "scale_model_input", None)
    for t in s.timesteps:
        model_input = s.scale_model_input(x, t) if smi is not None else x
        out = model(model_input, t).sample
        x = s.step(out, t, x, **({"generator": generator} if takes_generator else {})).prev_sample
    return x


def compare_with_diffusers(scheduler, *, seed: int = 0, steps: int = STEPS, shape=SHAPE) -> Dict:
    """The sequential sampler against Diffusers' loop, same generator: ``{"rule", "error", "sample", "diverges"}``.

    Raises what :func:`rule_from_scheduler` raises for an unsupported scheduler
    (before any model call).  The latents are drawn first from the generator,
    then each step's noise: the order of Diffusers' pipelines.
    """
    model = TinyDenoiser()
    rule = rule_from_scheduler(scheduler, steps)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=g)
    ref = diffusers_loop(scheduler, model, latents, g, steps)
    if not bool(torch.isfinite(ref).all()):  # Diffusers' own loop diverges (e.g. inversion with x̂_0 prediction)
        return {"rule": rule, "error": float("nan"), "sample": None, "latents": latents, "diverges": True}
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=g)
    ours, _ = sequential_sample(model, scheduler, num_inference_steps=steps, latents=latents, generator=g)
    error = float((ours - ref).norm() / ref.norm().clamp_min(1e-30))
    return {"rule": rule, "error": error, "sample": ours, "latents": latents, "diverges": False}


def probe(name: str) -> Tuple[str, str]:
    """``(status, note)`` of the Diffusers class ``name`` at its default config."""
    import diffusers

    rule_cls = rule_class_for(name)
    if rule_cls is not None:
        return f"hand-written rule ({rule_cls.__name__})", ""
    try:
        scheduler = getattr(diffusers, name)()
    except Exception as err:  # noqa: BLE001 - a class that cannot be built without arguments
        return f"not supported (cannot be built with its defaults: {_first_line(err)})", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = compare_with_diffusers(scheduler)
    except InputValueError as err:
        return f"not supported ({_reason(err)})", ""
    except Exception as err:  # noqa: BLE001 - the scheduler itself failed in Diffusers' own loop
        return f"not supported (Diffusers' own loop fails on a float sample: {_first_line(err)})", ""
    rule = result["rule"]
    if result["diverges"]:
        return "not supported (Diffusers' own loop gives NaN/Inf at its defaults)", ""
    if result["error"] > EXACT:
        return f"not supported (differs from Diffusers' loop by {result['error']:.1e})", ""
    fine = rule.num_steps
    note = [f"{fine} fine steps for {STEPS}" if fine != STEPS else "", "stochastic" if bool(rule.noise_steps.any()) else "",
            f"carries {', '.join(rule.carried)}" if getattr(rule, "carried", None) else "",
            "no Eq. 17 posterior" if not getattr(rule, "has_posterior", True) else ""]
    return "generic bridge", "; ".join(n for n in note if n)


def _first_line(err) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:160]


def _reason(err) -> str:
    text = str(err)
    marker = "cannot be served by the generic bridge: "
    if marker in text:
        text = text.split(marker, 1)[1].split(". Supported classes", 1)[0]
    return text.strip().rstrip(".")[:200]


def support_table() -> List[Tuple[str, str, str]]:
    """``(class, status, note)`` for every scheduler class Diffusers ships."""
    return [(name, *probe(name)) for name in scheduler_classes()]


def render(rows) -> str:
    import diffusers

    lines = [
        "# Diffusers schedulers in pitsolve",
        "",
        "Generated by `python -m pitsolve.adapters.diffusers.support` (do not edit by hand) against "
        f"diffusers {diffusers.__version__}.",
        "",
        "Status: *hand-written rule* — a batched rule registered for the exact class "
        "(`pitsolve.adapters.diffusion.rules.registry.REGISTRY`); *generic bridge* — the scheduler's own "
        f"`step` on per-point snapshots of its state (`SchedulerBridgeRule`), whose sequential sample "
        f"equals Diffusers' own loop to {EXACT:g} (relative, float32, {STEPS} steps, same generator) on a "
        "closed-form model at the class's default config; *not supported* — with the reason "
        "(`rule_from_scheduler` raises a typed error before any model call). "
        "`tests/test_scheduler_matrix.py` checks the served classes over prediction types and spacings, and "
        "the parallel sampler against the sequential one.",
        "",
        "| class | status | notes |",
        "|-------|--------|-------|",
    ]
    lines += [f"| `{name}` | {status} | {note} |" for name, status, note in rows]
    served = sum(1 for _, s, _ in rows if not s.startswith("not"))
    lines += ["", f"{served} of {len(rows)} classes served; {len(REGISTRY)} class names have hand-written rules.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="docs/schedulers.md", help="where to write (default docs/schedulers.md)")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    text = render(support_table())
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
