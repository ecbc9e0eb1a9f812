"""Fine-step rules of diffusion samplers, batched over different step indices.

=================================  ==========================================  ============
rule                               paper                                       history_size
=================================  ==========================================  ============
:class:`DDPMRule`                  Ho et al. 2020, Eq. 6–7 (ancestral)          0
:class:`DDIMRule`                  Song et al. 2021, Eq. 12, 16 (any η ≥ 0)     0
:class:`DPMSolverMultistepRule`    Lu et al. 2022a/b (DPM-Solver(++), 1–3)      order − 1
=================================  ==========================================  ============
"""

from .base import History, StepRule
from .ddim import DDIMRule
from .ddpm import DDPM_VARIANCE_TYPES, DDPMRule
from .dpmsolver import DPM_ALGORITHM_TYPES, DPM_SOLVER_TYPES, DPMSolverMultistepRule

__all__ = [
    "StepRule",
    "History",
    "DDPMRule",
    "DDIMRule",
    "DPMSolverMultistepRule",
    "DDPM_VARIANCE_TYPES",
    "DPM_ALGORITHM_TYPES",
    "DPM_SOLVER_TYPES",
]
