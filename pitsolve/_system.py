"""The banded system ``X_{n+1} = Φ_n(X_n)`` (paper Eq. 7–8, docs/design.md, "The banded system")."""

from __future__ import annotations

import abc
import contextlib
import functools
import warnings
from typing import Dict, Optional, Tuple

import torch

from ._errors import InputTypeError, InputValueError, PitsolveError
from ._system_checks import checked_costs, checked_ratio
from ._state import State, StateSpec

__all__ = ["BandedSystem"]


class BandedSystem(abc.ABC):
    r"""A chain of propagators over N subintervals, read as a banded nonlinear system.

    The unknowns ``X_1 … X_N`` solve (paper Definition 1, Eq. 8)::

        X_0 = x0,      X_{n+1} − Φ_n(X_n) = 0,   n = 0 … N−1.

    A subclass supplies

    * :attr:`initial_state` — ``X_0`` (a tensor of any shape or a tuple of tensors),
    * :attr:`num_intervals` — ``N``,
    * :meth:`propagate` — ``Φ_n`` for a *batch* of states and interval indices in
      one call: this is the part every sweep runs in parallel.

    and may override :meth:`error_scale` (the ``s_n`` of the stopping rule Eq. 14),
    :attr:`monitored` (which part of the flat state the rule reads),
    :meth:`coarse_propagate` (the coarse propagator ``G_n`` of Parareal and of
    the ``"coarse"`` initialiser) and :meth:`jvp_flat` (``J_n v``).

    :attr:`steps_per_interval` and :attr:`coarse_steps` give the cost of one
    ``Φ_n`` and one ``G_n`` in fine steps; ``depth`` and ``nfe`` of a
    :class:`~pitsolve.Solution` count in these units (docs/design.md, "Measures").
    """

    #: Fine steps inside one ``Φ_n`` (for depth and NFE).
    steps_per_interval: int = 1
    #: Fine steps inside one coarse ``G_n`` (for depth and NFE).
    coarse_steps: int = 1
    #: The part of the flat state the stopping rule reads (default: all of it).
    monitored: slice = slice(None)
    #: A part of the flat state that ``Φ`` carries but does not read (e.g. a prediction kept
    #: for the initialiser): its Jacobian columns are zero, so every strategy takes
    #: ``Φ``'s value there (``A = 0``) instead of extrapolating it.  ``None``: no such part.
    passive: Optional[slice] = None
    #: What ``tol`` bounds under ``solve(stopping="error")``: ``"trajectory"`` (every point's
    #: error, the default) or ``"final"`` (the last point's: a sampler's result is its last state).
    certified: str = "trajectory"
    #: Independent parts of the state (e.g. the images of a batch), for the error bound: a flat
    #: ``[D]`` integer tensor numbering each entry's part ``0 … P−1``, or ``None`` (one part).
    #: :meth:`error_parts` measures each part.
    parts: Optional[torch.Tensor] = None
    #: What else, beyond the type, state size, dtype, device and ``N``, makes ``Φ``'s batch cost differ
    #: between systems (e.g. the model a diffusion system calls): part of ``window="auto"``'s cache key.
    tuning_key: Tuple = ()

    @property
    @abc.abstractmethod
    def initial_state(self) -> State:
        """``X_0``."""

    @property
    @abc.abstractmethod
    def num_intervals(self) -> int:
        """``N``, the number of subintervals (unknown boundary states)."""

    @abc.abstractmethod
    def propagate(self, states: State, indices: torch.Tensor) -> State:
        """``Φ_{indices[b]}(states[b])`` for every ``b`` of the batch, in one call.

        ``states`` is a batch ``[B, *shape]`` (or a tuple of them), ``indices`` a
        ``LongTensor [B]`` of interval numbers in ``[0, N)``.  Must be
        deterministic: the same state and index give the same result.
        """

    def coarse_propagate(self, states: State, indices: torch.Tensor) -> State:
        """A cheap approximation ``G_n ≈ Φ_n`` (Parareal's coarse propagator)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no coarse propagator; pass one explicitly, "
            "e.g. Parareal(coarse=my_coarse) or init=\"constant\"."
        )

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``s_n`` of Eq. 14 for flat states ``[B, D]``: broadcastable to ``[B, D_monitored]``.

        Point n is accepted when ``RMS((X_n^{k+1} − X_n^k) / s_n) ≤ tol``.
        """
        return torch.ones((states.shape[0], 1), dtype=states.dtype, device=states.device)

    def error_ratio(self, new: torch.Tensor, old: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The stopping rule's measure per point, ``[B]``; a point passes when it is ``≤ tol``.

        Default (Eq. 14): ``RMS((new − old) / s_n)`` over the :attr:`monitored`
        part, with ``s_n`` from :meth:`error_scale` at the new iterate.
        ``new``/``old`` are flat ``[B, D]``; ``indices`` the points' numbers.
        """
        diff = (new - old)[:, self.monitored]
        scale = self.error_scale(new, indices)
        _check_scale(self, scale, diff)
        return (diff / scale).pow(2).mean(dim=1).sqrt()

    def error_parts(self, new: torch.Tensor, old: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The measure of each independent part (:attr:`parts`), ``[B, P]``; its maximum over parts is
        :meth:`error_ratio`.  Default: one part, ``error_ratio`` itself."""
        return self.checked_error_ratio(new, old, indices).unsqueeze(1)

    def checked_error_ratio(self, new: torch.Tensor, old: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`error_ratio`, checked: a 1-D floating-point tensor ``[B]`` on the states' device.

        Raises :class:`~pitsolve.InputValueError` for another shape (``[B, 1]``,
        ``[2B]``, a scalar) or a NaN where ``new`` and ``old`` are finite, and
        :class:`~pitsolve.InputTypeError` for a non-tensor, an integer dtype or
        another device, naming the method, what it returned and what is expected.
        """
        return checked_ratio(self, self.error_ratio(new, old, indices), new, old)

    def checked_costs(self) -> Tuple[int, int]:
        """``(steps_per_interval, coarse_steps)`` as ints ``>= 1``, or a typed error naming the attribute.

        Numpy integers and 0-dim integer tensors are accepted; a bool, a float or
        a value below 1 raises :class:`~pitsolve.InputTypeError` /
        :class:`~pitsolve.InputValueError`.
        """
        return checked_costs(self)

    def interval_cost(self, indices: torch.Tensor) -> int:
        """Fine steps evaluated by one :meth:`propagate` over ``indices`` (for NFE)."""
        return int(indices.numel()) * self.checked_costs()[0]

    def call_cost(self, indices: torch.Tensor) -> Tuple[int, int]:
        """``(depth, nfe)`` in fine steps of the :meth:`propagate` call over ``indices`` that just ran.

        Default: :attr:`steps_per_interval` and :meth:`interval_cost`.  A system
        whose cost depends on the states (adaptive steps) reports what the call
        took; the solve charges it after every call.
        """
        return self.checked_costs()[0], self.interval_cost(indices)

    # -- execution (docs/design.md, "Architecture"): replicas on other devices, fingerprints across ranks ---------
    def to(self, device) -> "BandedSystem":
        """A replica of this system on ``device``, for ``solve(..., devices=[...])``.

        Must return a *new* system whose tensors and modules live on
        ``device`` and leave ``self`` untouched; ``nn.Module`` parts are moved
        with :func:`pitsolve.extend.to_device` (shared when already there,
        else copied).  The default raises: a system says how it is moved.
        """
        raise InputTypeError(
            f"{type(self).__name__} does not say how to move it to {device}; implement "
            f"{type(self).__name__}.to(device) returning a copy on that device (see ODESystem.to), "
            "or solve it where it lives (devices=None)."
        )

    def fingerprint(self) -> Dict[str, str]:
        """What must agree across the ranks of a distributed solve, as ``{field: short string}``.

        The default covers the class, N, the state's shapes and dtype, the
        costs and an exact digest of ``X_0``; subclasses add their settings
        (grid, method, noise, model weights).  Compared once at the start of
        :func:`pitsolve.distributed.solve`.
        """
        from ._devices import digest

        spec = self.spec
        return {
            "system": f"{type(self).__module__}.{type(self).__qualname__}",
            "num_intervals": str(self.num_intervals),
            "state": f"{spec.describe()}, {spec.dtype}, on {spec.device.type}",
            "steps_per_interval": str(self.steps_per_interval),
            "coarse_steps": str(self.coarse_steps),
            "monitored": repr(self.monitored),
            "initial_state": digest(self.initial_state),
        }

    # -- derived --------------------------------------------------------------
    @functools.cached_property
    def spec(self) -> StateSpec:
        """Shapes, dtype and device of one state (validated once)."""
        return StateSpec.of(self.initial_state, "initial_state")

    def propagate_flat(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`propagate` on flat states ``[B, D]``.

        An exception raised inside :meth:`propagate` (by the user's ``func``,
        ``sde`` or model) is re-raised unchanged, with a note naming the
        intervals being propagated.
        """
        spec, what = self.spec, f"{type(self).__name__}.propagate"
        version = _version(x)
        with _noting(self, "propagate", indices):
            out = self.propagate(spec.unflatten_batch(x), indices)
        _check_unmodified(x, version, what)
        spec.check_batch(out, x.shape[0], what)
        spec.check_kind(out, what)
        return spec.flatten_batch(out)

    def coarse_flat(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`coarse_propagate` on flat states ``[B, D]`` (exceptions noted as in :meth:`propagate_flat`)."""
        spec, what = self.spec, f"{type(self).__name__}.coarse_propagate"
        version = _version(x)
        with _noting(self, "coarse_propagate", indices):
            out = self.coarse_propagate(spec.unflatten_batch(x), indices)
        _check_unmodified(x, version, what)
        spec.check_batch(out, x.shape[0], what)
        spec.check_kind(out, what)
        return spec.flatten_batch(out)

    def jvp_flat(
        self, x: torch.Tensor, indices: torch.Tensor, tangents: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(Φ_n(x), J_n(x) · v)`` on flat states ``[B, D]`` (Prop. 3's Jacobian term).

        Forward-mode AD (``torch.func.jvp``); code that forward mode cannot
        trace falls back to the double-backward trick ``Jv = ∂/∂u ⟨J^T u, v⟩``.
        """
        fn = functools.partial(_call_flat, self, indices)
        if not getattr(self, "_pitsolve_reverse_jvp", False):
            try:
                return torch.func.jvp(fn, (x,), (tangents,))
            except (RuntimeError, NotImplementedError) as err:  # op without a forward-mode rule
                warnings.warn(
                    f"{type(self).__name__}: forward-mode JVP failed ({err}); "
                    "using the double-backward JVP instead.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._pitsolve_reverse_jvp = True
        return _double_backward_jvp(fn, x, tangents)


#: The first words of the note :func:`_noting` adds; a note is added once per exception.
NOTE_PREFIX = "pitsolve: raised in "


@contextlib.contextmanager
def _noting(system: BandedSystem, method: str, indices: torch.Tensor):
    """Re-raise a foreign exception from ``system.method`` unchanged, noting the intervals it was running.

    The exception keeps its type (a user's ``except`` still catches it); its
    note (PEP 678) says where in the solve it happened.  pitsolve's own errors
    already say so and pass through untouched.
    """
    try:
        yield
    except PitsolveError:
        raise
    except Exception as err:
        if not any(str(n).startswith(NOTE_PREFIX) for n in getattr(err, "__notes__", ())):
            err.add_note(
                f"{NOTE_PREFIX}{type(system).__name__}.{method} on {_intervals(indices)} of "
                f"N={system.num_intervals}; the solve was abandoned and left no state behind: "
                "fix the cause and solve again."
            )
        raise


def _intervals(indices: torch.Tensor) -> str:
    """``interval 3`` / ``intervals 3..7`` / ``intervals [1, 4, 6]`` for a LongTensor of interval numbers."""
    n = sorted({int(i) for i in indices.flatten().tolist()})  # a call may evaluate a point twice
    if len(n) == 1:
        return f"interval {n[0]}"
    if n == list(range(n[0], n[0] + len(n))):
        return f"intervals {n[0]}..{n[-1]}"
    return f"intervals {n[:8]}{'...' if len(n) > 8 else ''}"


def _version(x: torch.Tensor) -> Optional[int]:
    """The version counter of ``x`` (bumped by every in-place change of it or of a view of it); ``None`` if untracked."""
    try:
        return x._version
    except RuntimeError:  # inference tensors track no versions
        return None


def _check_unmodified(x: torch.Tensor, version: Optional[int], what: str) -> None:
    """Raise if ``x`` was modified in place since its version was ``version``."""
    if version is not None and _version(x) != version:
        raise InputValueError(
            f"{what} modified its input states in place (e.g. with mul_ or +=), which corrupts the solver's "
            "iterate; return a new tensor instead of modifying the state in place (e.g. states * 2, not states.mul_(2))."
        )


def _check_scale(system: BandedSystem, scale, diff: torch.Tensor) -> None:
    """Raise unless ``error_scale``'s result divides the monitored differences ``diff [B, D_m]`` elementwise."""
    if not isinstance(scale, torch.Tensor):
        return  # a Python number divides anything
    name, want = f"{type(system).__name__}.error_scale", tuple(diff.shape)
    try:
        fits = torch.broadcast_shapes(scale.shape, diff.shape) == diff.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise InputValueError(
            f"{name} returned shape {tuple(scale.shape)}, which does not broadcast to the monitored states' "
            f"shape {want}; return shape ({want[0]}, 1) (one scale per point) or {want} (one per entry)."
        )


def _call_flat(system: BandedSystem, indices: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return system.propagate_flat(x, indices)


def _double_backward_jvp(fn, x, v):
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        y = fn(xr)
        u = torch.zeros_like(y, requires_grad=True)
        (vjp,) = torch.autograd.grad(y, xr, u, create_graph=True)
        (jv,) = torch.autograd.grad(vjp, u, v)
    return y.detach(), jv.detach()
