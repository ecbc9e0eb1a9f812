"""From a Diffusers scheduler to a batched :class:`~pitsolve.adapters.diffusion.StepRule`."""

from __future__ import annotations

import math

from pitsolve import InputTypeError, InputValueError
from pitsolve.extend import as_integer

from ..diffusion.predictions import SampleClipping
from ..diffusion.rules import REGISTRY, DDIMRule, DDPMRule, DPMSolverMultistepRule, StepRule

__all__ = ["rule_from_scheduler", "SUPPORTED_SCHEDULERS"]

#: Diffusers scheduler classes (by name) that :func:`rule_from_scheduler` accepts.
SUPPORTED_SCHEDULERS = (
    "DDPMScheduler",
    "DDIMScheduler",
    "DPMSolverMultistepScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
)
_DDIM_LIKE = ("DDIMScheduler", "DDIMParallelScheduler")


def _scheduler_class(scheduler) -> str:
    """The supported Diffusers class name of ``scheduler``'s exact type, or raise."""
    import diffusers

    cls = type(scheduler)
    for name in SUPPORTED_SCHEDULERS:
        if cls is getattr(diffusers, name, None):
            return name
    raise InputTypeError(
        f"rule_from_scheduler does not support {cls.__name__}; supported schedulers: "
        f"{', '.join(SUPPORTED_SCHEDULERS)} (diffusers classes, not subclasses, whose step() this library "
        "reproduces)."
    )


def _reject(config, key, allowed, why: str) -> None:
    value = config.get(key, allowed[0])
    if value not in allowed:
        raise InputValueError(f"scheduler config {key}={value!r} is not supported ({why}); supported: {allowed}.")


def rule_from_scheduler(scheduler, num_inference_steps: int, *, eta: float = 0.0, **options) -> StepRule:
    """The :class:`StepRule` that reproduces ``scheduler.step`` after ``set_timesteps(num_inference_steps)``.

    A fresh scheduler is built from ``scheduler.config`` as it stands, in-place
    patches included (the user's scheduler is never mutated); its
    ``timesteps``, ``alphas_cumprod`` (DDPM/DDIM) or ``sigmas`` (DPM-Solver, so
    Karras, exponential, beta and Lu-lambda grids carry over) and its config
    settings (prediction type, clipping and thresholding, variance type,
    ``set_alpha_to_one``, solver options) define the rule.  ``eta`` is DDIM's
    ``η`` (``DDIMScheduler.step(eta=…)``) and must be 0 for other schedulers.

    Differences from the schedulers' own ``step`` are listed in the rules'
    docstrings (DDIM follows the actual schedule instead of a fixed stride;
    DPM-Solver keeps float64 in float64).

    A scheduler class served by a rule in the sampler registry
    (:data:`~pitsolve.adapters.diffusion.rules.REGISTRY`, looked up by the exact
    class name) is built by that rule's ``from_scheduler``, which also takes the
    rule's ``options`` (e.g. ``mu`` for dynamic shifting).
    """
    rule_cls = REGISTRY.get(type(scheduler).__name__)
    if rule_cls is not None:
        return rule_cls.from_scheduler(scheduler, num_inference_steps, eta=eta, **options)
    name = _scheduler_class(scheduler)
    if options:
        raise InputTypeError(f"rule_from_scheduler got unexpected options {sorted(options)} for {name}.")
    num_inference_steps = as_integer(num_inference_steps)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InputValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}.")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
        raise InputTypeError(f"eta must be a finite float, got {eta!r}.")
    if eta != 0 and name not in _DDIM_LIKE:
        raise InputValueError(
            f"eta={eta} applies to DDIM only ({', '.join(_DDIM_LIKE)}); {name} takes eta=0. "
            "For ancestral sampling use a DDPMScheduler (or DDIM with eta=1)."
        )
    # Diffusers' from_config drops the keys listed in ``_use_default_values`` (settings left at their
    # defaults when the scheduler was built), so a config patched in place afterwards — as
    # StableDiffusionPipeline.__init__ does with steps_offset=1 and clip_sample=False — would lose
    # the patch.  Without that list every key of the scheduler's live config is kept.
    config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
    trained = config.get("num_train_timesteps")
    if isinstance(trained, int) and num_inference_steps > trained:
        raise InputValueError(
            f"num_inference_steps={num_inference_steps} is larger than the scheduler's "
            f"num_train_timesteps={trained}; pass num_inference_steps <= {trained}."
        )
    fresh = type(scheduler).from_config(config)
    fresh.set_timesteps(num_inference_steps)
    config = fresh.config
    timesteps = fresh.timesteps.detach().cpu()
    prediction_type = config.get("prediction_type", "epsilon")
    if name in ("DDPMScheduler", "DDPMParallelScheduler"):
        return DDPMRule(
            timesteps,
            fresh.alphas_cumprod,
            prediction_type=prediction_type,
            variance_type=config.get("variance_type", "fixed_small"),
            clipping=SampleClipping.from_config(config),
        )
    if name in _DDIM_LIKE:
        return DDIMRule(
            timesteps,
            fresh.alphas_cumprod,
            eta=float(eta),
            prediction_type=prediction_type,
            clipping=SampleClipping.from_config(config),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
        )
    # DPMSolverMultistepScheduler
    _reject(config, "use_flow_sigmas", (False,), "flow-matching sigmas are not a VP schedule")
    if config.get("variance_type") in ("learned", "learned_range"):
        # Diffusers' DPM-Solver reads only these two values; any other (e.g. DDPM's "fixed_small",
        # carried over by from_config) leaves the step unchanged there too.
        raise InputValueError(
            f"scheduler config variance_type={config.get('variance_type')!r} is not supported "
            "(learned variances are not read); use a model without learned variance."
        )
    if config.get("prediction_type") == "flow_prediction":
        raise InputValueError(
            "scheduler config prediction_type='flow_prediction' is not supported; supported: "
            "'epsilon', 'v_prediction', 'sample'."
        )
    thresholding = SampleClipping.from_config({k: v for k, v in config.items() if k != "clip_sample"})
    return DPMSolverMultistepRule(
        timesteps,
        fresh.sigmas,
        algorithm_type=config.get("algorithm_type", "dpmsolver++"),
        solver_order=config.get("solver_order", 2),
        solver_type=config.get("solver_type", "midpoint"),
        prediction_type=prediction_type,
        lower_order_final=bool(config.get("lower_order_final", True)),
        euler_at_final=bool(config.get("euler_at_final", False)),
        final_sigmas_type=config.get("final_sigmas_type", "zero"),
        clipping=thresholding,
    )
