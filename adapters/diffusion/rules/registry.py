"""The sampler registry: which :class:`StepRule` serves which Diffusers scheduler class.

Modelled on :data:`pitsolve.jacobians.REGISTRY`.  A rule module registers
its class with :func:`register`; the class declares the Diffusers scheduler
class names it serves (``schedulers``) and builds itself from a scheduler
with ``from_scheduler(scheduler, num_inference_steps, **options)``.
:func:`~pitsolve.adapters.diffusers.rule_from_scheduler`, the CLI's choices
and help, the docs' support table and the benchmark samplers derive from
:data:`REGISTRY`, so adding a hand-written rule is one file plus its
registration.
"""

from __future__ import annotations

from typing import Dict, Type

from pitsolve import InputTypeError

__all__ = ["REGISTRY", "register", "rule_class_for"]

#: Diffusers scheduler class name → the rule class that reproduces its ``step``.
REGISTRY: Dict[str, type] = {}


def register(rule_cls: Type) -> Type:
    """Class decorator: serve every name in ``rule_cls.schedulers`` with ``rule_cls``."""
    names = getattr(rule_cls, "schedulers", ())
    if not names or not hasattr(rule_cls, "from_scheduler"):
        raise InputTypeError(
            f"{rule_cls.__name__} cannot be registered: declare `schedulers = (\"SomeScheduler\", …)` and a "
            "classmethod `from_scheduler(scheduler, num_inference_steps, **options)`."
        )
    for name in names:
        if name in REGISTRY and REGISTRY[name] is not rule_cls:
            raise InputTypeError(f"{name} is already served by {REGISTRY[name].__name__}; unregister it first.")
        REGISTRY[name] = rule_cls
    return rule_cls


def rule_class_for(name: str):
    """The registered rule class for the Diffusers scheduler class ``name``, or ``None``."""
    return REGISTRY.get(name)
