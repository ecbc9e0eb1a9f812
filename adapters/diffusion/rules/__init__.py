"""Fine-step rules of diffusion samplers, batched over different step indices.

=================================  ==========================================  ============
rule                               paper                                       history_size
=================================  ==========================================  ============
:class:`DDPMRule`                  Ho et al. 2020, Eq. 6–7 (ancestral)          0
:class:`DDIMRule`                  Song et al. 2021, Eq. 12, 16 (any η ≥ 0)     0
:class:`DPMSolverMultistepRule`    Lu et al. 2022a/b (DPM-Solver(++), 1–3)      order − 1
:class:`EulerDiscreteRule`         Karras et al. 2022, Alg. 1 (Euler in σ)      0
:class:`EulerAncestralRule`        Karras et al. 2022 / Ho et al. 2020, Eq. 7   0
:class:`FlowMatchEulerRule`        Lipman et al. 2023; Esser et al. 2024        0
:class:`UniPCMultistepRule`        Zhao et al. 2023 (UniP + UniC, B1/B2, 1–3)   1 + order
:class:`SchedulerBridgeRule`       any Diffusers scheduler's own ``step``      its state's slots
=================================  ==========================================  ============

Each hand-written rule registers the Diffusers classes it serves in
:data:`~.registry.REGISTRY` (``@register``; importing this package registers them);
:data:`~.registry.SAMPLERS` names the samplers the CLI and the benchmarks offer.
"""

from .base import History, StepRule
from .ddim import DDIMRule
from .ddpm import DDPM_VARIANCE_TYPES, DDPMRule
from .dpmsolver import DPM_ALGORITHM_TYPES, DPM_SOLVER_TYPES, DPMSolverMultistepRule
from .bridge import SchedulerBridgeRule, UnsupportedScheduler
from .euler import EulerDiscreteRule
from .euler_ancestral import EulerAncestralRule
from .flowmatch import FlowMatchEulerRule
from .registry import REGISTRY, SAMPLERS, SamplerEntry, register, rule_class_for
from .unipc import UNIPC_SOLVER_TYPES, UniPCMultistepRule

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
    "EulerDiscreteRule",
    "EulerAncestralRule",
    "FlowMatchEulerRule",
    "UniPCMultistepRule",
    "UNIPC_SOLVER_TYPES",
    "DDPM_VARIANCE_TYPES",
    "DPM_ALGORITHM_TYPES",
    "DPM_SOLVER_TYPES",
]
