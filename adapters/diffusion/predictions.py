r"""From a model output to the clean-sample and noise predictions (Eq. 16), and their clipping.

With ``x_t = α_t x_0 + σ_t ε`` (``α_t² + σ_t² = 1`` for VP schedules) a model is
trained to output one of

================  ==============================  ==========================================
prediction_type   model output                    (x̂_0, ε̂) from output ``m`` and ``x = x_t``
================  ==============================  ==========================================
``"epsilon"``     ``ε̂``  (DDPM, Ho et al. Eq. 11)  ``x̂_0 = (x − σ_t m)/α_t`` (Eq. 16), ``ε̂ = m``
``"sample"``      ``x̂_0``                         ``x̂_0 = m``, ``ε̂ = (x − α_t m)/σ_t``
``"v_prediction"`` ``v = α_t ε − σ_t x_0``         ``x̂_0 = α_t x − σ_t m``, ``ε̂ = α_t m + σ_t x``
                  (Salimans & Ho 2022, §4)
================  ==============================  ==========================================

"Eq. 16" is the ParaSolver paper's clean-sample prediction (DDPM Eq. 15, DDIM
Eq. 9).  ``x̂_0`` may then be clipped to a fixed range or dynamically
thresholded (Saharia et al. 2022, Imagen §2.3) before a step uses it, exactly
as the Diffusers schedulers do.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import torch

from pitsolve import InputTypeError, InputValueError

__all__ = [
    "PREDICTION_TYPES",
    "check_prediction_type",
    "model_output_to_x0_eps",
    "eps_from_x0",
    "clip_sample",
    "dynamic_threshold",
    "SampleClipping",
]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> str:
    """Return ``prediction_type`` if supported, else raise naming the supported ones."""
    if prediction_type not in PREDICTION_TYPES:
        raise InputValueError(
            f"prediction_type={prediction_type!r} is not supported; choose one of "
            f"{', '.join(map(repr, PREDICTION_TYPES))}."
        )
    return prediction_type


def model_output_to_x0_eps(
    model_output: torch.Tensor, x: torch.Tensor, alpha, sigma, prediction_type: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x̂_0, ε̂)`` of the table above; ``alpha``/``sigma`` broadcast against ``x``."""
    if prediction_type == "epsilon":
        return (x - sigma * model_output) / alpha, model_output
    if prediction_type == "sample":
        return model_output, (x - alpha * model_output) / sigma
    if prediction_type == "v_prediction":
        return alpha * x - sigma * model_output, alpha * model_output + sigma * x
    check_prediction_type(prediction_type)
    raise AssertionError("unreachable")


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """The noise implied by a clean-sample prediction: ``ε̂ = (x − α_t x̂_0)/σ_t``."""
    return (x - alpha * x0) / sigma


def clip_sample(x0: torch.Tensor, clip_sample_range: float = 1.0) -> torch.Tensor:
    """Clamp ``x̂_0`` to ``[−r, r]`` (Diffusers' ``clip_sample``)."""
    return x0.clamp(-clip_sample_range, clip_sample_range)


def dynamic_threshold(
    x0: torch.Tensor, ratio: float = 0.995, sample_max_value: float = 1.0, sample_dims: int = 3
) -> torch.Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3), per sample.

    For each sample, ``s`` is the ``ratio``-quantile of ``|x̂_0|`` clamped to
    ``[1, sample_max_value]``; ``x̂_0`` is clamped to ``[−s, s]`` and divided by
    ``s``.  A "sample" is the trailing ``sample_dims`` dimensions of ``x0``
    (all dimensions in front of them are batch), so ``sample_dims=3`` treats a
    ``[..., C, H, W]`` tensor per image as Diffusers does.  Half-precision
    inputs are thresholded in float32 (``torch.quantile`` needs it).
    """
    if not 1 <= sample_dims <= x0.ndim:
        raise InputValueError(f"sample_dims={sample_dims} must lie in [1, x0.ndim={x0.ndim}].")
    dtype = x0.dtype
    work = x0 if dtype in (torch.float32, torch.float64) else x0.float()
    lead = work.shape[: work.ndim - sample_dims]
    flat = work.reshape(*lead, -1)
    s = torch.quantile(flat.abs(), ratio, dim=-1, keepdim=True).clamp(min=1, max=sample_max_value)
    return (torch.clamp(flat, -s, s) / s).reshape(work.shape).to(dtype)


@dataclasses.dataclass(frozen=True)
class SampleClipping:
    """What is done to ``x̂_0`` before a step uses it (Diffusers' config names).

    Dynamic thresholding takes precedence over fixed clipping, as in Diffusers.
    The default does nothing.  Rules call :meth:`apply` on ``x̂_0`` of shape
    ``[B, *S]``, one row per sample (e.g. ``S = (C, H, W)``): the quantile of
    dynamic thresholding is taken over each row, as Diffusers takes it over
    each image of its batch.
    """

    clip_sample: bool = False
    clip_sample_range: float = 1.0
    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0

    def __post_init__(self):
        for name in ("clip_sample", "thresholding"):
            if not isinstance(getattr(self, name), bool):
                raise InputTypeError(f"{name} must be a bool, got {getattr(self, name)!r}.")
        if not self.clip_sample_range > 0:
            raise InputValueError(f"clip_sample_range must be > 0, got {self.clip_sample_range!r}.")
        if not 0 < self.dynamic_thresholding_ratio <= 1:
            raise InputValueError(
                f"dynamic_thresholding_ratio must lie in (0, 1], got {self.dynamic_thresholding_ratio!r}."
            )
        if not self.sample_max_value >= 1:
            raise InputValueError(f"sample_max_value must be >= 1, got {self.sample_max_value!r}.")

    @classmethod
    def from_config(cls, config) -> "SampleClipping":
        """Read the five fields from a Diffusers scheduler config (missing ones: off / defaults)."""
        get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
        defaults = cls()
        return cls(**{f.name: get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})

    @property
    def active(self) -> bool:
        return self.thresholding or self.clip_sample

    def apply(self, x0: torch.Tensor) -> torch.Tensor:
        """Threshold or clip ``x̂_0`` of shape ``[B, *S]``."""
        if self.thresholding:
            return dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value, x0.ndim - 1)
        if self.clip_sample:
            return clip_sample(x0, self.clip_sample_range)
        return x0
