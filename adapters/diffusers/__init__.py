"""The bridge to Diffusers: schedulers, UNets and pipelines, sampled in parallel.

>>> samples, solution = parallel_sample(unet, scheduler, num_inference_steps=50)  # doctest: +SKIP
"""

from .models import UNetModel
from .options import SAMPLER_DEFAULT, Conditioning, SampleSetup, SolveOptions
from .pipeline import ParallelDiffusionPipeline, ParallelPipelineOutput
from .sampling import DEFAULT_TOL, build_system, draw_noise, parallel_sample, sequential_sample
from .schedulers import SUPPORTED_SCHEDULERS, rule_from_scheduler

__all__ = [
    "parallel_sample",
    "sequential_sample",
    "build_system",
    "draw_noise",
    "DEFAULT_TOL",
    "SampleSetup",
    "Conditioning",
    "SolveOptions",
    "SAMPLER_DEFAULT",
    "UNetModel",
    "ParallelDiffusionPipeline",
    "ParallelPipelineOutput",
    "rule_from_scheduler",
    "SUPPORTED_SCHEDULERS",
]
