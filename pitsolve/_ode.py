"""ODE flows from torchdiffeq as banded systems."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import torch
import torchdiffeq

from ._adaptive import ADAPTIVE_METHODS, TABLEAUX, AdaptiveOptions, AdaptiveStats, integrate
from ._devices import digest, replica
from ._errors import InputTypeError, InputValueError
from ._ode_func import FuncCalls
from ._grid import check_grid, check_positive_int, check_tolerances
from ._multistep import MULTISTEP_METHODS, Adams, MultistepSpec, coarse_history, rk4_38
from ._state import State, StateSpec, _map
from ._system import BandedSystem

__all__ = ["ODESystem", "FIXED_GRID_METHODS", "MULTISTEP_METHODS", "ADAPTIVE_METHODS"]

#: torchdiffeq's fixed-grid one-step methods and their convergence orders; pitsolve integrates them
#: with ``torchdiffeq.odeint`` (public API), Φ_n then being a function of X_n alone.
ONE_STEP_ORDERS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
FIXED_GRID_METHODS = tuple(sorted(ONE_STEP_ORDERS))


class ODESystem(FuncCalls, BandedSystem):
    r"""``dy/dt = func(t, y)`` on the grid ``t`` as a banded system.

    ``Φ_n`` runs ``substeps`` fixed steps of torchdiffeq's ``method`` from
    ``t[n]`` to ``t[n+1]``.  A batch of intervals is propagated in **one**
    ``torchdiffeq.odeint`` call: every interval is rescaled to ``s ∈ [0, 1]``,

    .. math:: \frac{dy}{ds} = h_n\, f(t_n + s h_n, y),\qquad h_n = t_{n+1} - t_n,

    so each batch member carries its own time.  RK steps on this rescaled
    problem are the same arithmetic as on the original one, so
    :func:`~pitsolve.sequential` reproduces ``torchdiffeq.odeint(func, y0, t_fine,
    method=method)`` on the refined grid to round-off.

    Multistep methods step in ``t`` itself and carry their history: the
    state is ``(y, F, L)`` (:mod:`pitsolve._multistep`), ``Φ_n`` runs the
    ``K`` fine steps from it, and :attr:`spec` describes that state, while
    ``Solution.ys`` holds ``y`` alone (:class:`~pitsolve._multistep.MultistepSpec`).
    The strategies extrapolate ``y`` alone (:attr:`monitored`) and take
    ``F`` and ``L`` from ``Φ``, as for a sampler's history; the stopping rule
    reads all of it (:meth:`error_ratio`).

    Args:
        func: ``func(t, y)`` as for ``torchdiffeq.odeint`` (scalar ``t``, one
            state ``y``).  It is batched with ``torch.func.vmap``; pass
            ``batched_func=True`` if it already takes ``t`` of shape ``[B]`` and
            states ``[B, *shape]``.
        y0: initial state, a tensor of any shape or a tuple of tensors.
        t: 1-D tensor of the N+1 interval boundaries, strictly increasing or
            decreasing, same dtype and device as ``y0``.
        method: a fixed-grid one-step method of torchdiffeq
            (:data:`FIXED_GRID_METHODS`), a fixed-grid multistep one
            (:data:`MULTISTEP_METHODS`: ``explicit_adams``, ``implicit_adams``
            and its old name ``fixed_adams``), whose history of ``f``
            evaluations travels in the state (:mod:`pitsolve._multistep`), or
            an adaptive embedded pair (:data:`ADAPTIVE_METHODS`: ``dopri5``,
            ``dopri8``, ``bosh3``, ``fehlberg2``, ``adaptive_heun``) that integrates each
            interval with its own step control per row
            (:mod:`pitsolve._adaptive`; docs/odes.md).
        substeps: fine steps per interval (K); the fine grid has N·K steps.
            Fixed-grid methods only.  A multistep history runs on across
            interval boundaries, so the N·K fine steps are torchdiffeq's on
            the refined grid, start-up steps only at ``t[0]``.
        atol, rtol: fixed-grid methods: the error scale of the stopping rule
            (Eq. 14), ``s_n = atol + rtol·|X_n|`` elementwise; ``solve(tol=δ)``
            accepts a point when ``RMS(ΔX_n / s_n) ≤ δ`` (default 1, 1).
            Adaptive methods: the integration tolerances, as in torchdiffeq
            (default ``rtol=1e-7``, ``atol=1e-9``); ``implicit_adams``: the
            corrector's convergence test, as in torchdiffeq (same defaults).
            For these two the stopping rule's scale is ``1 + |X_n|``.
        options: adaptive methods: torchdiffeq's step-control options
            ``first_step``, ``safety``, ``ifactor``, ``dfactor``,
            ``max_num_steps``.  Multistep methods: ``max_order`` (4…12,
            default 12) and, for ``implicit_adams``, ``max_iters`` (default 4);
            the steps whose corrector did not converge are recorded in
            ``corrector_failures`` (torchdiffeq warns for them).
        batched_func: whether ``func`` is already batched over intervals.
        func_dtype: evaluate ``func`` in this precision (e.g.
            ``torch.bfloat16``): ``t`` and ``y`` are cast to it before each
            call and the derivative back to ``y0``'s dtype, so the integrator,
            the solver's state and its sums stay in ``y0``'s precision.
            ``None``: ``func`` sees ``y0``'s dtype.
    """

    def __init__(
        self,
        func: Callable,
        y0: State,
        t: torch.Tensor,
        *,
        method: str = "rk4",
        substeps: int = 1,
        atol: Optional[float] = None,
        rtol: Optional[float] = None,
        batched_func: bool = False,
        func_dtype: Optional[torch.dtype] = None,
        options: Optional[dict] = None,
    ):
        if not callable(func):
            raise InputTypeError(f"func is a {type(func).__name__}, not callable; pass func(t, y).")
        self._spec = StateSpec.of(y0, "y0")
        self.t = check_grid(t, self._spec)
        if not isinstance(method, str) or method not in FIXED_GRID_METHODS + MULTISTEP_METHODS + ADAPTIVE_METHODS:
            raise InputValueError(
                f"method={method!r} is not a method pitsolve integrates per interval; choose a fixed-grid "
                f"one-step method {list(FIXED_GRID_METHODS)}, a multistep one {list(MULTISTEP_METHODS)} or an "
                f"adaptive one {list(ADAPTIVE_METHODS)}."
            )
        self.method = method
        self.adaptive = method in ADAPTIVE_METHODS
        self.substeps = check_positive_int(substeps, "substeps")
        #: The multistep method (``None`` for one-step and adaptive methods).
        self.multistep: Optional[Adams] = None
        #: ``{interval n: fine steps whose corrector did not converge}`` at the latest evaluation of ``Φ_n``
        #: (implicit_adams; after a solve, at its result).  torchdiffeq warns for such steps.
        self.corrector_failures: Dict[int, int] = {}
        _configure_method(self, method, substeps, options, rtol, atol)
        self.func = func
        self.batched_func = bool(batched_func)
        if func_dtype is not None and not (isinstance(func_dtype, torch.dtype) and func_dtype.is_floating_point):
            raise InputTypeError(
                f"func_dtype={func_dtype!r} is not a floating-point torch.dtype; pass e.g. torch.bfloat16 or None."
            )
        self.func_dtype = func_dtype
        self._y0 = y0
        self._s = torch.linspace(0.0, 1.0, self.substeps + 1, dtype=self._spec.dtype, device=self._spec.device)
        self._s_coarse = self._s[[0, -1]]
        self._check_func()

    # -- BandedSystem ---------------------------------------------------------
    @property
    def initial_state(self) -> State:
        """``y0``; multistep methods: ``(y0…, F, L = 0)``, no derivatives known yet.

        ``F``'s slots (never read while ``L = 0``) hold ``func(t_0, y_0)``,
        evaluated afresh on each access so that autograd sees ``y0`` and the
        parameters of ``func`` anew in every solve.
        """
        if self.multistep is None:
            return self._y0
        f0 = self._spec.flatten_batch(self._batched(self.t[:1], _map(lambda p: p.unsqueeze(0), self._y0)))[0]
        history, length = self.multistep.initial_history(f0)
        return (*(self._y0 if self._spec.is_tuple else (self._y0,)), history, length)

    @property
    def num_intervals(self) -> int:
        return self.t.numel() - 1

    @property
    def spec(self) -> StateSpec:  # type: ignore[override]
        """The banded system's state: ``y0``'s spec, or ``(y, F, L)``'s for multistep methods."""
        return self._state_spec

    @property
    def steps_per_interval(self) -> int:  # type: ignore[override]
        """Fine steps of one ``Φ_n``; adaptive methods: the lock-step waves of the latest call (depth)."""
        return max(self.stats.waves, 1) if self.adaptive else self.substeps

    def call_cost(self, indices: torch.Tensor):
        """Adaptive methods: the latest call's lock-step waves (depth) and its rows' step attempts (NFE)."""
        if self.adaptive and len(self.stats.row_steps) == int(indices.numel()):
            return self.stats.waves, int(sum(self.stats.row_steps))
        return super().call_cost(indices)

    def propagate(self, states: State, indices: torch.Tensor) -> State:
        if self.multistep is not None:
            return _multistep(self, states, indices)
        return self._integrate(states, indices, self._s)

    def coarse_propagate(self, states: State, indices: torch.Tensor) -> State:
        """One step of the fine method over the whole interval (adaptive methods: one ``rk4`` step).

        Multistep methods: one ``rk4`` step for ``y``; the derivatives of the
        interval's fine steps are interpolated between ``f`` at its start and
        at the new ``y`` (:func:`~pitsolve._multistep.coarse_history`).
        """
        if self.multistep is not None:
            return _multistep(self, states, indices, coarse=True)
        return self._integrate(states, indices, self._s_coarse, coarse=True)

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``s_n = atol + rtol·|y_n|`` elementwise."""
        return self.atol + self.rtol * states[:, self.monitored].abs()

    def error_ratio(self, new: torch.Tensor, old: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        r"""Eq. 14's ``RMS(Δy/s_n)``; multistep methods: the largest of it, the history's and ``|ΔL|``.

        The history is measured by its effect on ``y``: ``RMS(δ·ΔF / (atol + rtol·|δ·F|))``
        with ``δ = |t_n − t_{n−1}|/K`` the fine step that produced it; a
        changed count ``L`` (a different number of known derivatives) is
        never within a tolerance below 1.
        """
        ratio = super().error_ratio(new, old, indices)
        if self.multistep is None:
            return ratio
        D = self._spec.size
        interval = (indices - 1).clamp(0, self.num_intervals - 1)  # point n holds interval n−1's derivatives
        fine = ((self.t[interval + 1] - self.t[interval]).abs() / self.substeps).view(-1, 1).to(new.dtype)
        scale = self.atol + self.rtol * (fine * new[:, D:-1]).abs()
        history = (fine * (new[:, D:-1] - old[:, D:-1]) / scale).pow(2).mean(dim=1).sqrt()
        count = (new[:, -1].round() - old[:, -1].round()).abs()
        return torch.maximum(torch.maximum(ratio, history), count)

    def to(self, device) -> "ODESystem":
        """A replica on ``device``: ``y0`` and ``t`` moved, ``func`` moved if it is an ``nn.Module``.

        A plain function is shared and must work on tensors of any device
        (create constants with ``.to(y)``).  ``self`` is not modified.
        """
        new = replica(self, device, ("_y0", "t", "_s", "_s_coarse", "func"))
        new._spec = dataclasses.replace(self._spec, device=new.t.device)
        new._state_spec = dataclasses.replace(self._state_spec, device=new.t.device)
        return new

    def fingerprint(self):
        return {
            **super().fingerprint(),
            "t": digest(self.t),
            "method": self.method,
            "substeps": str(self.substeps),
            "atol, rtol": f"{self.atol!r}, {self.rtol!r}",
            "func": digest(self.func),
            "batched_func": str(self.batched_func),
            "func_dtype": str(self.func_dtype),
            "multistep": repr(self.multistep),
        }

    # -- internals ------------------------------------------------------------
    def _integrate(self, states: State, indices: torch.Tensor, s: torch.Tensor, coarse: bool = False) -> State:
        ta = self.t[indices]
        h = self.t[indices + 1] - ta
        if self.adaptive and not coarse:
            return self._adaptive(states, indices, ta, h)

        def rescaled(si, y):
            dy = self._batched(ta + si * h, y)
            return _map(lambda d: d * h.view(-1, *([1] * (d.dim() - 1))), dy)

        out = torchdiffeq.odeint(rescaled, states, s, method="rk4" if self.adaptive else self.method)
        return _map(lambda o: o[-1], out)

    def _adaptive(self, states: State, indices: torch.Tensor, ta: torch.Tensor, h: torch.Tensor) -> State:
        """``Φ`` of each row by the adaptive method, its own step control per row (:mod:`pitsolve._adaptive`)."""
        spec = self._spec

        def f(rows: torch.Tensor, si: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """``dy/ds = h·func(t_0 + s·h, y)`` for the rows ``rows`` of the call."""
            t0, hh = ta[rows], h[rows]
            d = self._batched(t0 + si * hh, spec.unflatten_batch(y))
            return spec.flatten_batch(_map(lambda x: x * hh.view(-1, *([1] * (x.dim() - 1))), d))

        out = integrate(f, spec.flatten_batch(states), h, TABLEAUX[self.method], self.control, self.stats)
        return spec.unflatten_batch(out)


def _configure_method(system: ODESystem, method: str, substeps: int, options: Optional[dict],
                      rtol: Optional[float], atol: Optional[float]) -> None:
    """Set ``system``'s method-specific parts: its state spec, the error scale's ``atol``/``rtol``, and

    * multistep methods: the :class:`~pitsolve._multistep.Adams` method and the state ``(y, F, L)``;
    * adaptive methods: the step control (:class:`~pitsolve._adaptive.AdaptiveOptions`) and its stats;
    * fixed-grid one-step methods: nothing else (``options`` refused).
    """
    system._state_spec = system._spec
    if method in MULTISTEP_METHODS:
        system.multistep = Adams.from_options(method, options, rtol, atol)
        if system.multistep.implicit:
            atol, rtol = 1.0, 1.0  # the stopping rule's scale: 1 + |X_n|; rtol/atol went to the corrector
        system.atol, system.rtol = check_tolerances(1.0 if atol is None else atol, 1.0 if rtol is None else rtol)
        P, D = system.multistep.history_size, system._spec.size
        system._state_spec = MultistepSpec(
            shapes=system._spec.shapes + ((P, D), (1,)), is_tuple=True, dtype=system._spec.dtype,
            device=system._spec.device, visible=len(system._spec.shapes), visible_tuple=system._spec.is_tuple,
        )
        # The strategies extrapolate y (A = I on it); F and L are taken from Φ, as a sampler's history.
        system.monitored = slice(0, system._spec.size)
    elif system.adaptive:
        if system.substeps != 1:
            raise InputValueError(
                f"substeps={substeps} with the adaptive method {method!r}: its step control picks the steps; "
                "pass rtol/atol (and options=dict(first_step=...)) instead, or a fixed-grid method."
            )
        rtol, atol = check_tolerances(1e-9 if atol is None else atol, 1e-7 if rtol is None else rtol)[::-1]
        if options is not None and not isinstance(options, dict):
            raise InputTypeError(f"options={options!r} is not a dict; pass e.g. options=dict(first_step=1e-3).")
        system.control = AdaptiveOptions.from_options(rtol, atol, options)
        system.stats = AdaptiveStats()
        system.atol, system.rtol = 1.0, 1.0  # the stopping rule's scale: 1 + |X_n|
        system._pitsolve_reverse_jvp = True  # data-dependent step control: forward mode cannot trace it
    else:
        if options:
            raise InputValueError(
                f"options={options!r} are step-control options of adaptive methods; the fixed-grid method "
                f"{method!r} takes substeps=K (or odeint's options=dict(step_size=...))."
            )
        system.atol, system.rtol = check_tolerances(1.0 if atol is None else atol, 1.0 if rtol is None else rtol)


def _multistep(system: ODESystem, states: State, indices: torch.Tensor, coarse: bool = False) -> State:
    """``Φ_n`` (or the coarse ``G_n``) of ``system``'s multistep method on states ``(y…, F, L)``."""
    spec, adams = system._spec, system.multistep
    parts = states[: len(spec.shapes)]
    y = spec.flatten_batch(parts if spec.is_tuple else parts[0])
    history, length = states[-2], states[-1][:, 0]
    ta, tb = system.t[indices], system.t[indices + 1]

    def f(tt: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        return spec.flatten_batch(system._batched(tt, spec.unflatten_batch(yy)))

    if coarse:  # one rk4 step; the interval's derivatives interpolated between f at its two ends
        f0 = f(ta, y)
        h = tb - ta
        y = y + rk4_38(f, ta, h, y, f0)
        history, length = coarse_history(f0, f(tb, y), history, length, system.substeps)
    else:
        times = torch.cat([ta.view(-1, 1) + system._s[:-1] * (tb - ta).view(-1, 1), tb.view(-1, 1)], dim=1)
        y, history, length, failures = adams.advance(f, y, history, length, times)
        if adams.implicit:
            for n, count in zip(indices.tolist(), failures.tolist()):
                if count:
                    system.corrector_failures[n] = count
                else:
                    system.corrector_failures.pop(n, None)
    out = spec.unflatten_batch(y)
    return (*(out if spec.is_tuple else (out,)), history, length.view(-1, 1))
