r"""Euler on the flow-matching ODE (Lipman et al. 2023; Esser et al. 2024, SD3), as ``FlowMatchEulerDiscreteScheduler``."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pitsolve import InputTypeError, InputValueError

from .base import StepRule
from .registry import register
from .scheduler_config import float_sigmas, fresh_scheduler, require, require_eta_zero

__all__ = ["FlowMatchEulerRule"]


@register
class FlowMatchEulerRule(StepRule):
    r"""One Euler step of the flow-matching ODE ``x_{σ_i} → x_{σ_{i+1}}``, batched over step indices.

    The forward process is the straight (rectified-flow) interpolation
    ``x_σ = (1 − σ) x_0 + σ ε`` (Lipman et al. 2023, Eq. 20 with
    ``σ_min = 0``; Esser et al. 2024, Eq. 2–3 with ``a_t = 1 − t``, ``b_t = t``),
    and the model predicts its velocity ``v = dx_σ/dσ = ε − x_0``
    (Esser et al. Eq. 6's ``u_t``).  The step is explicit Euler in σ:

    .. code-block:: text

        x_{i+1} = x_i + (σ_{i+1} − σ_i) v̂(x_i, σ_i)                                  (deterministic)
        x̂_0     = x_i − σ_i v̂,   x_{i+1} = (1 − σ_{i+1}) x̂_0 + σ_{i+1} z,  z ~ N(0, I)  (stochastic_sampling)

    The model is called with ``x_i`` unscaled at timestep ``σ_i·N``
    (``N = num_train_timesteps``), the scheduler's ``timesteps``; any σ grid
    of the scheduler works (``shift``, dynamic shifting with ``mu``,
    ``shift_terminal``, Karras/exponential/beta σ).  :meth:`denoise` is
    ``x̂_0 = x − σ v̂``, and :meth:`posterior_step` the flow-matching
    interpolation through ``x̂_0``:
    ``x_{i+1} = (1 − σ_{i+1}) x̂_0 + σ_{i+1} ε̂`` with
    ``ε̂ = (x_i − (1 − σ_i) x̂_0)/σ_i`` — with the model's ``x̂_0`` exactly the
    Euler step (and, with ``stochastic_sampling``, ``ε̂`` replaced by fresh
    noise, again the step).
    """

    schedulers = ("FlowMatchEulerDiscreteScheduler",)
    prediction_types = ("flow_prediction",)

    def __init__(self, timesteps, sigmas, *, stochastic_sampling: bool = False):
        super().__init__(timesteps, "flow_prediction", None)
        if not isinstance(stochastic_sampling, bool):
            raise InputTypeError(f"stochastic_sampling must be a bool, got {stochastic_sampling!r}.")
        self.sigmas = s = float_sigmas(sigmas, self.num_steps, "FlowMatchEulerDiscreteScheduler.sigmas")
        if float(s.max()) > 1:
            raise InputValueError(
                f"flow-matching sigmas must lie in [0, 1] (x = (1 − σ) x_0 + σ ε), got a maximum of {float(s.max())}."
            )
        self.stochastic_sampling = stochastic_sampling
        self.init_noise_sigma = 1.0
        s_from, s_to = s[:-1], s[1:]
        self._set_tables(sigma=s_from, dt=s_to - s_from, keep=1 - s_from, next_keep=1 - s_to, next_sigma=s_to,
                         inv_sigma=1 / s_from)
        self._set_noise_steps(torch.full((self.num_steps,), stochastic_sampling))

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0, mu: Optional[float] = None):
        """The rule of ``scheduler`` (a ``FlowMatchEulerDiscreteScheduler``) after ``set_timesteps``.

        ``mu`` is the resolution-dependent shift Diffusers' ``set_timesteps``
        requires with ``use_dynamic_shifting`` (pipelines compute it from the
        image's token count with ``calculate_shift``).  A shift set with
        ``scheduler.set_shift`` carries over.
        """
        require_eta_zero(eta, "FlowMatchEulerDiscreteScheduler")
        config = scheduler.config
        require(config, "invert_sigmas", (False,), "Mochi's inverted σ schedule integrates towards σ = 1")
        dynamic = bool(config.get("use_dynamic_shifting", False))
        if dynamic and mu is None:
            raise InputValueError(
                "the scheduler has use_dynamic_shifting=True, so set_timesteps needs mu (the resolution-dependent "
                "shift, e.g. diffusers' calculate_shift(image_seq_len, ...)); pass mu=<float>."
            )
        if mu is not None:
            if not dynamic:
                raise InputValueError(
                    f"mu={mu!r} has no effect without use_dynamic_shifting=True (the scheduler uses its fixed shift "
                    f"{config.get('shift', 1.0)}); drop mu, or enable dynamic shifting in the config."
                )
            if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu):
                raise InputTypeError(f"mu must be a finite float, got {mu!r}.")
        kwargs = {"mu": float(mu)} if dynamic else {}
        # A shift set with set_shift() lives outside the config: carry it over before set_timesteps.
        fresh, config = fresh_scheduler(
            scheduler, num_inference_steps, prepare=lambda new: new.set_shift(scheduler.shift), **kwargs
        )
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.sigmas.detach().cpu(),
            stochastic_sampling=bool(config.get("stochastic_sampling", False)),
        )

    def __repr__(self) -> str:
        return (
            f"FlowMatchEulerRule(num_steps={self.num_steps}, stochastic_sampling={self.stochastic_sampling}, "
            f"sigma_max={float(self.sigmas[0]):.6g})"
        )

    def sigma_boundary(self) -> torch.Tensor:
        return self.sigmas.clone()

    def _x0(self, x, v, idx):
        return x - self._rows("sigma", idx, x) * v

    def _renoise(self, x0, idx, noise):
        return self._rows("next_keep", idx, x0) * x0 + self._rows("next_sigma", idx, x0) * noise

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, v, idx, _, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        if self.stochastic_sampling:
            out = self._renoise(self._x0(xc, v, idx), idx, noise)
        else:
            out = xc + self._rows("dt", idx, xc) * v
        return out.to(x.dtype), ()

    def denoise(self, x, model_output, step_index):
        xc, v, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return self._x0(xc, v, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        xc, x0c, idx, _, noise = self._check(x, x0, "x0", step_index, history, noise)
        if not self.stochastic_sampling:
            noise = (xc - self._rows("keep", idx, xc) * x0c) * self._rows("inv_sigma", idx, xc)  # ε̂
        return self._renoise(x0c, idx, noise).to(x.dtype), ()
