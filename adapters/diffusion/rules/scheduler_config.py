"""What every ``from_scheduler`` does: rebuild the scheduler from its live config, and refuse what a rule cannot do."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from pitsolve import InputTypeError, InputValueError
from pitsolve.extend import as_integer

__all__ = ["fresh_scheduler", "require", "require_eta_zero", "float_sigmas"]


def fresh_scheduler(
    scheduler, num_inference_steps, *, prepare: Optional[Callable] = None, **set_timesteps_kwargs
) -> Tuple[Any, Dict[str, Any]]:
    """``(fresh, config)``: a new scheduler of ``scheduler``'s class after ``set_timesteps(num_inference_steps)``.

    Built from ``scheduler.config`` as it stands, in-place patches included,
    so the user's scheduler is never mutated.  Diffusers' ``from_config``
    drops the keys listed in ``_use_default_values`` (settings left at their
    defaults when the scheduler was built), so a config patched in place
    afterwards — as ``StableDiffusionPipeline.__init__`` does with
    ``steps_offset=1`` — would lose the patch; without that list every key of
    the live config is kept.  ``prepare(fresh)`` runs before ``set_timesteps``
    (to carry over state that lives outside the config).
    """
    n = as_integer(num_inference_steps)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}.")
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
    trained = config.get("num_train_timesteps")
    if isinstance(trained, int) and n > trained:
        raise InputValueError(
            f"num_inference_steps={n} is larger than the scheduler's num_train_timesteps={trained}; "
            f"pass num_inference_steps <= {trained}."
        )
    fresh = type(scheduler).from_config(config)
    if prepare is not None:
        prepare(fresh)
    fresh.set_timesteps(n, **set_timesteps_kwargs)
    return fresh, dict(fresh.config)


def require(config, key: str, allowed: Sequence, why: str) -> None:
    """Raise unless ``config[key]`` (missing: ``allowed[0]``) is one of ``allowed``."""
    value = config.get(key, allowed[0])
    if value not in tuple(allowed):
        raise InputValueError(
            f"scheduler config {key}={value!r} is not supported ({why}); supported: "
            f"{', '.join(map(repr, allowed))}."
        )


def require_eta_zero(eta, scheduler_name: str) -> None:
    """Raise unless ``eta`` is ``None`` or 0 (samplers without DDIM's η)."""
    if eta is None:
        return
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
        raise InputTypeError(f"eta must be a finite float, got {eta!r}.")
    if eta != 0:
        raise InputValueError(
            f"eta={eta} applies to DDIM only (DDIMScheduler, DDIMParallelScheduler) and to schedulers whose step "
            f"takes eta (TCD); {scheduler_name} takes eta=0. For ancestral sampling use EulerAncestralDiscreteScheduler, "
            "a DDPMScheduler or DDIM with eta=1."
        )


def float_sigmas(sigmas, num_steps: int, what: str) -> torch.Tensor:
    """``sigmas [T+1]`` as float64: finite, > 0 before the last entry and >= 0 at it."""
    s = torch.as_tensor(sigmas)
    if s.ndim != 1 or s.numel() != num_steps + 1 or not s.is_floating_point():
        raise InputValueError(
            f"sigmas must be a 1-D float tensor of length num_steps + 1 = {num_steps + 1} ({what}), got shape "
            f"{tuple(s.shape)} and dtype {s.dtype}."
        )
    s = s.detach().to("cpu", torch.float64).clone()
    if not bool(torch.isfinite(s).all()) or not bool((s[:-1] > 0).all()) or float(s[-1]) < 0:
        raise InputValueError(
            f"sigmas must be finite, > 0 before the last entry and >= 0 at the last, got {s[:4].tolist()} … "
            f"{s[-2:].tolist()}."
        )
    return s
