r"""Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Alg. 1 without the Heun correction)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pitsolve import InputValueError

from .base import StepRule
from .registry import register
from .scheduler_config import float_sigmas, fresh_scheduler, require_eta_zero

__all__ = ["EulerDiscreteRule", "ve_tables", "ve_denoise"]


def ve_tables(sigmas: torch.Tensor) -> dict:
    """Per-step tables of the σ-parametrised (variance-exploding) sample ``x = x_0 + σ ε`` at ``σ_i``.

    ``in_scale = √(σ² + 1)`` (the model sees the VP sample ``x/√(σ² + 1)``),
    ``v_out = −σ/√(σ² + 1)`` and ``v_skip = 1/(σ² + 1)`` (Karras et al. 2022,
    Table 1, ``c_out``/``c_skip`` of a v-prediction model), ``inv_sigma = 1/σ``.
    """
    s = sigmas[:-1]
    return dict(
        sigma=s,
        in_scale=(s**2 + 1).sqrt(),
        v_out=-s / (s**2 + 1).sqrt(),
        v_skip=1 / (s**2 + 1),
        inv_sigma=1 / s,
    )


def ve_denoise(rule: StepRule, x, model_output, idx):
    """``x̂_0`` (the denoiser ``D(x; σ)`` of Karras et al. 2022, Eq. 7) from the model output at ``σ_i``.

    ``"epsilon"``: ``x − σ ε̂``; ``"sample"``: the output; ``"v_prediction"``:
    ``c_skip x + c_out v̂`` — as ``EulerDiscreteScheduler.step`` computes it.
    """
    if rule.prediction_type == "epsilon":
        return x - rule._rows("sigma", idx, x) * model_output
    if rule.prediction_type == "v_prediction":
        return model_output * rule._rows("v_out", idx, x) + x * rule._rows("v_skip", idx, x)
    return model_output


@register
class EulerDiscreteRule(StepRule):
    r"""One Euler step ``x_{σ_i} → x_{σ_{i+1}}`` of the σ-ODE, batched over step indices.

    The sample is the variance-exploding one, ``x = x_0 + σ ε`` (Karras et
    al. 2022, §2: ``s(t) = 1``, ``σ(t) = t``); the model is called with
    ``x/√(σ² + 1)`` (:meth:`scale_model_input`, the VP sample) at the
    scheduler's own float timestep.  With ``D = x̂_0`` the denoiser output
    (:func:`ve_denoise`) the step is Karras et al. Alg. 1, lines 4–5, without
    the second-order correction (lines 6–8):

    .. code-block:: text

        d_i     = (x_i − D(x_i; σ_i)) / σ_i                (Eq. 3: dx/dσ = (x − D)/σ)
        x_{i+1} = x_i + (σ_{i+1} − σ_i) d_i

    which is also the DDIM (η = 0) step in σ.  Any σ grid works — the
    scheduler's own (``linspace``/``leading``/``trailing`` spacing,
    ``use_karras_sigmas`` (Karras et al. Eq. 5), exponential or beta σ,
    ``final_sigmas_type``); :meth:`from_scheduler` reads ``sigmas`` and
    ``timesteps`` from a ``EulerDiscreteScheduler`` after ``set_timesteps``
    (with ``interpolation_type="log_linear"`` Diffusers makes one σ too many
    and its loop never reaches the last, σ = 0: neither does this rule).

    Karras et al.'s churn (Alg. 2, ``s_churn > 0``) is not supported:
    Diffusers applies it after the model call, on a sample the model did not
    see.  :attr:`init_noise_sigma` is the scale of the initial noise, as the
    scheduler's (``σ_0``, or ``√(σ_0² + 1)`` for ``"leading"`` spacing).
    """

    schedulers = ("EulerDiscreteScheduler",)

    def __init__(self, timesteps, sigmas, *, prediction_type: str = "epsilon", init_noise_sigma: Optional[float] = None):
        super().__init__(timesteps, prediction_type, None)
        self.sigmas = float_sigmas(sigmas, self.num_steps, "EulerDiscreteScheduler.sigmas")
        s = self.sigmas
        self._set_tables(**ve_tables(s), dt=s[1:] - s[:-1])
        self.init_noise_sigma = float(s.max()) if init_noise_sigma is None else float(init_noise_sigma)
        if not (math.isfinite(self.init_noise_sigma) and self.init_noise_sigma > 0):
            raise InputValueError(f"init_noise_sigma must be a finite number > 0, got {init_noise_sigma!r}.")

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0, s_churn: float = 0.0):
        """The rule of ``scheduler`` (an ``EulerDiscreteScheduler``) after ``set_timesteps(num_inference_steps)``.

        ``s_churn`` is ``EulerDiscreteScheduler.step``'s churn; only 0 (the
        default, the deterministic sampler) is supported.
        """
        require_eta_zero(eta, "EulerDiscreteScheduler")
        if s_churn != 0:
            raise InputValueError(
                f"s_churn={s_churn!r} is not supported (Diffusers adds the churn noise after the model call, "
                "on a sample the model did not see); use s_churn=0, or EulerAncestralDiscreteScheduler for a "
                "stochastic sampler."
            )
        fresh, config = fresh_scheduler(scheduler, num_inference_steps)
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type == "original_sample":  # Diffusers' own alias of "sample" in this scheduler's step
            prediction_type = "sample"
        timesteps = fresh.timesteps.detach().cpu()
        # interpolation_type="log_linear" makes T + 2 sigmas; Diffusers' loop steps through the first T + 1
        # (ending at σ_min, not 0), and so does this rule.
        sigmas = fresh.sigmas.detach().cpu()[: timesteps.numel() + 1]
        return cls(timesteps, sigmas, prediction_type=prediction_type, init_noise_sigma=float(fresh.init_noise_sigma))

    def __repr__(self) -> str:
        return (
            f"EulerDiscreteRule(num_steps={self.num_steps}, prediction_type={self.prediction_type!r}, "
            f"sigma_max={float(self.sigmas[0]):.6g})"
        )

    def sigma_boundary(self) -> torch.Tensor:
        return self.sigmas.clone()

    def scale_model_input(self, x, step_index):
        idx = torch.as_tensor(step_index, device=x.device)
        return x / self._rows("in_scale", idx, x)

    def _advance(self, x, x0, idx):
        derivative = (x - x0) * self._rows("inv_sigma", idx, x)
        return x + derivative * self._rows("dt", idx, x)

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, history, noise)
        return self._advance(xc, ve_denoise(self, xc, mo, idx), idx).to(x.dtype), ()

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return ve_denoise(self, xc, mo, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        """The DDIM (η = 0) posterior mean in σ: ``x + (σ_{i+1}/σ_i − 1)(x − x̂_0)``, the step with ``D = x0``."""
        xc, x0c, idx, _, _ = self._check(x, x0, "x0", step_index, history, noise)
        return self._advance(xc, x0c, idx).to(x.dtype), ()
