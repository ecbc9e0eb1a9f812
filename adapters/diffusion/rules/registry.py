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

from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple, Type

from pitsolve import AutoWindow

from pitsolve import InputTypeError

__all__ = [
    "REGISTRY", "register", "rule_class_for", "SAMPLERS", "SamplerEntry", "SolveDefaults", "sampler", "served_by",
    "defaults_for", "GENERIC_DEFAULTS",
]

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


# --------------------------------------------------------------------------- named samplers
class SolveDefaults(NamedTuple):
    """A sampler family's parallel-solve defaults, as the defaults benchmark measured them best.

    ``parallel_sample``, the pipeline and the CLI use them for every option a
    user leaves unset (:func:`~pitsolve.adapters.diffusers.options.resolve`).
    """

    #: The Jacobian strategy.
    jacobian: str
    #: ``M``, the model steps of the Eq. 17 start.
    preconditioning_steps: int
    #: The window: ``AutoWindow(a, b)``, the tuner with this family's measured sweep model ``a + b·N/p``.
    window: Any
    #: Where the measurement is: the benchmark record (file and table row) that justifies these values.
    evidence: str


class SamplerEntry(NamedTuple):
    """One named sampler: the CLI's ``--scheduler`` choice, the benchmark samplers' kinds and the docs derive from these."""

    #: The CLI name (``pitsolve sample --scheduler NAME``).
    name: str
    #: The Diffusers scheduler class name.
    scheduler: str
    #: Config over the model's own scheduler config (``cls.from_config(base.config, **config)``).
    config: Mapping[str, Any]
    #: The default number of inference steps.
    default_steps: int
    #: The parallel-solve defaults of this sampler (``None``: :data:`GENERIC_DEFAULTS`).
    defaults: Optional[SolveDefaults] = None


_RECORD = "benchmarks/results/defaults.md"  # python -m benchmarks.run --suite defaults


def _measured(jacobian: str, M: int, a: float, b: float, row: str) -> SolveDefaults:
    """Defaults read off the defaults record: the strategy and M of least predicted time, the sweep model
    ``a + b·N/p`` fitted to their grid rows (table ``fits``, row ``row``)."""
    return SolveDefaults(jacobian, M, AutoWindow(a, b), f"{_RECORD}, tables fits and timed, {row}")


#: Samplers no entry declares defaults for (the bridge's schedulers): the identity update (ParaSolver),
#: the Eq. 17 start with one model step, and the tuner's generic sweep model.
GENERIC_DEFAULTS = SolveDefaults("identity", 1, AutoWindow(), "generic: no measurement of this sampler")
#: The named samplers, in the order the CLI lists them.  Which of them a hand-written rule serves and
#: which the generic bridge serves is read from :data:`REGISTRY` (:func:`served_by`), not stated here.
#: ``defaults`` are the parallel-solve defaults the defaults benchmark measured best for the sampler.
SAMPLERS: Tuple[SamplerEntry, ...] = (
    SamplerEntry("ddpm", "DDPMScheduler", {}, 1000, _measured("identity", 1, 25.5, 1.04, "DDPM-1000")),
    SamplerEntry("ddim", "DDIMScheduler", {}, 50, _measured("secant", 0, 6.5, 1.23, "DDIM-50")),
    SamplerEntry("dpmsolver++", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, 25,
                 _measured("secant", 0, 5.0, 1.92, "DPM++-25")),
    SamplerEntry("euler", "EulerDiscreteScheduler", {}, 50, _measured("identity", 0, 22.7, 1.0, "Euler-50")),
    SamplerEntry("euler-a", "EulerAncestralDiscreteScheduler", {}, 50),
    SamplerEntry("heun", "HeunDiscreteScheduler", {}, 25),
    SamplerEntry("unipc", "UniPCMultistepScheduler", {}, 25, _measured("identity", 0, 22.7, 1.0, "UniPC-25")),
    SamplerEntry("flowmatch", "FlowMatchEulerDiscreteScheduler", {}, 28,
                 _measured("identity", 1, 5.4, 1.0, "FlowMatch-28")),
    SamplerEntry("pndm", "PNDMScheduler", {"skip_prk_steps": True}, 50),
    SamplerEntry("lms", "LMSDiscreteScheduler", {}, 50),
    SamplerEntry("dpmsolver-single", "DPMSolverSinglestepScheduler", {}, 25),
    SamplerEntry("deis", "DEISMultistepScheduler", {}, 25),
    SamplerEntry("kdpm2", "KDPM2DiscreteScheduler", {}, 25),
)


def sampler(name: str) -> SamplerEntry:
    """The :data:`SAMPLERS` entry called ``name``, or raise naming the choices."""
    from pitsolve import InputValueError

    for entry in SAMPLERS:
        if entry.name == name:
            return entry
    raise InputValueError(f"unknown sampler {name!r}; choose one of {', '.join(e.name for e in SAMPLERS)}.")


def defaults_for(scheduler) -> Tuple[str, SolveDefaults]:
    """``(entry name, SolveDefaults)`` for a Diffusers scheduler (instance or class name).

    The first :data:`SAMPLERS` entry of the scheduler's class that declares
    defaults; a class no entry declares gets :data:`GENERIC_DEFAULTS`.
    """
    name = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    for entry in SAMPLERS:
        if entry.scheduler == name and entry.defaults is not None:
            return entry.name, entry.defaults
    return "generic", GENERIC_DEFAULTS


def served_by(scheduler_name: str) -> str:
    """``"hand-written rule (Class)"`` if a registered rule serves ``scheduler_name``, else ``"generic bridge"``."""
    rule = rule_class_for(scheduler_name)
    return f"hand-written rule ({rule.__name__})" if rule is not None else "generic bridge"
