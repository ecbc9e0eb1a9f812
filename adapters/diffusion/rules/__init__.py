"""Fine-step rules of diffusion samplers, batched over different step indices.

=================================  ==========================================  ============
rule                               paper                                       history_size
=================================  ==========================================  ============
:class:`DDPMRule`                  Ho et al. 2020, Eq. 6–7 (ancestral)          0
:class:`DDIMRule`                  Song et al. 2021, Eq. 12, 16 (any η ≥ 0)     0
:class:`DPMSolverMultistepRule`    Lu et al. 2022a/b (DPM-Solver(++), 1–3)      order − 1
:class:`SchedulerBridgeRule`       any Diffusers scheduler's own ``step``      its state's slots
=================================  ==========================================  ============

Each hand-written rule registers the Diffusers classes it serves in
:data:`~.registry.REGISTRY`; :data:`~.registry.SAMPLERS` names the samplers
the CLI and the benchmarks offer.
"""

from .base import History, StepRule
from .ddim import DDIMRule
from .ddpm import DDPM_VARIANCE_TYPES, DDPMRule
from .dpmsolver import DPM_ALGORITHM_TYPES, DPM_SOLVER_TYPES, DPMSolverMultistepRule
from .bridge import SchedulerBridgeRule, UnsupportedScheduler
from .registry import REGISTRY, SAMPLERS, SamplerEntry, register, rule_class_for

__all__ = [
    "StepRule",
    "History",
    "DDPMRule",
    "DDIMRule",
    "DPMSolverMultistepRule",
    "SchedulerBridgeRule",
    "UnsupportedScheduler",
    "REGISTRY",
    "SAMPLERS",
    "SamplerEntry",
    "register",
    "rule_class_for",
    "DDPM_VARIANCE_TYPES",
    "DPM_ALGORITHM_TYPES",
    "DPM_SOLVER_TYPES",
]
