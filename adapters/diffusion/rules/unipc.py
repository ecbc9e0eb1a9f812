r"""UniPC (Zhao et al. 2023): the multistep predictor UniP and corrector UniC, orders 1–3, with explicit history."""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch

from pitsolve import InputTypeError, InputValueError

from ..predictions import SampleClipping, eps_from_x0, model_output_to_x0_eps
from .base import StepRule
from .registry import register
from .scheduler_config import float_sigmas, fresh_scheduler, require_eta_zero

__all__ = ["UniPCMultistepRule", "UNIPC_SOLVER_TYPES"]

UNIPC_SOLVER_TYPES = ("bh2", "bh1")


def _bh_system(hh: float, rks: List[float], order: int, solver_type: str):
    """``(hφ_1(hh), B(h), R, b)`` of Zhao et al. 2023, Alg. 1–2 / Eq. 8, as Diffusers builds them.

    ``R[j] = r^{j}`` (``j = 0 … order−1``, ``r = (r_1, …, r_{order−1}, 1)``) and
    ``b[j] = hφ_{j+2}(hh)·(j+1)!/B(h)`` with the recursion
    ``hφ_{k+1} = hφ_k/hh − 1/(k+1)!``; ``B(h) = hh`` (B1) or ``e^{hh} − 1`` (B2).
    """
    hh_t = torch.tensor(hh, dtype=torch.float64)
    h_phi_1 = torch.expm1(hh_t)
    h_phi_k = h_phi_1 / hh_t - 1
    B_h = hh_t if solver_type == "bh1" else torch.expm1(hh_t)
    r = torch.tensor(rks + [1.0], dtype=torch.float64)
    R, b, factorial = [], [], 1
    for j in range(1, order + 1):
        R.append(r ** (j - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh_t - 1 / factorial
    return float(h_phi_1), float(B_h), torch.stack(R), torch.stack(b)


@register
class UniPCMultistepRule(StepRule):
    r"""One UniPC step (corrector UniC of the last step, then predictor UniP), batched over step indices.

    With the scheduler's grid ``σ_i`` (VP: ``α_i = 1/√(σ_i² + 1)``,
    ``σ'_i = σ_i α_i``; flow sigmas: ``α_i = 1 − σ_i``), ``λ_i = log α_i − log σ'_i``,
    ``h_i = λ_{i+1} − λ_i``, ``r_k = (λ_{i−k} − λ_i)/h_i`` and ``m_i`` the converted
    model output (``x̂_0`` for ``predict_x0``, thresholded as configured; else ``ε̂``),
    the B(h) predictor of order ``p`` (Zhao et al. 2023, Alg. 2, UniP-p; data
    prediction: ``hh = −h``, ``A = σ'_{i+1}/σ'_i``, ``c = α_{i+1}``; noise
    prediction: ``hh = h``, ``A = α_{i+1}/α_i``, ``c = σ'_{i+1}``) is

    .. code-block:: text

        x_{i+1} = A x_i^c − c (e^{hh} − 1) m_i − c B(h) Σ_{k<p} ρ^p_k (m_{i−k} − m_i)/r_k      (UniP-p)
        ρ^p     = ½ (p = 2),  R_{p−1}^{−1} b_{p−1} (p = 3)

    and the corrector UniC-q (Alg. 2, Eq. 8), run at the start of step ``i``
    once the model output ``m_i`` at the predicted ``x_i`` is known, redoes the
    previous predictor step ``i−1 → i`` (order ``q = p_{i−1}``) with ``m_i``
    added:

    .. code-block:: text

        x_i^c = A x_{i−1}^c − c (e^{hh} − 1) m_{i−1}
                − c B(h) (Σ_{k<q} ρ^c_k (m_{i−1−k} − m_{i−1})/r_k + ρ^c_q (m_i − m_{i−1}))        (UniC-q)
        ρ^c   = ½ (q = 1),  R_q^{−1} b_q (q > 1)

    with ``R``, ``b`` from :func:`_bh_system`.  So ``step(i)`` is UniC of the
    previous predictor (skipped at ``i = 0`` and after steps in
    ``disable_corrector``), then UniP from the corrected sample; the model is
    called at the *predicted* sample, as in Diffusers' loop, and the system's
    state holds that predicted sample.  ``history`` carries
    ``(x_{i−1}^c, m_{i−1}, …, m_{i−order})`` (most recent first: the last
    predictor's input sample and the previous converted outputs), which makes
    ``step`` pure: rows at different steps give the sequential result.

    The order at step ``i`` is ``min(solver_order, i + 1, T − i)`` (the last
    term with ``lower_order_final``), tabulated in :attr:`step_orders`.
    Not supported: ``solver_p`` (another scheduler as predictor), a final
    σ of zero with ``predict_x0=False`` or with ``lower_order_final=False``
    above order 1 (Diffusers' step divides by zero there and returns inf/NaN).

    Deliberate differences from Diffusers: coefficients are computed in
    float64 (Diffusers solves for ``ρ`` in float32, which moves a float32
    sample by up to a few 1e-6 relative on short Karras grids at order 3; with
    its σ table upcast to float64 the two agree to round-off).  With ``"bh1"``
    and a final σ of zero, Diffusers' last step multiplies ``B(h) = −∞`` by an
    empty sum and returns NaN; here the empty sum is absent and the last step
    returns its limit ``x̂_0``, as ``"bh2"`` does.
    """

    schedulers = ("UniPCMultistepScheduler",)
    prediction_types = ("epsilon", "v_prediction", "sample", "flow_prediction")

    def __init__(
        self,
        timesteps,
        sigmas,
        *,
        solver_order: int = 2,
        solver_type: str = "bh2",
        prediction_type: str = "epsilon",
        predict_x0: bool = True,
        lower_order_final: bool = True,
        disable_corrector: Sequence[int] = (),
        flow_sigmas: bool = False,
        clipping: Optional[SampleClipping] = None,
    ):
        super().__init__(timesteps, prediction_type, clipping)
        if solver_type not in UNIPC_SOLVER_TYPES:
            raise InputValueError(
                f"solver_type={solver_type!r} is not supported; choose one of {', '.join(map(repr, UNIPC_SOLVER_TYPES))}."
            )
        if isinstance(solver_order, bool) or solver_order not in (1, 2, 3):
            raise InputValueError(f"solver_order={solver_order!r} is not supported; choose 1, 2 or 3.")
        for name, flag in (("predict_x0", predict_x0), ("lower_order_final", lower_order_final),
                           ("flow_sigmas", flow_sigmas)):
            if not isinstance(flag, bool):
                raise InputTypeError(f"{name} must be a bool, got {flag!r}.")
        try:
            disabled = sorted({int(i) for i in disable_corrector})
        except (TypeError, ValueError):
            raise InputTypeError(
                f"disable_corrector must be a sequence of step indices, got {disable_corrector!r}."
            ) from None
        if prediction_type == "flow_prediction" and not (flow_sigmas and predict_x0):
            raise InputValueError(
                "prediction_type='flow_prediction' needs use_flow_sigmas=True and predict_x0=True (as Diffusers' "
                "UniPC); use a flow-sigma scheduler config, or another prediction_type."
            )
        self.solver_order, self.solver_type = int(solver_order), solver_type
        self.predict_x0, self.lower_order_final = predict_x0, lower_order_final
        self.disable_corrector, self.flow_sigmas = tuple(disabled), flow_sigmas
        self.history_size = 1 + self.solver_order
        self.init_noise_sigma = 1.0
        self.sigmas = s = float_sigmas(sigmas, self.num_steps, "UniPCMultistepScheduler.sigmas")
        if flow_sigmas:
            if float(s.max()) >= 1:
                raise InputValueError(f"flow sigmas must lie in [0, 1), got a maximum of {float(s.max())}.")
            alpha, sigma = 1 - s, s
        else:
            alpha = 1 / (s**2 + 1).sqrt()
            sigma = s * alpha
        T = self.num_steps
        final_zero = float(s[-1]) == 0
        if final_zero and not predict_x0:
            raise InputValueError(
                "predict_x0=False with final_sigmas_type='zero' is not supported (the noise-prediction step is "
                "undefined at σ = 0: Diffusers returns NaN); use predict_x0=True or final_sigmas_type='sigma_min'."
            )
        if final_zero and not lower_order_final and self.solver_order > 1 and T > 1:
            raise InputValueError(
                f"lower_order_final=False with solver_order={solver_order} and final_sigmas_type='zero' is not "
                "supported (the last step's multistep terms divide by λ = ∞: Diffusers returns inf/NaN); use "
                "lower_order_final=True or final_sigmas_type='sigma_min'."
            )
        self._alpha, self._sigma = alpha, sigma
        lam = alpha.log() - sigma.log()  # +inf at a zero final sigma
        #: ``[T]`` the predictor's order at each step (the corrector at step i uses ``step_orders[i−1]``).
        self.step_orders = torch.tensor(
            [min(self.solver_order, i + 1, T - i if lower_order_final else self.solver_order) for i in range(T)],
            dtype=torch.long,
        )
        self._build_tables(lam, alpha, sigma)
        self._sigma_boundary = sigma.clone()

    # ------------------------------------------------------------------ tables
    def _build_tables(self, lam, alpha, sigma) -> None:
        T, K = self.num_steps, self.solver_order
        z = lambda: torch.zeros(T, dtype=torch.float64)  # noqa: E731
        A, B, P = z(), z(), [z() for _ in range(K)]  # predictor: P[k] multiplies (m_{i−k} − m_i), k ≥ 1
        C0, C = z(), [z() for _ in range(K)]  # corrector at step i: C0 · (m_i − m_{i−1}), C[k] · (m_{i−1−k} − m_{i−1})
        use_corr = torch.zeros(T, dtype=torch.bool)
        for i in range(T):
            p = int(self.step_orders[i])
            h = float(lam[i + 1] - lam[i])
            hh = -h if self.predict_x0 else h
            if self.predict_x0:
                A[i], c = float(sigma[i + 1] / sigma[i]), float(alpha[i + 1])
            else:
                A[i], c = float(alpha[i + 1] / alpha[i]), float(sigma[i + 1])
            rks = [float(lam[i - k] - lam[i]) / h for k in range(1, p)]
            h_phi_1, B_h, R, b = _bh_system(hh, rks, p, self.solver_type)
            B[i] = -c * h_phi_1
            if p >= 2:
                rhos_p = torch.tensor([0.5], dtype=torch.float64) if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
                for k in range(1, p):
                    P[k][i] = -c * B_h * float(rhos_p[k - 1]) / rks[k - 1]
            # The corrector at step i + 1 redoes this step with m_{i+1} (UniC-p): same h, r_k, A, c.
            if i + 1 < T and i not in self.disable_corrector:
                use_corr[i + 1] = True
                rhos_c = torch.tensor([0.5], dtype=torch.float64) if p == 1 else torch.linalg.solve(R, b)
                C0[i + 1] = -c * B_h * float(rhos_c[-1])
                for k in range(1, p):
                    C[k][i + 1] = -c * B_h * float(rhos_c[k - 1]) / rks[k - 1]
        prev = lambda t: torch.cat([t.new_zeros(1), t[:-1]])  # noqa: E731  (the table of step i − 1)
        orders = self.step_orders
        step = torch.arange(T)
        self._set_tables(
            alpha=self._alpha[:-1],
            sigma=self._sigma[:-1],
            A=A,
            B=B,
            A_prev=prev(A),
            B_prev=prev(B),
            C0=C0,
            use_corr=use_corr,
            **{f"P{k}": P[k] for k in range(1, K)},
            **{f"C{k}": C[k] for k in range(1, K)},
            **{f"use_p{k}": orders > k for k in range(1, K)},
            **{f"use_c{k}": use_corr & (prev(orders.double()) > k) for k in range(1, K)},
            **{f"after{j}": step >= j for j in range(1, K + 1)},
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: float = 0.0, mu: Optional[float] = None):
        """The rule of ``scheduler`` (a ``UniPCMultistepScheduler``) after ``set_timesteps(num_inference_steps)``.

        ``mu`` is the shift Diffusers' ``set_timesteps`` requires with
        ``use_dynamic_shifting`` (flow sigmas).
        """
        require_eta_zero(eta, "UniPCMultistepScheduler")
        if getattr(scheduler, "solver_p", None) is not None or scheduler.config.get("solver_p") is not None:
            raise InputValueError(
                "scheduler config solver_p (another scheduler as the predictor) is not supported; supported: None."
            )
        dynamic = bool(scheduler.config.get("use_dynamic_shifting", False))
        if dynamic and mu is None:
            raise InputValueError(
                "the scheduler has use_dynamic_shifting=True, so set_timesteps needs mu (the resolution-dependent "
                "shift); pass mu=<float>."
            )
        if mu is not None and not dynamic:
            raise InputValueError(f"mu={mu!r} has no effect without use_dynamic_shifting=True; drop mu.")
        fresh, config = fresh_scheduler(scheduler, num_inference_steps, **({"mu": float(mu)} if dynamic else {}))
        if config.get("variance_type") in ("learned", "learned_range"):
            raise InputValueError(
                f"scheduler config variance_type={config.get('variance_type')!r} is not supported (learned variances "
                "are not read); use a model without learned variance."
            )
        clipping = SampleClipping.from_config({k: v for k, v in config.items() if k != "clip_sample"})
        return cls(
            fresh.timesteps.detach().cpu(),
            fresh.sigmas.detach().cpu(),
            solver_order=config.get("solver_order", 2),
            solver_type=config.get("solver_type", "bh2"),
            prediction_type=config.get("prediction_type", "epsilon"),
            predict_x0=bool(config.get("predict_x0", True)),
            lower_order_final=bool(config.get("lower_order_final", True)),
            disable_corrector=tuple(config.get("disable_corrector", ()) or ()),
            flow_sigmas=bool(config.get("use_flow_sigmas", False)),
            clipping=clipping,
        )

    def __repr__(self) -> str:
        return (
            f"UniPCMultistepRule(num_steps={self.num_steps}, solver_order={self.solver_order}, "
            f"solver_type={self.solver_type!r}, prediction_type={self.prediction_type!r}, "
            f"predict_x0={self.predict_x0})"
        )

    def sigma_boundary(self) -> torch.Tensor:
        return self._sigma_boundary.clone()

    # ------------------------------------------------------------------ conversion
    def _x0(self, x, model_output, idx):
        """``x̂_0`` as Diffusers' ``convert_model_output`` forms it (thresholded only with ``predict_x0``)."""
        sigma = self._rows("sigma", idx, x)
        if self.prediction_type == "flow_prediction":
            x0 = x - sigma * model_output
        else:
            x0, _ = model_output_to_x0_eps(model_output, x, self._rows("alpha", idx, x), sigma, self.prediction_type)
        return self.clipping.apply(x0) if self.predict_x0 else x0

    def _convert(self, x, model_output, idx):
        """``m_i``: ``x̂_0`` (``predict_x0``) or ``ε̂``."""
        if self.predict_x0:
            return self._x0(x, model_output, idx)
        alpha, sigma = self._rows("alpha", idx, x), self._rows("sigma", idx, x)
        return model_output_to_x0_eps(model_output, x, alpha, sigma, self.prediction_type)[1]

    # ------------------------------------------------------------------ update
    def _advance(self, x, m0, idx, history):
        row = lambda name: self._rows(name, idx, x)  # noqa: E731
        zero = m0.new_zeros(())
        K = self.solver_order
        last_x = history[0]
        prev = [torch.where(row(f"after{j}"), history[j], zero) for j in range(1, K + 1)]  # m_{i−1}, …, m_{i−K}
        # UniC: redo step i−1 → i with m_i (rows with use_corr), else keep the predicted x.
        m1 = prev[0]
        corrected = row("A_prev") * last_x + row("B_prev") * m1 + row("C0") * (m0 - m1)
        for k in range(1, K):
            corrected = corrected + row(f"C{k}") * torch.where(row(f"use_c{k}"), prev[k] - m1, zero)
        x = torch.where(row("use_corr"), corrected, x)
        # UniP from the corrected sample.
        out = row("A") * x + row("B") * m0
        for k in range(1, K):
            out = out + row(f"P{k}") * torch.where(row(f"use_p{k}"), prev[k - 1] - m0, zero)
        pushed = (m0,) + tuple(prev[:-1])
        return out, (x,) + pushed

    def step(self, x, model_output, step_index, history=(), noise=None):
        xc, mo, idx, hist, _ = self._check(x, model_output, "model_output", step_index, history, noise)
        out, new_history = self._advance(xc, self._convert(xc, mo, idx), idx, hist)
        return out.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)

    def denoise(self, x, model_output, step_index):
        xc, mo, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        return self._x0(xc, mo, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        """:meth:`step` with ``m_i`` formed from ``x0`` (``x̂_0`` itself, or ``ε̂ = (x − α x0)/σ``)."""
        xc, x0c, idx, hist, _ = self._check(x, x0, "x0", step_index, history, noise)
        m0 = x0c if self.predict_x0 else eps_from_x0(xc, x0c, self._rows("alpha", idx, xc), self._rows("sigma", idx, xc))
        out, new_history = self._advance(xc, m0, idx, hist)
        return out.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)
