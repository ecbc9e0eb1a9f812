"""Model-library-free diffusion mathematics: schedules, Eq. 16 predictions, batched fine-step rules,
the banded system of a sampler, the Eq. 17 initialisation and an exact Gaussian-mixture model."""

from .gmm import GaussianMixtureDenoiser
from .init import PosteriorInit

from .predictions import (
    PREDICTION_TYPES,
    SampleClipping,
    check_prediction_type,
    clip_sample,
    dynamic_threshold,
    eps_from_x0,
    model_output_to_x0_eps,
)
from .rules import (
    DDIMRule,
    DDPMRule,
    DPMSolverMultistepRule,
    History,
    SchedulerBridgeRule,
    StepRule,
)
from .system import DiffusionSystem, interval_boundaries
from .schedule import (
    BETA_SCHEDULES,
    FINAL_SIGMAS_TYPES,
    TIMESTEP_KINDS,
    TIMESTEP_SPACINGS,
    VPSchedule,
    dpmsolver_sigmas,
    make_betas,
    make_timesteps,
)

__all__ = [
    # the banded system, Eq. 17, the exact model
    "DiffusionSystem",
    "interval_boundaries",
    "PosteriorInit",
    "GaussianMixtureDenoiser",
    # schedule
    "make_betas",
    "VPSchedule",
    "make_timesteps",
    "dpmsolver_sigmas",
    "BETA_SCHEDULES",
    "TIMESTEP_SPACINGS",
    "TIMESTEP_KINDS",
    "FINAL_SIGMAS_TYPES",
    # predictions
    "PREDICTION_TYPES",
    "check_prediction_type",
    "model_output_to_x0_eps",
    "eps_from_x0",
    "clip_sample",
    "dynamic_threshold",
    "SampleClipping",
    # rules
    "StepRule",
    "History",
    "DDPMRule",
    "DDIMRule",
    "DPMSolverMultistepRule",
    "SchedulerBridgeRule",
]
