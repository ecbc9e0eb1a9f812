r"""Multistep DPM-Solver and DPM-Solver++ (Lu et al. 2022a, 2022b), orders 1–3, with explicit history."""

from __future__ import annotations

from typing import Optional

import torch

from pitsolve import InputTypeError, InputValueError

from ..predictions import SampleClipping, eps_from_x0, model_output_to_x0_eps
from ..schedule import FINAL_SIGMAS_TYPES
from .base import StepRule
from .registry import register
from .scheduler_config import fresh_scheduler, require_eta_zero

__all__ = ["DPMSolverMultistepRule", "DPM_ALGORITHM_TYPES", "DPM_SOLVER_TYPES"]

DPM_ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
DPM_SOLVER_TYPES = ("midpoint", "heun")


def _choice(name, value, allowed, extra=""):
    if value not in allowed:
        raise InputValueError(
            f"{name}={value!r} is not supported{extra}; choose one of {', '.join(map(repr, allowed))}."
        )


@register
class DPMSolverMultistepRule(StepRule):
    r"""One multistep DPM-Solver(++) step ``x_{s_i} → x_{s_{i+1}}``, batched over step indices.

    The grid is DPM-Solver's ``sigmas`` ``[T+1]`` (``s = σ/α``, as
    ``DPMSolverMultistepScheduler.sigmas``; any grid — plain, Karras,
    exponential, beta, Lu-lambda — works), with ``α_i = 1/sqrt(1 + s_i²)``,
    ``σ_i = s_i α_i``, ``λ_i = log α_i − log σ_i``, ``h = λ_{i+1} − λ_i``,
    ``h_0 = λ_i − λ_{i−1}``, ``h_1 = λ_{i−1} − λ_{i−2}``, ``r_0 = h_0/h``, ``r_1 = h_1/h``.

    The converted model output ``m_i`` is the data prediction ``x̂_0`` (Eq. 16,
    thresholded per ``clipping``) for ``"dpmsolver++"`` and the noise prediction
    ``ε̂`` for ``"dpmsolver"``.  With ``D_0 = m_i``,
    ``D_1 = (m_i − m_{i−1})/r_0`` (order 2) or, at order 3,
    ``D_1^0 = (m_i − m_{i−1})/r_0``, ``D_1^1 = (m_{i−1} − m_{i−2})/r_1``,
    ``D_1 = D_1^0 + r_0/(r_0 + r_1)·(D_1^0 − D_1^1)``, ``D_2 = (D_1^0 − D_1^1)/(r_0 + r_1)``:

    .. code-block:: text

        DPM-Solver++ (Lu et al. 2022b, Alg. 1–2; order 3 as Diffusers):
          x' = (σ'/σ) x − α'(e^{−h} − 1) D_0 + c_1 D_1 − α'((e^{−h} − 1 + h)/h² − ½) D_2
          c_1 = −½ α'(e^{−h} − 1) (midpoint, order 2),  α'((e^{−h} − 1)/h + 1) (heun, order 2; order 3)
        DPM-Solver (Lu et al. 2022a, Eq. 3.7 and the multistep variants):
          x' = (α'/α) x − σ'(e^{h} − 1) D_0 + c_1 D_1 − σ'((e^{h} − 1 − h)/h² − ½) D_2
          c_1 = −½ σ'(e^{h} − 1) (midpoint, order 2),  −σ'((e^{h} − 1)/h − 1) (heun, order 2; order 3)

    (primes: step ``i+1``; terms of a higher order than the step's are absent.)
    Order 1 is DDIM (η = 0) in either algorithm.

    **The order at step i is a pure function of i** (tabulated in
    :attr:`step_orders`), reproducing Diffusers' warm-up and final steps:
    ``min(solver_order, i + 1)``, reduced to 1 at the last step when
    ``euler_at_final``, ``final_sigmas_type == "zero"`` or (``lower_order_final``
    and ``T < 15``), and to at most 2 at the second-to-last step when
    ``lower_order_final`` and ``T < 15``.  The previous outputs
    ``m_{i−1}, m_{i−2}`` come from ``history`` (most recent first), so a batch
    of rows at different steps gives the sequential multistep result exactly.
    The returned history is ``(m_i, m_{i−1}, …)`` with entries that would refer
    to steps before 0 set to zero.

    Deliberate differences from Diffusers: float64 inputs are stepped in
    float64 (Diffusers downcasts the update to float32); the stochastic
    ``"sde-dpmsolver"``/``"sde-dpmsolver++"`` variants, flow sigmas and learned
    variances are not supported.  ``clipping`` may also hold fixed clipping
    (Diffusers' DPM scheduler only thresholds).
    """

    #: The Diffusers class whose ``step`` this rule reproduces (the exact class, not subclasses).
    schedulers = ("DPMSolverMultistepScheduler",)

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0):
        """The rule of ``scheduler`` after ``set_timesteps(num_inference_steps)`` (on a fresh copy).

        Its ``sigmas`` (so Karras, exponential, beta and Lu-lambda grids carry
        over) and solver options define the rule.  The stochastic variants
        (``algorithm_type="sde-dpmsolver++"``/``"sde-dpmsolver"``) are served by
        the generic bridge (:class:`~pitsolve.adapters.diffusion.rules.bridge.SchedulerBridgeRule`),
        with their noise fixed up front.  ``eta`` must be 0 (or ``None``).
        """
        require_eta_zero(eta, type(scheduler).__name__)
        if str(scheduler.config.get("algorithm_type", "dpmsolver++")).startswith("sde-"):
            from .bridge import SchedulerBridgeRule

            return SchedulerBridgeRule.from_scheduler(scheduler, num_inference_steps)
        fresh, _ = fresh_scheduler(scheduler, num_inference_steps)
        config = fresh.config
        _reject(config, "use_flow_sigmas", (False,), "flow-matching sigmas are not a VP schedule")
        if config.get("variance_type") in ("learned", "learned_range"):
            # Diffusers' DPM-Solver reads only these two values; any other (e.g. DDPM's "fixed_small",
            # carried over by from_config) leaves the step unchanged there too.
            raise InputValueError(
                f"scheduler config variance_type={config.get('variance_type')!r} is not supported "
                "(learned variances are not read); use a model without learned variance."
            )
        if config.get("prediction_type") == "flow_prediction":
            raise InputValueError(
                "scheduler config prediction_type='flow_prediction' is not supported; supported: "
                "'epsilon', 'v_prediction', 'sample'."
            )
        thresholding = SampleClipping.from_config({k: v for k, v in config.items() if k != "clip_sample"})
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.sigmas,
            algorithm_type=config.get("algorithm_type", "dpmsolver++"),
            solver_order=config.get("solver_order", 2),
            solver_type=config.get("solver_type", "midpoint"),
            prediction_type=config.get("prediction_type", "epsilon"),
            lower_order_final=bool(config.get("lower_order_final", True)),
            euler_at_final=bool(config.get("euler_at_final", False)),
            final_sigmas_type=config.get("final_sigmas_type", "zero"),
            clipping=thresholding,
        )

    def __init__(
        self,
        timesteps,
        sigmas,
        *,
        algorithm_type: str = "dpmsolver++",
        solver_order: int = 2,
        solver_type: str = "midpoint",
        prediction_type: str = "epsilon",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        final_sigmas_type: str = "zero",
        clipping: Optional[SampleClipping] = None,
    ):
        super().__init__(timesteps, prediction_type, clipping)
        sde = " (the stochastic SDE variants are not supported)" if str(algorithm_type).startswith("sde-") else ""
        _choice("algorithm_type", algorithm_type, DPM_ALGORITHM_TYPES, sde)
        _choice("solver_type", solver_type, DPM_SOLVER_TYPES)
        _choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        if isinstance(solver_order, bool) or solver_order not in (1, 2, 3):
            raise InputValueError(f"solver_order={solver_order!r} is not supported; choose 1, 2 or 3.")
        for name, flag in (("lower_order_final", lower_order_final), ("euler_at_final", euler_at_final)):
            if not isinstance(flag, bool):
                raise InputTypeError(f"{name} must be a bool, got {flag!r}.")
        if algorithm_type == "dpmsolver" and final_sigmas_type == "zero":
            raise InputValueError(
                "final_sigmas_type='zero' is not supported for algorithm_type='dpmsolver' (the noise-prediction "
                "step is undefined at σ = 0); use final_sigmas_type='sigma_min' or algorithm_type='dpmsolver++'."
            )
        if int(self.timesteps.min()) < 0:
            raise InputValueError(f"timesteps must be >= 0, got {self.timesteps.tolist()}.")
        self.algorithm_type = algorithm_type
        self.solver_order = int(solver_order)
        self.solver_type = solver_type
        self.lower_order_final = lower_order_final
        self.euler_at_final = euler_at_final
        self.final_sigmas_type = final_sigmas_type
        self.history_size = self.solver_order - 1
        self.sigmas = s = self._check_sigmas(sigmas)

        T = self.num_steps
        #: ``[T]`` how many converted outputs (current and previous) step ``i`` combines: its multistep order.
        self.step_orders = torch.tensor([self._order_at(i) for i in range(T)], dtype=torch.long)
        order, i = self.step_orders, torch.arange(T)

        alpha = 1 / (s**2 + 1).sqrt()
        sigma = s * alpha
        lam = alpha.log() - sigma.log()  # +inf at a zero final sigma
        a_s, a_t, sig_s, sig_t = alpha[:-1], alpha[1:], sigma[:-1], sigma[1:]
        h = lam[1:] - lam[:-1]
        nan = torch.full((T,), float("nan"), dtype=torch.float64)
        h0 = torch.cat([nan[:1], h[:-1]])  # λ_i − λ_{i−1}
        h1 = torch.cat([nan[:2], h[:-2]])[:T]  # λ_{i−1} − λ_{i−2}
        r0, r1 = h0 / h, h1 / h
        if algorithm_type == "dpmsolver++":
            em = torch.expm1(-h)  # e^{−h} − 1
            c_x, c0 = sig_t / sig_s, -a_t * em
            c1_3 = a_t * (em / h + 1)  # also order 2 "heun"
            c1_2 = -0.5 * a_t * em if solver_type == "midpoint" else c1_3
            c2 = -a_t * ((em + h) / h**2 - 0.5)
        else:
            ep = torch.expm1(h)  # e^{h} − 1
            c_x, c0 = a_t / a_s, -sig_t * ep
            c1_3 = -sig_t * (ep / h - 1)  # also order 2 "heun"
            c1_2 = -0.5 * sig_t * ep if solver_type == "midpoint" else c1_3
            c2 = -sig_t * ((ep - h) / h**2 - 0.5)
        zero = torch.zeros(T, dtype=torch.float64)
        o2, o3 = order == 2, order == 3
        self._set_tables(
            alpha=a_s,
            sigma=sig_s,
            c_x=c_x,
            c0=c0,
            c1=torch.where(o2, c1_2, torch.where(o3, c1_3, zero)),
            c2=torch.where(o3, c2, zero),
            inv_r0=torch.where(order >= 2, 1 / r0, zero),
            inv_r1=torch.where(o3, 1 / r1, zero),
            k3=torch.where(o3, r0 / (r0 + r1), zero),
            inv_r01=torch.where(o3, 1 / (r0 + r1), zero),
            use1=order >= 2,
            use2=o3,
            **{f"after{j}": i >= j for j in range(1, self.solver_order)},
        )
        self._sigma_boundary = sigma.clone()

    def _order_at(self, i: int) -> int:
        """Diffusers' order at step ``i``: its ``lower_order_nums`` warm-up is ``min(i, solver_order)``."""
        T = self.num_steps
        short = self.lower_order_final and T < 15
        euler_final = i == T - 1 and (self.euler_at_final or short or self.final_sigmas_type == "zero")
        if self.solver_order == 1 or i == 0 or euler_final:
            return 1
        if self.solver_order == 2 or i == 1 or (i == T - 2 and short):
            return 2
        return 3

    def _check_sigmas(self, sigmas) -> torch.Tensor:
        s = torch.as_tensor(sigmas)
        if s.ndim != 1 or s.numel() != self.num_steps + 1 or not s.is_floating_point():
            raise InputValueError(
                f"sigmas must be a 1-D float tensor of length num_steps + 1 = {self.num_steps + 1} "
                f"(DPMSolverMultistepScheduler.sigmas), got shape {tuple(s.shape)} and dtype {s.dtype}."
            )
        s = s.detach().to("cpu", torch.float64)
        if not bool(torch.isfinite(s).all()) or not bool((s[:-1] > 0).all()) or float(s[-1]) < 0:
            raise InputValueError("sigmas must be finite, > 0 before the last entry and >= 0 at the last.")
        if (float(s[-1]) == 0) != (self.final_sigmas_type == "zero"):
            raise InputValueError(
                f"final_sigmas_type={self.final_sigmas_type!r} does not match the last sigma {float(s[-1])!r} "
                "(zero: 0; sigma_min: > 0)."
            )
        return s

    def __repr__(self) -> str:
        return (
            f"DPMSolverMultistepRule(num_steps={self.num_steps}, algorithm_type={self.algorithm_type!r}, "
            f"solver_order={self.solver_order}, solver_type={self.solver_type!r}, "
            f"prediction_type={self.prediction_type!r})"
        )

    def sigma_boundary(self) -> torch.Tensor:
        return self._sigma_boundary.clone()

    # ------------------------------------------------------------------ conversion
    def _x0(self, x, model_output, idx):
        alpha, sigma = self._rows("alpha", idx, x), self._rows("sigma", idx, x)
        x0, eps = model_output_to_x0_eps(model_output, x, alpha, sigma, self.prediction_type)
        if self.algorithm_type == "dpmsolver":
            x0 = (x - sigma * eps) / alpha  # the x̂_0 Diffusers thresholds for the noise algorithm
        return self.clipping.apply(x0), eps

    def _convert(self, x, model_output, idx):
        """``m_i``: ``x̂_0`` (DPM-Solver++) or ``ε̂`` (DPM-Solver), after clipping/thresholding."""
        x0, eps = self._x0(x, model_output, idx)
        if self.algorithm_type == "dpmsolver++":
            return x0
        if not self.clipping.active:
            return eps
        return eps_from_x0(x, x0, self._rows("alpha", idx, x), self._rows("sigma", idx, x))

    # ------------------------------------------------------------------ update
    def _advance(self, x, m0, idx, history):
        out = self._rows("c_x", idx, x) * x + self._rows("c0", idx, x) * m0
        if self.solver_order == 1:
            return out, ()
        zero = m0.new_zeros(())
        m1 = torch.where(self._rows("use1", idx, x), history[0], zero)
        d1 = (m0 - m1) * self._rows("inv_r0", idx, x)
        if self.solver_order == 3:
            m2 = torch.where(self._rows("use2", idx, x), history[1], zero)
            d1_1 = (m1 - m2) * self._rows("inv_r1", idx, x)
            diff = d1 - d1_1
            out = out + self._rows("c1", idx, x) * (d1 + self._rows("k3", idx, x) * diff)
            out = out + self._rows("c2", idx, x) * (diff * self._rows("inv_r01", idx, x))
        else:
            out = out + self._rows("c1", idx, x) * d1
        pushed = (m0,) + tuple(history[:-1])
        new_history = tuple(
            m if j == 0 else torch.where(self._rows(f"after{j}", idx, x), m, zero) for j, m in enumerate(pushed)
        )
        return out, new_history

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, hist, _ = self._check(x, model_output, "model_output", step_index, history, noise)
        out, new_history = self._advance(xc, self._convert(xc, mo, idx), idx, hist)
        return out.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return self._x0(xc, mo, idx)[0].to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        xc, x0c, idx, hist, _ = self._check(x, x0, "x0", step_index, history, noise)
        if self.algorithm_type == "dpmsolver++":
            m0 = x0c
        else:
            m0 = eps_from_x0(xc, x0c, self._rows("alpha", idx, xc), self._rows("sigma", idx, xc))
        out, new_history = self._advance(xc, m0, idx, hist)
        return out.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)


def _reject(config, key, allowed, why: str) -> None:
    value = config.get(key, allowed[0])
    if value not in allowed:
        raise InputValueError(f"scheduler config {key}={value!r} is not supported ({why}); supported: {allowed}.")
