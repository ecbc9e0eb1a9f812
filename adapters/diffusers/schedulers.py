"""From a Diffusers scheduler to a batched :class:`~pitsolve.adapters.diffusion.StepRule`.

A scheduler whose exact class a hand-written rule registers
(:data:`~pitsolve.adapters.diffusion.rules.registry.REGISTRY`) gets that
rule; any other Diffusers ``SchedulerMixin`` gets the generic bridge
(:class:`~pitsolve.adapters.diffusion.rules.bridge.SchedulerBridgeRule`), the
scheduler's own ``step`` on per-row snapshots of its state.
"""

from __future__ import annotations

from typing import Optional

from pitsolve import InputTypeError

from ..diffusion.rules import StepRule
from ..diffusion.rules.bridge import SchedulerBridgeRule
from ..diffusion.rules.registry import REGISTRY, rule_class_for

__all__ = ["rule_from_scheduler", "SUPPORTED_SCHEDULERS"]

#: Diffusers scheduler classes (by name) served by a hand-written rule; every other scheduler goes
#: through the generic bridge (docs/schedulers.md lists each class with its status).
SUPPORTED_SCHEDULERS = tuple(sorted(REGISTRY))


def rule_from_scheduler(scheduler, num_inference_steps: int, *, eta: Optional[float] = None) -> StepRule:
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
    """
    import diffusers

    cls = type(scheduler)
    name = cls.__name__
    rule_cls = rule_class_for(name) if getattr(diffusers, name, None) is cls else None
    if rule_cls is not None:
        return rule_cls.from_scheduler(scheduler, num_inference_steps, eta=eta)
    if isinstance(scheduler, diffusers.SchedulerMixin):
        return SchedulerBridgeRule.from_scheduler(scheduler, num_inference_steps, eta=eta)
    raise InputTypeError(
        f"rule_from_scheduler needs a Diffusers scheduler (a diffusers.SchedulerMixin), got {name}; pass one, "
        f"e.g. DDIMScheduler.from_config(pipe.scheduler.config). Hand-written rules serve "
        f"{', '.join(SUPPORTED_SCHEDULERS)}; the generic bridge serves the others (docs/schedulers.md)."
    )
