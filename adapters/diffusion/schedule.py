r"""Variance-preserving noise schedules and inference timesteps, without a model library.

A VP forward process (DDPM, Ho et al. 2020, Eq. 4) noises clean data as
``x_t = α_t x_0 + σ_t ε`` with

* ``ᾱ_t = Π_{s ≤ t} (1 − β_s)``      (``alphas_cumprod``),
* ``α_t = sqrt(ᾱ_t)``, ``σ_t = sqrt(1 − ᾱ_t)``, ``α_t² + σ_t² = 1``,
* ``λ_t = log α_t − log σ_t``         (half the log-SNR of DPM-Solver, Lu et al. 2022),
* ``s_t = σ_t / α_t``                 (the "VE sigma" that DPM-Solver steps in).

The values produced here equal those of the Diffusers schedulers
(``DDPMScheduler``, ``DDIMScheduler``, ``DPMSolverMultistepScheduler``) bit for
bit, so a rule built from them steps exactly as a rule built from a scheduler.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from pitsolve import InputTypeError, InputValueError

__all__ = [
    "BETA_SCHEDULES",
    "TIMESTEP_SPACINGS",
    "TIMESTEP_KINDS",
    "FINAL_SIGMAS_TYPES",
    "make_betas",
    "VPSchedule",
    "make_timesteps",
    "dpmsolver_sigmas",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
TIMESTEP_KINDS = ("ddpm", "ddim", "dpmsolver")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputTypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise InputValueError(f"{name} must be >= 1, got {value}.")
    return int(value)


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise InputValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")
    return value


def make_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> torch.Tensor:
    """The training betas ``β_1 … β_T`` (float32, as Diffusers stores them).

    * ``"linear"`` — ``β`` evenly spaced from ``beta_start`` to ``beta_end`` (DDPM §4).
    * ``"scaled_linear"`` — ``sqrt(β)`` evenly spaced (Latent Diffusion / Stable Diffusion).
    * ``"squaredcos_cap_v2"`` — the cosine schedule of Nichol & Dhariwal (2021, Eq. 17):
      ``ᾱ(τ) = cos²((τ + 0.008)/1.008 · π/2)``, ``β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999)``
      (``beta_start``/``beta_end`` are ignored).
    """
    _choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    n = _positive_int("num_train_timesteps", num_train_timesteps)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float32) ** 2

    def abar(tau: float) -> float:
        return math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1.0 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


class VPSchedule:
    r"""A VP schedule given by ``ᾱ_t`` on the integer training timesteps ``t = 0 … T_train − 1``.

    All lookups are vectorised over integer timestep tensors and return float64.
    A negative timestep means "after the last step" (the clean end of the
    chain) and maps to ``final_alpha_cumprod`` (default 1: ``α = 1``, ``σ = 0``,
    ``λ = +∞``), the convention of DDPM's ``prev_t = −1``.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        if not isinstance(alphas_cumprod, torch.Tensor):
            alphas_cumprod = torch.as_tensor(alphas_cumprod)
        if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() == 0 or not alphas_cumprod.is_floating_point():
            raise InputValueError(
                f"alphas_cumprod must be a non-empty 1-D float tensor, got shape {tuple(alphas_cumprod.shape)} "
                f"and dtype {alphas_cumprod.dtype}."
            )
        ac = alphas_cumprod.detach().to("cpu", torch.float64)
        if not bool(((ac >= 0) & (ac <= 1)).all()):
            raise InputValueError("alphas_cumprod must lie in [0, 1] (ᾱ_t = Π(1 − β_s)); got values outside it.")
        #: ``ᾱ_t`` as float64 on the CPU (the exact values given, e.g. Diffusers' float32 ones).
        self.alphas_cumprod = ac

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> "VPSchedule":
        """``ᾱ = cumprod(1 − β)``, computed in the dtype of ``betas`` as Diffusers does."""
        return cls(torch.cumprod(1.0 - torch.as_tensor(betas), dim=0))

    @classmethod
    def from_config(
        cls,
        beta_schedule: str = "linear",
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> "VPSchedule":
        """The schedule of :func:`make_betas` with these arguments."""
        return cls.from_betas(make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    def alpha_cumprod(self, t, final_alpha_cumprod: float = 1.0) -> torch.Tensor:
        """``ᾱ_t`` (float64); negative ``t`` gives ``final_alpha_cumprod``."""
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.is_complex():
            raise InputTypeError(f"timesteps must be an integer tensor, got dtype {t.dtype}.")
        t = t.to("cpu", torch.long)
        if bool((t >= self.num_train_timesteps).any()):
            raise InputValueError(
                f"timestep {int(t.max())} is out of range for a schedule of {self.num_train_timesteps} "
                "training timesteps (valid: 0 … num_train_timesteps − 1, or negative for the clean end)."
            )
        final = torch.tensor(float(final_alpha_cumprod), dtype=torch.float64)
        return torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)], final)

    def alpha(self, t, final_alpha_cumprod: float = 1.0) -> torch.Tensor:
        """``α_t = sqrt(ᾱ_t)``, the signal scale."""
        return self.alpha_cumprod(t, final_alpha_cumprod).sqrt()

    def sigma(self, t, final_alpha_cumprod: float = 1.0) -> torch.Tensor:
        """``σ_t = sqrt(1 − ᾱ_t)``, the noise scale (the ``s_n`` of the stopping rule, Eq. 14)."""
        return (1.0 - self.alpha_cumprod(t, final_alpha_cumprod)).sqrt()

    def lambda_(self, t, final_alpha_cumprod: float = 1.0) -> torch.Tensor:
        """``λ_t = log α_t − log σ_t`` (DPM-Solver's half log-SNR; +∞ where ``σ_t = 0``)."""
        ac = self.alpha_cumprod(t, final_alpha_cumprod)
        return 0.5 * (ac.log() - (1.0 - ac).log())

    def __repr__(self) -> str:
        return f"VPSchedule(num_train_timesteps={self.num_train_timesteps})"


