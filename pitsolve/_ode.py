"""ODE flows from torchdiffeq as banded systems."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch
import torchdiffeq
from torchdiffeq._impl.fixed_adams import AdamsBashforthMoulton
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from ._adaptive import ADAPTIVE_METHODS, TABLEAUX, AdaptiveOptions, AdaptiveStats, integrate
from ._devices import digest, replica
from ._errors import InputTypeError, InputValueError, PitsolveError
from ._grid import check_grid, check_positive_int, check_tolerances
from ._state import State, StateSpec, _map
from ._system import BandedSystem

__all__ = ["ODESystem", "FIXED_GRID_METHODS", "ADAPTIVE_METHODS"]

#: torchdiffeq's fixed-grid one-step methods: Φ_n is then a function of X_n alone.
FIXED_GRID_METHODS = tuple(
    sorted(
        name
        for name, cls in SOLVERS.items()
        if issubclass(cls, FixedGridODESolver) and not issubclass(cls, AdamsBashforthMoulton)
    )
)


class ODESystem(BandedSystem):
    r"""``dy/dt = func(t, y)`` on the grid ``t`` as a banded system.

    ``Φ_n`` runs ``substeps`` fixed steps of torchdiffeq's ``method`` from
    ``t[n]`` to ``t[n+1]``.  A batch of intervals is propagated in **one**
    ``torchdiffeq.odeint`` call: every interval is rescaled to ``s ∈ [0, 1]``,

    .. math:: \frac{dy}{ds} = h_n\, f(t_n + s h_n, y),\qquad h_n = t_{n+1} - t_n,

    so each batch member carries its own time.  RK steps on this rescaled
    problem are the same arithmetic as on the original one, so
    :func:`~pitsolve.sequential` reproduces ``torchdiffeq.odeint(func, y0, t_fine,
    method=method)`` on the refined grid to round-off.

    Args:
        func: ``func(t, y)`` as for ``torchdiffeq.odeint`` (scalar ``t``, one
            state ``y``).  It is batched with ``torch.func.vmap``; pass
            ``batched_func=True`` if it already takes ``t`` of shape ``[B]`` and
            states ``[B, *shape]``.
        y0: initial state, a tensor of any shape or a tuple of tensors.
        t: 1-D tensor of the N+1 interval boundaries, strictly increasing or
            decreasing, same dtype and device as ``y0``.
        method: a fixed-grid one-step method of torchdiffeq
            (:data:`FIXED_GRID_METHODS`), or an adaptive embedded pair
            (:data:`ADAPTIVE_METHODS`: ``dopri5``, ``bosh3``, ``fehlberg2``,
            ``adaptive_heun``) that integrates each interval with its own
            step control per row (:mod:`pitsolve._adaptive`; docs/odes.md).
        substeps: fine steps per interval (K); the fine grid has N·K steps.
            Fixed-grid methods only.
        atol, rtol: fixed-grid methods: the error scale of the stopping rule
            (Eq. 14), ``s_n = atol + rtol·|X_n|`` elementwise; ``solve(tol=δ)``
            accepts a point when ``RMS(ΔX_n / s_n) ≤ δ`` (default 1, 1).
            Adaptive methods: the integration tolerances, as in torchdiffeq
            (default ``rtol=1e-7``, ``atol=1e-9``); the stopping rule's scale
            is then ``1 + |X_n|``.
        options: adaptive methods: torchdiffeq's step-control options
            ``first_step``, ``safety``, ``ifactor``, ``dfactor``,
            ``max_num_steps``.
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
        if not isinstance(method, str) or method not in FIXED_GRID_METHODS + ADAPTIVE_METHODS:
            raise InputValueError(
                f"method={method!r} is not a method pitsolve integrates per interval; choose a fixed-grid "
                f"one-step method {list(FIXED_GRID_METHODS)} or an adaptive one {list(ADAPTIVE_METHODS)} "
                "(multistep methods carry history across intervals; dopri8 is not implemented: use dopri5)."
            )
        self.method = method
        self.adaptive = method in ADAPTIVE_METHODS
        self.substeps = check_positive_int(substeps, "substeps")
        if self.adaptive:
            if self.substeps != 1:
                raise InputValueError(
                    f"substeps={substeps} with the adaptive method {method!r}: its step control picks the steps; "
                    "pass rtol/atol (and options=dict(first_step=...)) instead, or a fixed-grid method."
                )
            rtol, atol = check_tolerances(1e-9 if atol is None else atol, 1e-7 if rtol is None else rtol)[::-1]
            if options is not None and not isinstance(options, dict):
                raise InputTypeError(f"options={options!r} is not a dict; pass e.g. options=dict(first_step=1e-3).")
            self.control = AdaptiveOptions.from_options(rtol, atol, options)
            self.stats = AdaptiveStats()
            self.atol, self.rtol = 1.0, 1.0  # the stopping rule's scale: 1 + |X_n|
            self._pitsolve_reverse_jvp = True  # data-dependent step control: forward mode cannot trace it
        else:
            if options:
                raise InputValueError(
                    f"options={options!r} are step-control options of adaptive methods; the fixed-grid method "
                    f"{method!r} takes substeps=K (or odeint's options=dict(step_size=...))."
                )
            self.atol, self.rtol = check_tolerances(1.0 if atol is None else atol, 1.0 if rtol is None else rtol)
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
        return self._y0

    @property
    def num_intervals(self) -> int:
        return self.t.numel() - 1

    @property
    def spec(self) -> StateSpec:  # type: ignore[override]
        return self._spec

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
        return self._integrate(states, indices, self._s)

    def coarse_propagate(self, states: State, indices: torch.Tensor) -> State:
        """One step of the fine method over the whole interval (adaptive methods: one ``rk4`` step)."""
        return self._integrate(states, indices, self._s_coarse, coarse=True)

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * states[:, self.monitored].abs()

    def to(self, device) -> "ODESystem":
        """A replica on ``device``: ``y0`` and ``t`` moved, ``func`` moved if it is an ``nn.Module``.

        A plain function is shared and must work on tensors of any device
        (create constants with ``.to(y)``).  ``self`` is not modified.
        """
        new = replica(self, device, ("_y0", "t", "_s", "_s_coarse", "func"))
        new._spec = dataclasses.replace(self._spec, device=new.t.device)
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
        }

    # -- internals ------------------------------------------------------------
    def _batched(self, tt: torch.Tensor, y: State) -> State:
        """``func`` on a batch ``y [B, *shape]`` with times ``tt [B]``, its output checked on every call."""
        low, given = self.func_dtype, y
        versions = _versions(given)
        if low is not None:
            tt, y = tt.to(low), _map(lambda p: p.to(low), y)
        out = self.func(tt, y) if self.batched_func else torch.func.vmap(self.func, in_dims=(0, 0))(tt, y)
        if versions is not None and _versions(given) != versions:
            raise InputValueError(
                "func modified its input y in place (e.g. with y.mul_(...) or y += ...), which corrupts the "
                "solver's state; return a new tensor instead of modifying the state in place (e.g. return 2 * y)."
            )
        if low is not None:
            out = _map(lambda d: d.to(self._spec.dtype) if isinstance(d, torch.Tensor) else d, out)
        self._check_output(out, (given[0] if isinstance(given, tuple) else given).shape[0])
        return out

    def _check_output(self, out: State, batch: int) -> None:
        """Raise unless ``out`` is a batch of ``batch`` derivatives of the state's shapes, dtype and device."""
        self._spec.check_batch(out, batch, "func")
        for part in out if isinstance(out, tuple) else (out,):
            if part.dtype != self._spec.dtype:
                raise InputTypeError(
                    f"func returned dtype {part.dtype} but y0 has dtype {self._spec.dtype}; "
                    "return the dtype of y (e.g. create constants with .to(y))."
                )
            if part.device != self._spec.device:
                raise InputTypeError(
                    f"func returned a tensor on {part.device} but y0 lies on {self._spec.device}; "
                    "return it on y's device (e.g. create constants with .to(y))."
                )

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

    def _check_func(self) -> None:
        """Call ``func`` once (batched) and compare its output with ``y0`` (torchsde's check_contract)."""
        batch = _map(lambda p: p.unsqueeze(0), self._y0)
        try:
            self._batched(self.t[:1], batch)  # checks the output's shape, dtype and device
        except PitsolveError:
            raise
        except Exception as err:
            if self.batched_func:
                raise
            raise InputTypeError(
                f"calling func under torch.func.vmap failed ({type(err).__name__}: {err}); "
                "make func vmap-compatible (no .item(), in-place ops on inputs or data-dependent "
                "control flow), or write it for a batch and pass batched_func=True "
                "(then t has shape [B] and y shape [B, *y0.shape])."
            ) from err


def _versions(y: State):
    """The version counters of the parts of ``y`` (bumped by in-place changes); ``None`` if untracked."""
    try:
        return tuple(p._version for p in (y if isinstance(y, tuple) else (y,)))
    except RuntimeError:  # inference tensors track no versions
        return None
