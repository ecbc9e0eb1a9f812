r"""DDIM sampling (Song et al. 2021, Eq. 12 and 16) for any ``η ≥ 0``."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pitsolve import InputTypeError, InputValueError

from ..predictions import SampleClipping, eps_from_x0, model_output_to_x0_eps
from ..schedule import VPSchedule
from .base import StepRule, check_train_timesteps
from .registry import register
from .scheduler_config import fresh_scheduler

__all__ = ["DDIMRule"]


@register
class DDIMRule(StepRule):
    r"""One DDIM step ``x_t → x_{t'}``, batched over step indices.

    With ``ᾱ = ᾱ_t``, ``ᾱ' = ᾱ_{t'}`` (Song et al. write ``α_t`` for our ``ᾱ_t``),
    ``x̂_0`` the Eq. 16 prediction (DDIM's ``f_θ``, Eq. 9) and ``ε̂`` the noise
    prediction ("direction pointing to x_t"), Song et al. Eq. 12 and 16 read

    .. code-block:: text

        σ_i    = η · sqrt((1 − ᾱ') / (1 − ᾱ)) · sqrt(1 − ᾱ / ᾱ')              (Eq. 16)
        x_{t'} = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ_i²) ε̂ + σ_i z,  z ~ N(0, I)     (Eq. 12)

    ``η = 0`` is the deterministic DDIM ODE step, ``η = 1`` the DDPM posterior.
    Every step draws ``z`` when ``η > 0`` (as Diffusers does, the last step
    included, where ``σ_i = 0`` if ``set_alpha_to_one``).  ``x̂_0`` is clipped or
    thresholded per ``clipping`` (default: none); with
    ``use_clipped_model_output`` the noise is re-derived from the clipped
    ``x̂_0`` as ``ε̂ = (x_t − sqrt(ᾱ) x̂_0)/sqrt(1 − ᾱ)`` (GLIDE's choice).

    **Previous timestep (a deliberate difference from Diffusers).**  Here
    ``t' = timesteps[i+1]``, the next entry of the actual schedule, and after
    the last step ``ᾱ' = 1`` (``set_alpha_to_one=True``) or ``ᾱ_0``.
    Diffusers' ``DDIMScheduler.step`` (and ``DDIMParallelScheduler``) instead use a
    fixed stride ``t' = t − T_train // n``.  The two agree for ``"leading"``
    spacing (any ``n``, with ``steps_offset < T_train // n``) and for
    ``"trailing"`` spacing when ``n`` divides ``T_train``, and there this rule
    equals Diffusers.  For ``"linspace"`` spacing and for ``"trailing"`` with
    ``n`` not dividing ``T_train`` (e.g. 30 of 1000), the stride lands between
    schedule points: Diffusers then moves the sample to the noise level of
    ``t − stride`` but calls the model at ``timesteps[i+1]`` next, so model
    input and noise level disagree at every such step (a fault docs/design.md, "Diffusion samplers"
    names).  We follow the schedule, so ``x_{t'}`` has exactly the noise level
    the model is told.  At the last step both use the final ``ᾱ'`` (Diffusers
    only while the last timestep is below the stride, which holds except for
    ``"leading"`` with ``steps_offset >= T_train // n``).
    """

    #: The Diffusers classes whose ``step`` this rule reproduces (exact classes, not subclasses).
    schedulers = ("DDIMScheduler", "DDIMParallelScheduler")

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: Optional[float] = 0.0) -> "DDIMRule":
        """The rule of ``scheduler`` after ``set_timesteps(num_inference_steps)`` (on a fresh copy).

        ``eta`` is ``DDIMScheduler.step(eta=…)`` (``None``: 0, Diffusers' default).
        """
        if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta)):
            raise InputTypeError(f"eta must be a finite float, got {eta!r}.")
        fresh, _ = fresh_scheduler(scheduler, num_inference_steps)
        config = fresh.config
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.alphas_cumprod,
            eta=float(eta or 0.0),
            prediction_type=config.get("prediction_type", "epsilon"),
            clipping=SampleClipping.from_config(config),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
        )

    def __init__(
        self,
        timesteps,
        alphas_cumprod,
        *,
        eta: float = 0.0,
        prediction_type: str = "epsilon",
        clipping: Optional[SampleClipping] = None,
        use_clipped_model_output: bool = False,
        set_alpha_to_one: bool = True,
    ):
        super().__init__(timesteps, prediction_type, clipping)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)):
            raise InputTypeError(f"eta must be a float >= 0, got {eta!r}.")
        if not (math.isfinite(eta) and eta >= 0):
            raise InputValueError(f"eta must be a finite float >= 0 (0: DDIM, 1: DDPM posterior), got {eta!r}.")
        flags = (("use_clipped_model_output", use_clipped_model_output), ("set_alpha_to_one", set_alpha_to_one))
        for name, flag in flags:
            if not isinstance(flag, bool):
                raise InputTypeError(f"{name} must be a bool, got {flag!r}.")
        self.eta = float(eta)
        self.use_clipped_model_output = use_clipped_model_output
        self.set_alpha_to_one = set_alpha_to_one
        self.schedule = vp = VPSchedule(alphas_cumprod)
        check_train_timesteps(self.timesteps, vp.num_train_timesteps)
        final = 1.0 if set_alpha_to_one else float(vp.alphas_cumprod[0])
        t = self.timesteps
        abar = vp.alpha_cumprod(t)
        abar_next = vp.alpha_cumprod(torch.cat([t[1:], t.new_tensor([-1])]), final_alpha_cumprod=final)
        std = self.eta * ((1 - abar_next) / (1 - abar) * (1 - abar / abar_next)).sqrt()
        direction_sq = 1 - abar_next - std**2
        bad = direction_sq < -1e-12
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise InputValueError(
                f"eta={eta} makes 1 − ᾱ' − σ² negative at step {i} (timestep {int(t[i])}), so Eq. 12 has no "
                "real solution; use a smaller eta (eta <= 1 is always valid)."
            )
        self._set_noise_steps(torch.full((self.num_steps,), self.eta > 0))
        self._set_tables(
            alpha=abar.sqrt(),
            sigma=(1 - abar).sqrt(),
            c_x0=abar_next.sqrt(),
            c_eps=direction_sq.clamp(min=0).sqrt(),
            std=std,
        )
        self._sigma_boundary = torch.cat([(1 - abar).sqrt(), (1 - abar_next[-1:]).sqrt()])

    def __repr__(self) -> str:
        return f"DDIMRule(num_steps={self.num_steps}, eta={self.eta}, prediction_type={self.prediction_type!r})"

    def sigma_boundary(self) -> torch.Tensor:
        return self._sigma_boundary.clone()

    def _x0_eps(self, x, model_output, idx):
        alpha, sigma = self._rows("alpha", idx, x), self._rows("sigma", idx, x)
        x0, eps = model_output_to_x0_eps(model_output, x, alpha, sigma, self.prediction_type)
        x0 = self.clipping.apply(x0)
        if self.use_clipped_model_output:
            eps = eps_from_x0(x, x0, alpha, sigma)
        return x0, eps

    def _advance(self, x, x0, eps, idx, noise):
        out = self._rows("c_x0", idx, x) * x0 + self._rows("c_eps", idx, x) * eps
        if noise is None:
            return out
        return torch.where(self._rows("noise", idx, x), out + self._rows("std", idx, x) * noise, out)

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, _, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        x0, eps = self._x0_eps(xc, mo, idx)
        return self._advance(xc, x0, eps, idx, noise).to(x.dtype), ()

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return self._x0_eps(xc, mo, idx)[0].to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        xc, x0c, idx, _, noise = self._check(x, x0, "x0", step_index, history, noise)
        eps = eps_from_x0(xc, x0c, self._rows("alpha", idx, xc), self._rows("sigma", idx, xc))
        return self._advance(xc, x0c, eps, idx, noise).to(x.dtype), ()
