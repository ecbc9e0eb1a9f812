r"""Ancestral DDPM sampling (Ho et al. 2020, Eq. 6–7) on a sub-sequence of the training timesteps."""

from __future__ import annotations

from typing import Optional

import torch

from pitsolve import InputValueError

from ..predictions import SampleClipping, model_output_to_x0_eps
from ..schedule import VPSchedule
from .base import StepRule, check_train_timesteps
from .registry import register
from .scheduler_config import fresh_scheduler, require_eta_zero

__all__ = ["DDPMRule", "DDPM_VARIANCE_TYPES"]

DDPM_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")


@register
class DDPMRule(StepRule):
    r"""One ancestral DDPM step ``x_t → x_{t'}``, batched over step indices.

    Step ``i`` goes from ``t = timesteps[i]`` to ``t' = timesteps[i+1]``, the next
    entry of the actual schedule (``t' = −1`` after the last step, where
    ``ᾱ_{t'} = 1``), as Diffusers' ``DDPMScheduler.step`` after
    ``set_timesteps(n)``.  With ``ᾱ = ᾱ_t``, ``ᾱ' = ᾱ_{t'}`` and the effective
    per-step ``α_i = ᾱ/ᾱ'``, ``β_i = 1 − α_i`` of the skipped stride, the
    posterior ``q(x_{t'} | x_t, x_0)`` of Ho et al. Eq. 6–7 is

    .. code-block:: text

        μ̃(x_t, x̂_0) = sqrt(ᾱ') β_i/(1 − ᾱ) · x̂_0 + sqrt(α_i)(1 − ᾱ')/(1 − ᾱ) · x_t   (Eq. 7)
        β̃_i         = (1 − ᾱ')/(1 − ᾱ) · β_i                                      (Eq. 7)
        x_{t'}      = μ̃ + σ_i z,   z ~ N(0, I) drawn only when t > 0

    with ``σ_i² = max(β̃_i, 1e-20)`` for ``variance_type`` ``"fixed_small"`` and
    ``"fixed_small_log"`` (the same number) and ``σ_i² = β_i`` for
    ``"fixed_large"`` (Ho et al. §3.2's two choices).  ``x̂_0`` is the Eq. 16
    prediction of :mod:`~pitsolve.adapters.diffusion.predictions`, clipped or
    thresholded per ``clipping`` (default: none — Diffusers' default is
    ``clip_sample=True``; :func:`~pitsolve.adapters.diffusers.rule_from_scheduler`
    reads it from the scheduler's config).

    Learned variances (``"learned"``, ``"learned_range"``) need the model's
    second output half and are not supported; ``"fixed_large_log"`` is not
    either (Diffusers' step takes the square root of a log-variance there).
    """

    #: The Diffusers classes whose ``step`` this rule reproduces (exact classes, not subclasses).
    schedulers = ("DDPMScheduler", "DDPMParallelScheduler")

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0) -> "DDPMRule":
        """The rule of ``scheduler`` after ``set_timesteps(num_inference_steps)`` (on a fresh copy).

        Its ``timesteps``, ``alphas_cumprod``, prediction type, variance type and
        clipping/thresholding settings define the rule; ``eta`` must be 0 (or ``None``).
        """
        require_eta_zero(eta, type(scheduler).__name__)
        fresh, _ = fresh_scheduler(scheduler, num_inference_steps)
        config = fresh.config
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.alphas_cumprod,
            prediction_type=config.get("prediction_type", "epsilon"),
            variance_type=config.get("variance_type", "fixed_small"),
            clipping=SampleClipping.from_config(config),
        )

    def __init__(
        self,
        timesteps,
        alphas_cumprod,
        *,
        prediction_type: str = "epsilon",
        variance_type: str = "fixed_small",
        clipping: Optional[SampleClipping] = None,
    ):
        super().__init__(timesteps, prediction_type, clipping)
        if variance_type not in DDPM_VARIANCE_TYPES:
            why = (
                " (a learned variance needs the model's second output half, which this rule does not read)"
                if variance_type in ("learned", "learned_range")
                else ""
            )
            raise InputValueError(
                f"variance_type={variance_type!r} is not supported{why}; choose one of "
                f"{', '.join(map(repr, DDPM_VARIANCE_TYPES))}."
            )
        self.variance_type = variance_type
        self.schedule = vp = VPSchedule(alphas_cumprod)
        check_train_timesteps(self.timesteps, vp.num_train_timesteps)
        t = self.timesteps
        t_next = torch.cat([t[1:], t.new_tensor([-1])])
        abar, abar_next = vp.alpha_cumprod(t), vp.alpha_cumprod(t_next)
        alpha_i = abar / abar_next
        beta_i = 1 - alpha_i
        var = ((1 - abar_next) / (1 - abar) * beta_i).clamp(min=1e-20)
        std = beta_i.sqrt() if variance_type == "fixed_large" else var.sqrt()
        self._set_noise_steps(t > 0)
        self._set_tables(
            alpha=abar.sqrt(),
            sigma=(1 - abar).sqrt(),
            c_x0=abar_next.sqrt() * beta_i / (1 - abar),
            c_xt=alpha_i.sqrt() * (1 - abar_next) / (1 - abar),
            std=torch.where(t > 0, std, torch.zeros_like(std)),
        )
        self._sigma_boundary = torch.cat([(1 - abar).sqrt(), (1 - abar_next[-1:]).sqrt()])

    def sigma_boundary(self) -> torch.Tensor:
        return self._sigma_boundary.clone()

    def _x0(self, x, model_output, idx):
        alpha, sigma = self._rows("alpha", idx, x), self._rows("sigma", idx, x)
        x0, _ = model_output_to_x0_eps(model_output, x, alpha, sigma, self.prediction_type)
        return self.clipping.apply(x0)

    def _advance(self, x, x0, idx, noise):
        mean = self._rows("c_x0", idx, x) * x0 + self._rows("c_xt", idx, x) * x
        if noise is None:
            return mean
        return torch.where(self._rows("noise", idx, x), mean + self._rows("std", idx, x) * noise, mean)

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, _, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        return self._advance(xc, self._x0(xc, mo, idx), idx, noise).to(x.dtype), ()

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return self._x0(xc, mo, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        xc, x0c, idx, _, noise = self._check(x, x0, "x0", step_index, history, noise)
        return self._advance(xc, x0c, idx, noise).to(x.dtype), ()
