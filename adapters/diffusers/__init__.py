"""The bridge to Diffusers: schedulers, UNets and pipelines, sampled in parallel.

Needs the extra ``pitsolve[diffusers]`` (Diffusers, safetensors, Pillow).

>>> samples, solution = parallel_sample(unet, scheduler, num_inference_steps=50)  # doctest: +SKIP
"""

from .._extras import require_extra

require_extra("diffusers", "diffusers", "safetensors", "PIL", user="pitsolve.adapters.diffusers")

from .models import UNetModel  # noqa: E402
from .options import SAMPLER_DEFAULT, Conditioning, SampleSetup, SolveOptions  # noqa: E402
from .pipeline import ParallelDiffusionPipeline, ParallelPipelineOutput  # noqa: E402
from .sampling import DEFAULT_TOL, build_system, draw_noise, parallel_sample, sequential_sample  # noqa: E402
from .schedulers import SUPPORTED_SCHEDULERS, rule_from_scheduler  # noqa: E402

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
