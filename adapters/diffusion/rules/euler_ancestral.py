r"""Ancestral Euler sampling in σ (Karras et al. 2022's k-diffusion ``sample_euler_ancestral``; Ho et al. 2020's posterior)."""

from __future__ import annotations

from typing import Optional

import torch

from pitsolve import InputValueError

from .base import StepRule
from .euler import ve_denoise, ve_tables
from .registry import register
from .scheduler_config import float_sigmas, fresh_scheduler, require_eta_zero

__all__ = ["EulerAncestralRule"]


@register
class EulerAncestralRule(StepRule):
    r"""One ancestral Euler step ``x_{σ_i} → x_{σ_{i+1}}``, batched over step indices.

    The variance-exploding sample ``x = x_0 + σ ε`` and denoiser
    ``D(x; σ) = x̂_0`` as in :class:`~pitsolve.adapters.diffusion.rules.EulerDiscreteRule`.
    The step splits ``σ_{i+1}`` into a deterministic part ``σ_↓`` reached by
    an Euler step of the σ-ODE (Karras et al. 2022, Eq. 3) and fresh noise of
    scale ``σ_↑``, so that the marginal noise level is ``σ_{i+1}`` and, for
    the exact denoiser, the step samples the DDPM posterior
    ``q(x_{σ_{i+1}} | x_{σ_i}, x̂_0)`` (Ho et al. 2020, Eq. 6–7) in σ:

    .. code-block:: text

        σ_↑     = sqrt(σ_{i+1}² (σ_i² − σ_{i+1}²) / σ_i²)
        σ_↓     = sqrt(σ_{i+1}² − σ_↑²)
        x_{i+1} = x_i + (σ_↓ − σ_i)(x_i − D(x_i; σ_i))/σ_i + σ_↑ z,   z ~ N(0, I)

    as ``EulerAncestralDiscreteScheduler.step``.  Every step draws ``z``
    (:attr:`noise_steps` is all ``True``; at the last step ``σ_↑ = 0``), as
    Diffusers draws it, so the same generator gives the same numbers: the noise
    is supplied per step by the system (drawn up front, see
    :func:`~pitsolve.adapters.diffusers.draw_noise`).  ``prediction_type``
    ``"sample"`` is not supported (Diffusers' step raises for it too).
    """

    schedulers = ("EulerAncestralDiscreteScheduler",)
    prediction_types = ("epsilon", "v_prediction")

    def __init__(self, timesteps, sigmas, *, prediction_type: str = "epsilon", init_noise_sigma: Optional[float] = None):
        super().__init__(timesteps, prediction_type, None)
        self.sigmas = s = float_sigmas(sigmas, self.num_steps, "EulerAncestralDiscreteScheduler.sigmas")
        s_from, s_to = s[:-1], s[1:]
        if bool((s_to > s_from).any()):
            i = int((s_to > s_from).nonzero()[0])
            raise InputValueError(
                f"sigmas must not increase (step {i}: {float(s_from[i])} → {float(s_to[i])}); an ancestral step "
                "has no real noise scale σ_↑ then. Pass a decreasing σ grid."
            )
        sigma_up = (s_to**2 * (s_from**2 - s_to**2) / s_from**2).sqrt()
        sigma_down = (s_to**2 - sigma_up**2).clamp(min=0).sqrt()
        self._set_tables(**ve_tables(s), dt=sigma_down - s_from, std=sigma_up)
        self._set_noise_steps(torch.ones(self.num_steps, dtype=torch.bool))
        self.init_noise_sigma = float(s.max()) if init_noise_sigma is None else float(init_noise_sigma)

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0):
        """The rule of ``scheduler`` (an ``EulerAncestralDiscreteScheduler``) after ``set_timesteps``."""
        require_eta_zero(eta, "EulerAncestralDiscreteScheduler")
        fresh, config = fresh_scheduler(scheduler, num_inference_steps)
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.sigmas.detach().cpu(),
            prediction_type=config.get("prediction_type", "epsilon"),
            init_noise_sigma=float(fresh.init_noise_sigma),
        )

    def sigma_boundary(self) -> torch.Tensor:
        return self.sigmas.clone()

    def scale_model_input(self, x, step_index):
        idx = torch.as_tensor(step_index, device=x.device)
        return x / self._rows("in_scale", idx, x)

    def _advance(self, x, x0, idx, noise):
        derivative = (x - x0) * self._rows("inv_sigma", idx, x)
        return x + derivative * self._rows("dt", idx, x) + noise * self._rows("std", idx, x)

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, _, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        return self._advance(xc, ve_denoise(self, xc, mo, idx), idx, noise).to(x.dtype), ()

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return ve_denoise(self, xc, mo, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        """The ancestral step with ``D = x0``: a draw of the posterior ``q(x_{σ_{i+1}} | x_{σ_i}, x0)``."""
        xc, x0c, idx, _, noise = self._check(x, x0, "x0", step_index, history, noise)
        return self._advance(xc, x0c, idx, noise).to(x.dtype), ()