def make_timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    spacing: str = "leading",
    *,
    steps_offset: int = 0,
    kind: str = "ddim",
    last_timestep: Optional[int] = None,
) -> torch.Tensor:
    """Model timesteps in sampling order (a LongTensor ``[n]``), as Diffusers' ``set_timesteps(n)``.

    ``spacing`` follows Table 2 of Lin et al. (2024), "Common Diffusion Noise
    Schedules and Sample Steps are Flawed".  With ``T = num_train_timesteps``:

    * ``kind="ddpm"``/``"ddim"`` (identical rules), ``n`` points:

      - ``linspace``: ``round(linspace(0, T−1, n))``, reversed;
      - ``leading``: ``k·(T // n) + steps_offset`` for ``k = n−1 … 0``;
      - ``trailing``: ``round(T − k·T/n) − 1`` for ``k = 0 … n−1``.

    * ``kind="dpmsolver"``, ``n`` of ``n+1`` grid points (the clean end dropped):

      - ``linspace``: ``round(linspace(0, L−1, n+1))``, reversed, last dropped;
      - ``leading``: ``k·(L // (n+1)) + steps_offset`` for ``k = n … 1``;
      - ``trailing``: ``round(L − k·T/n) − 1`` for ``k = 0, 1, …`` while ``L − k·T/n > 0``.

    ``L = last_timestep`` (DPM-Solver only; default ``T``) is the number of
    training timesteps kept after Diffusers' ``lambda_min_clipped``: pass
    ``int((VPSchedule(...).lambda_(torch.arange(T)) >= lambda_min_clipped).sum())``.
    ``steps_offset`` is used by ``leading`` spacing only, as in Diffusers.
    """
    T = _positive_int("num_train_timesteps", num_train_timesteps)
    n = _positive_int("num_inference_steps", num_inference_steps)
    _choice("spacing", spacing, TIMESTEP_SPACINGS)
    _choice("kind", kind, TIMESTEP_KINDS)
    if isinstance(steps_offset, bool) or not isinstance(steps_offset, (int, np.integer)) or steps_offset < 0:
        raise InputValueError(f"steps_offset must be an int >= 0, got {steps_offset!r}.")
    if kind != "dpmsolver":
        if last_timestep is not None:
            raise InputValueError(
                f"last_timestep is a DPM-Solver option (lambda_min_clipped); kind={kind!r} takes none."
            )
        if n > T:
            raise InputValueError(
                f"num_inference_steps={n} exceeds num_train_timesteps={T}; a {kind.upper()} chain can visit "
                "each training timestep at most once."
            )
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, n).round()[::-1]
        elif spacing == "leading":
            ts = (np.arange(n) * (T // n)).round()[::-1] + steps_offset
        else:
            ts = np.round(np.arange(T, 0, -T / n)) - 1
    else:
        L = T if last_timestep is None else _positive_int("last_timestep", last_timestep)
        if L > T:
            raise InputValueError(f"last_timestep={L} exceeds num_train_timesteps={T}.")
        if spacing == "linspace":
            ts = np.linspace(0, L - 1, n + 1).round()[::-1][:-1]
        elif spacing == "leading":
            ts = (np.arange(n + 1) * (L // (n + 1))).round()[::-1][:-1] + steps_offset
        else:
            ts = np.arange(L, 0, -T / n).round() - 1
    return torch.from_numpy(np.ascontiguousarray(ts).astype(np.int64))


def dpmsolver_sigmas(
    alphas_cumprod: torch.Tensor,
    timesteps: torch.Tensor,
    final_sigmas_type: str = "zero",
) -> torch.Tensor:
    """DPM-Solver's step grid ``s_i = σ_{t_i}/α_{t_i} = sqrt((1 − ᾱ)/ᾱ)`` at ``timesteps``, plus the final one.

    Returns float64 ``[n+1]``: the plain (non-Karras) schedule of
    ``DPMSolverMultistepScheduler.sigmas``; the final entry is ``0`` for
    ``final_sigmas_type="zero"`` and ``s`` at training timestep 0 for
    ``"sigma_min"``.  The ratio is computed in the dtype of ``alphas_cumprod`` and
    rounded to float32, as Diffusers stores it, so float32 ``ᾱ`` reproduces
    Diffusers' array exactly.  (Karras, exponential, beta and Lu-lambda grids:
    build the rule from the scheduler, :func:`pitsolve.adapters.diffusers.rule_from_scheduler`.)
    """
    _choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
    ac = torch.as_tensor(alphas_cumprod)
    if ac.ndim != 1 or not ac.is_floating_point():
        raise InputValueError(
            f"alphas_cumprod must be a 1-D float tensor, got shape {tuple(ac.shape)}, dtype {ac.dtype}."
        )
    ts = torch.as_tensor(timesteps)
    if ts.ndim != 1 or ts.is_floating_point():
        raise InputValueError(
            f"timesteps must be a 1-D integer tensor, got shape {tuple(ts.shape)}, dtype {ts.dtype}."
        )
    if ts.numel() and (int(ts.min()) < 0 or int(ts.max()) >= ac.numel()):
        raise InputValueError(
            f"timesteps must lie in [0, {ac.numel() - 1}], got {int(ts.min())} … {int(ts.max())}."
        )
    ac = ac.detach().cpu()
    ratio = ((1 - ac) / ac) ** 0.5
    last = ratio[0:1] if final_sigmas_type == "sigma_min" else torch.zeros(1, dtype=ratio.dtype)
    return torch.cat([ratio[ts.long().cpu()], last]).to(torch.float32).to(torch.float64)
