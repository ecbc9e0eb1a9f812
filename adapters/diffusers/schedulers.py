"""From a Diffusers scheduler to a batched :class:`~pitsolve.adapters.diffusion.StepRule`.

A scheduler whose exact class a hand-written rule registers
(:data:`~pitsolve.adapters.diffusion.rules.registry.REGISTRY`) gets that
rule; any other Diffusers ``SchedulerMixin`` gets the generic bridge
(:class:`~pitsolve.adapters.diffusion.rules.bridge.SchedulerBridgeRule`), the
scheduler's own ``step`` on per-row snapshots of its state.
"""

from __future__ import annotations

from typing import Optional

import inspect

from pitsolve import InputTypeError, InputValueError

from ..diffusion.rules import StepRule
from ..diffusion.rules.bridge import SchedulerBridgeRule
from ..diffusion.rules.registry import REGISTRY, rule_class_for

__all__ = ["rule_from_scheduler", "SUPPORTED_SCHEDULERS"]

#: Diffusers scheduler classes (by name) served by a hand-written rule; every other scheduler goes
#: through the generic bridge (docs/schedulers.md lists each class with its status).
SUPPORTED_SCHEDULERS = tuple(sorted(REGISTRY))


def rule_from_scheduler(scheduler, num_inference_steps: int, *, eta: Optional[float] = None, **options) -> StepRule:
    """The :class:`StepRule` that reproduces ``scheduler.step`` after ``set_timesteps(num_inference_steps)``.

    A fresh scheduler is built from ``scheduler.config`` as it stands, in-place
    patches included (the user's scheduler is never mutated).  The exact
    Diffusers class picks the rule: a registered hand-written rule
    (``rule_cls.from_scheduler``) when there is one, else the generic bridge.
    ``eta`` is DDIM's ``η`` (``DDIMScheduler.step(eta=…)``) or the ``eta`` of
    another scheduler whose ``step`` takes one (TCD's γ); ``None`` keeps the
    scheduler's default, and any other scheduler takes 0 or ``None``.

    Differences from the schedulers' own ``step`` are listed in the rules'
    docstrings (DDIM follows the actual schedule instead of a fixed stride;
    DPM-Solver keeps float64 in float64); the bridge has none by construction.
    A registered rule also takes its own ``options`` (e.g. ``mu`` for
    FlowMatchEuler's dynamic shifting).
    """
    import diffusers

    cls = type(scheduler)
    name = cls.__name__
    rule_cls = rule_class_for(name) if getattr(diffusers, name, None) is cls else None
    if rule_cls is not None:  # a registered rule also takes its own options (e.g. mu for dynamic shifting)
        _check_options(rule_cls, name, options)
        try:
            return rule_cls.from_scheduler(scheduler, num_inference_steps, eta=eta, **options)
        except InputValueError as refusal:
            # A configuration the hand-written rule does not cover (e.g. Euler with s_churn > 0) runs
            # through the scheduler's own step instead; if the bridge refuses too, the rule's reason stands.
            if options or not isinstance(scheduler, diffusers.SchedulerMixin):
                raise
            try:
                return SchedulerBridgeRule.from_scheduler(scheduler, num_inference_steps, eta=eta)
            except InputValueError:
                raise InputValueError(f"{name}: {refusal}") from None
    if options:
        raise InputTypeError(
            f"rule_from_scheduler got options {sorted(options)} for {name}, which no hand-written rule serves; "
            "the generic bridge takes none (set them on the scheduler's config instead)."
        )
    if isinstance(scheduler, diffusers.SchedulerMixin):
        return SchedulerBridgeRule.from_scheduler(scheduler, num_inference_steps, eta=eta)
    raise InputTypeError(
        f"rule_from_scheduler needs a Diffusers scheduler (a diffusers.SchedulerMixin), got {name}; pass one, "
        f"e.g. DDIMScheduler.from_config(pipe.scheduler.config). Hand-written rules serve "
        f"{', '.join(SUPPORTED_SCHEDULERS)}; the generic bridge serves the others (docs/schedulers.md)."
    )


def _check_options(rule_cls, name: str, options: dict) -> None:
    """Raise unless ``rule_cls.from_scheduler`` takes every keyword in ``options``."""
    if not options:
        return
    params = inspect.signature(rule_cls.from_scheduler).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InputTypeError(
            f"rule_from_scheduler got unexpected options {unknown} for {name}; {rule_cls.__name__} takes "
            f"{sorted(k for k in params if k not in ('scheduler', 'num_inference_steps', 'cls'))}."
        )
