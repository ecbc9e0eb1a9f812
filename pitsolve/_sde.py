"""SDE flows from torchsde, with a Brownian path fixed per interval, as banded systems."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional, Tuple, Union

import torch
import torchsde
from torch import nn

from ._brownian import GridBrownian, Noise
from ._devices import digest, replica
from ._errors import InputTypeError, InputValueError
from ._grid import as_integer, check_grid, check_positive_int, check_tolerances
from ._sde_checks import SDEChecks
from ._sde_extra import check_extra_state, check_options, final_extra_state
from ._sde_noise import BrownianPath
from ._sde_views import renamed, with_logqp
from ._state import StateSpec
from ._system import BandedSystem

__all__ = ["SDESystem", "SDE_METHODS", "SDE_ALL_METHODS"]

#: torchsde fixed-step methods that need no Lévy area and carry no state across steps.
SDE_METHODS = ("euler", "milstein", "heun", "midpoint", "euler_heun")
#: Every torchsde method pitsolve integrates: :data:`SDE_METHODS`, ``srk`` (needs the
#: space-time Lévy area), ``reversible_heun`` (carries a second state ``z``) and ``log_ode``
#: (needs a Lévy-area approximation, so a user ``bm``).
SDE_ALL_METHODS = SDE_METHODS + ("srk", "reversible_heun", "log_ode")
_NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
_SDE_TYPES = ("ito", "stratonovich")


def default_method(noise_type: str, sde_type: str) -> str:
    """torchsde's choice for ``method=None``: ``srk`` for Itô SDEs but general noise (``euler``), ``midpoint`` for Stratonovich."""
    if sde_type == "stratonovich":
        return "midpoint"
    return "euler" if noise_type == "general" else "srk"


class SDESystem(BrownianPath, SDEChecks, BandedSystem):
    r"""``dY = f(t, Y) dt + g(t, Y) dW`` on the grid ``t`` as a banded system.

    ``sde`` is an object as for ``torchsde.sdeint``: methods ``f(t, y)`` and
    ``g(t, y)`` (or ``f_and_g``) and attributes ``noise_type`` and ``sde_type``;
    ``y0`` has shape ``(batch, d)``; ``t`` is strictly increasing (torchsde
    refuses decreasing times too).  ``method`` is one of
    :data:`SDE_ALL_METHODS` (``None``: torchsde's default for the SDE's type).

    **The Brownian path.**  ``Φ_n`` runs ``substeps`` (K) fixed steps of
    ``method`` on ``[t_n, t_{n+1}]``, at ``t_n + kδ_n`` with ``δ_n = h_n/K``,
    driven by fixed increments, so it is deterministic and
    :func:`~pitsolve.sequential` uses the very same path:

    * ``bm=None``: the increments of interval ``n`` are drawn from a
      generator seeded by ``(seed, n)``, variance ``δ_n`` each; for ``srk``
      the space-time Lévy areas ``H ~ N(0, δ_n/12)`` (independent of the
      increments, as for Brownian motion) from the stream ``(seed, n, 1)``.
    * ``bm=`` any ``torchsde.BaseBrownian`` (``BrownianInterval``,
      ``BrownianTree``, ``BrownianPath``) of shape ``(batch, m)``: the
      increments of step ``k`` of interval ``n`` are ``bm(t_n + kδ_n,
      t_n + (k+1)δ_n)`` (with ``U``/``A`` where the method needs them),
      queried once, in time order, when the system is built.  Then
      ``sequential(system)`` equals ``torchsde.sdeint(sde, y0, t, bm=bm,
      dt=δ, method=method)`` — exactly when the step times are exact in
      floating point (torchsde accumulates ``t += dt``), e.g. dyadic grids.

    **The state.**  :attr:`initial_state` is ``y0``, with one more column
    ``L`` (the log-ratio, starting at 0) when ``logqp=True``, and for
    ``reversible_heun`` followed by its second state ``z`` (``z_0 = y_0``):
    torchsde carries ``(f, g, z)`` from step to step, and ``f, g`` are
    ``f_and_g(t, z)``, so ``Φ_n`` maps ``(y_n, z_n) ↦ (y_{n+1}, z_{n+1})``
    and recomputes ``f, g`` at ``t_n`` (one extra ``f_and_g`` per interval).
    :meth:`outputs` turns a trajectory into what ``torchsde.sdeint``
    returns.  ``names`` maps torchsde's roles (``drift``, ``diffusion``,
    ``prior_drift``, ``drift_and_diffusion``) to the sde's method names.
    ``options`` are torchsde's method options (``grad_free`` for
    ``milstein``), passed to its solver.  ``extra_solver_state`` is
    torchsde's: ``()``, or ``reversible_heun``'s ``(f, g, z)``, whose ``z``
    starts the state and whose ``f, g`` must be ``f_and_g(t_0, z)``
    (:mod:`pitsolve._sde_extra`); :meth:`extra_state` returns it at ``t[-1]``.

    **Batching.**  A batch of intervals runs in **one** ``torchsde.sdeint``
    call on the rescaled time ``s ∈ [0, K]`` with unit steps (exact in
    floating point): ``dY = δ f(t_n + sδ, Y) ds + √δ g(t_n + sδ, Y) dW_s``
    with ``W_s = W_t/√δ``, ``H_s = H/√δ``, ``A_s = A/δ`` — for Itô and
    Stratonovich alike.  :meth:`brownian_motion` returns the path in the
    original time (the user's ``bm`` itself when one was given).

    **Gradients** flow to the sde's parameters through :func:`~pitsolve.sequential`
    and :func:`~pitsolve.solve` as through ``torchsde.sdeint``.
    """

    def __init__(
        self,
        sde,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        method: Optional[str] = "euler",
        substeps: int = 1,
        seed: int = 0,
        bm: Optional[torchsde.BaseBrownian] = None,
        logqp: bool = False,
        names: Optional[dict] = None,
        atol: float = 1.0,
        rtol: float = 1.0,
        options: Optional[dict] = None,
        extra_solver_state: Optional[tuple] = None,
    ):
        view = renamed(sde, names)
        for attr in ("noise_type", "sde_type"):
            if not hasattr(view, attr):
                raise InputTypeError(
                    f"sde has no attribute {attr!r}; define it as for torchsde.sdeint "
                    "(e.g. noise_type='diagonal', sde_type='ito')."
                )
        if not (hasattr(view, "f") or hasattr(view, "f_and_g")) or not (hasattr(view, "g") or hasattr(view, "f_and_g")):
            raise InputTypeError("sde must define f(t, y) and g(t, y) (or f_and_g); see torchsde.sdeint.")
        for attr, allowed in (("noise_type", _NOISE_TYPES), ("sde_type", _SDE_TYPES)):
            if getattr(view, attr) not in allowed:
                raise InputValueError(
                    f"sde.{attr}={getattr(view, attr)!r} is not one of {list(allowed)}; set it as for torchsde.sdeint."
                )
        if not isinstance(logqp, bool):
            raise InputTypeError(f"logqp={logqp!r} must be True or False.")
        core = with_logqp(view) if logqp else view
        user_spec = StateSpec.of(y0, "y0")
        if isinstance(y0, tuple) or y0.dim() != 2:
            raise InputValueError(
                f"y0 has shape {user_spec.shapes[0] if not isinstance(y0, tuple) else 'tuple'}; "
                "torchsde states are 2-D (batch, d): use y0.reshape(batch, -1)."
            )
        try:
            self.t = check_grid(t, user_spec, increasing_only=True)
        except InputValueError:
            _refuse_decreasing(t)  # with torchsde's reason, where t is decreasing
            raise
        if method is None:
            method = default_method(view.noise_type, view.sde_type)
        if method not in SDE_ALL_METHODS:
            hint = (" (it serves sdeint_adjoint only, as in torchsde)" if method == "adjoint_reversible_heun" else "")
            raise InputValueError(f"method={method!r} is not supported{hint}; choose one of {list(SDE_ALL_METHODS)}.")
        seed = as_integer(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputValueError(f"seed={seed!r} must be a non-negative int.")
        self.sde, self.method, self.seed, self.names, self.logqp = sde, method, seed, names, logqp
        #: torchsde's method options, passed to its solver (``grad_free`` for ``milstein``).
        self.options = check_options(options, method)
        self._core = core
        self.substeps = check_positive_int(substeps, "substeps")
        self.atol, self.rtol = check_tolerances(atol, rtol)
        self._y0 = y0
        self._d = y0.shape[1]
        #: The dimension torchsde integrates: d, plus the log-ratio column with logqp.
        self._sde_dim = self._d + int(logqp)
        z0 = check_extra_state(extra_solver_state, method, core, self.t[0], y0, self._sde_dim)
        self._x0 = self.initial_state_of(y0, z0)
        self._spec = StateSpec.of(self._x0, "y0")
        self._noise_channels = self._infer_noise_channels()
        #: Methods of ``sde`` that vmap cannot batch (e.g. ``float(t)``): called once per interval instead.
        self._unbatched = set()
        self.bm = self._check_bm(bm)
        self._path = self._query_bm() if bm is not None else None
        # Milstein and the log-ODE scheme differentiate g with autograd inside the step, which
        # forward-mode AD cannot trace: JVPs of this system use the double-backward trick.
        self._pitsolve_reverse_jvp = method in ("milstein", "log_ode")
        self._check_contract()

    # -- BandedSystem ---------------------------------------------------------
    @property
    def initial_state(self) -> torch.Tensor:
        return self._x0

    def initial_state_of(self, y0: torch.Tensor, z0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The state ``X_0`` of ``y0``: ``[y0 (, L = 0)]``, then ``reversible_heun``'s ``z_0`` (``z0``, default that).

        Differentiable in ``y0`` and ``z0`` (the parallel adjoint chains ``∂L/∂X_0`` back through it).
        """
        x0 = torch.cat([y0, torch.zeros_like(y0[:, :1])], dim=1) if self.logqp else y0
        if self.method != "reversible_heun":
            return x0
        return torch.cat([x0, x0 if z0 is None else z0], dim=1)

    @property
    def num_intervals(self) -> int:
        return self.t.numel() - 1

    @property
    def spec(self) -> StateSpec:  # type: ignore[override]
        return self._spec

    @property
    def steps_per_interval(self) -> int:  # type: ignore[override]
        return self.substeps

    def propagate(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self._integrate(states, indices, coarse=False)

    def coarse_propagate(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """One step of the method over the whole interval, driven by the same path (its increments joined exactly)."""
        return self._integrate(states, indices, coarse=True)

    def _integrate(self, states: torch.Tensor, indices: torch.Tensor, coarse: bool) -> torch.Tensor:
        B, batch, D = states.shape
        K = self.substeps
        ta = self.t[indices]
        delta = (self.t[indices + 1] - ta) / K
        noise = self.noise(indices).scaled(delta.view(1, B, 1, 1))  # in s-time, [K, B, batch, m(, m)]
        W = noise.W.reshape(K, B * batch, -1)
        W = torch.cat([torch.zeros_like(W[:1]), W.cumsum(0)], dim=0)
        flat = [None if x is None else x.reshape(K, B * batch, *x.shape[3:]) for x in (noise.H, noise.A)]
        grid = torch.arange(K + 1, dtype=W.dtype, device=W.device)
        levy = None if self.bm is None else self.bm.levy_area_approximation
        path = GridBrownian(grid, W, *flat, levy_area_approximation=levy if flat[1] is not None else None)
        rescaled = _RescaledSDE(self, ta, delta, B, batch)
        x = states.reshape(B * batch, D)
        ends, step = grid[[0, -1]], float(K if coarse else 1)
        if self.method == "reversible_heun":
            y, z = x.split(self._sde_dim, dim=1)
            f0, g0 = rescaled.f_and_g(ends[0], z)
            ys, (_, _, z1) = torchsde.sdeint(
                rescaled, y, ends, bm=path, method=self.method, dt=step, extra_solver_state=(f0, g0, z), extra=True
            )
            out = torch.cat([ys[-1], z1], dim=1)
        else:
            out = torchsde.sdeint(rescaled, x, ends, bm=path, method=self.method, dt=step, options=self.options)[-1]
        out = out.reshape(B, batch, D)
        # Milstein (and log-ODE) differentiate g internally, so their result carries a graph even
        # when neither the states nor the sde's parameters need one; detach it then, or graphs
        # would chain across sweeps.  With parameters that need grad the graph is the gradient's.
        if out.requires_grad and not states.requires_grad and not self._parameters_need_grad:
            out = out.detach()
        return out

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * states[:, self.monitored].abs()

    def outputs(self, ys: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """What ``torchsde.sdeint`` returns for the trajectory ``ys`` ``[T, batch, D]`` of this system.

        ``ys[..., :d]`` (``z`` of ``reversible_heun`` dropped); with
        ``logqp=True`` the pair ``(ys[..., :d], log_ratio)`` where
        ``log_ratio[n] = L(t_{n+1}) − L(t_n)``, shape ``[T−1, batch]``.
        """
        y = ys[..., : self._d]
        if not self.logqp:
            return y
        L = ys[..., self._d]
        return y, L[1:] - L[:-1]

    def extra_state(self, ys: torch.Tensor) -> tuple:
        """torchsde's ``extra_solver_state`` at ``t[-1]`` of ``ys``: ``()``, or ``(f, g, z)`` for ``reversible_heun``.

        Pass it as ``extra_solver_state`` to a solve starting at ``t[-1]`` to continue this one.
        """
        z = ys[-1, :, self._sde_dim:] if self.method == "reversible_heun" else None
        return final_extra_state(self.method, self._core, self.t[-1], z)

    def to(self, device) -> "SDESystem":
        """A replica on ``device``: ``y0``, ``t`` and the fixed path moved, ``sde`` moved if it is an ``nn.Module``.

        The seeded path is drawn on the CPU from ``(seed, n)`` whatever the
        device, so every replica sees the same path.  ``self`` is not modified.
        """
        new = replica(self, device, ("_y0", "_x0", "t", "sde", "_path"))
        new._path = None if new._path is None else Noise(*new._path)
        new._core = with_logqp(renamed(new.sde, self.names)) if self.logqp else renamed(new.sde, self.names)
        new._spec = dataclasses.replace(self._spec, device=new.t.device)
        return new

    def fingerprint(self):
        return {
            **super().fingerprint(),
            "t": digest(self.t),
            "method": self.method,
            "substeps": str(self.substeps),
            "seed": str(self.seed),
            "bm": "none" if self._path is None else digest(self._path.W),
            "logqp, names": f"{self.logqp}, {sorted(self.names.items()) if self.names else None}",
            "options": repr(sorted(self.options.items())),
            "atol, rtol": f"{self.atol!r}, {self.rtol!r}",
            "sde": f"{digest(self.sde)} ({self._core.noise_type}, {self._core.sde_type})",
        }

def _refuse_decreasing(t: torch.Tensor) -> None:
    """Refuse a strictly decreasing grid ``t`` (that failed the increasing check) as ``torchsde.sdeint`` does."""
    if t.dim() == 1 and t.numel() >= 2 and bool(torch.isfinite(t).all()) and bool((t[1:] < t[:-1]).all()):
        raise InputValueError(
            f"t is decreasing (t[0]={t[0].item()} > t[1]={t[1].item()}); torchsde.sdeint refuses decreasing "
            "times as well (its solvers step forward; only sdeint_adjoint runs backward, internally). "
            "Pass increasing times, e.g. t.flip(0), and reverse the SDE yourself if you need backward time."
        ) from None


class _RescaledSDE(nn.Module):
    """The user's SDE on s ∈ [0, K] for B intervals at once (per-row time t = t_n + s·δ_n)."""

    def __init__(self, system: "SDESystem", ta: torch.Tensor, delta: torch.Tensor, B: int, batch: int):
        super().__init__()
        # t = ta + s·δ: f is scaled by δ and g by √δ (the SDESystem docstring's "Batching").
        self.system, self.base, self.ta, self.delta, self.B, self.batch = system, system._core, ta, delta, B, batch
        self.noise_type, self.sde_type = self.base.noise_type, self.base.sde_type

    def _call(self, name, s, y):
        """``sde.<name>`` on every interval: ``[B, batch, ...]`` (a tuple of two for ``f_and_g``).

        Batched with vmap, where each call sees ``t`` as a 0-dim tensor as in
        torchsde.  A method vmap cannot trace (``float(t)``, ``.item()``,
        data-dependent control flow) is called once per interval instead,
        with ``t`` a plain 0-dim tensor, after a one-time warning.
        """
        fn = getattr(self.base, name)
        tt = self.ta + s * self.delta
        yb = y.reshape(self.B, self.batch, -1)
        if name not in self.system._unbatched:
            try:
                return torch.func.vmap(fn, in_dims=(0, 0))(tt, yb)
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
                if "vmap" not in str(err).lower() and "batched" not in str(err).lower():
                    raise
                reason = str(err).splitlines()[0].split(". ")[0][:160]
            outs = [fn(tt[i], yb[i]) for i in range(self.B)]  # the user's own errors surface here unchanged
            self.system._unbatched.add(name)
            warnings.warn(
                f"sde.{name} cannot be batched over intervals with torch.func.vmap ({reason}); pitsolve "
                "calls it once per interval instead, which is slower. To batch it, compute with t as a "
                "tensor (e.g. 0.3 * t instead of 0.3 * float(t)) and avoid .item() and data-dependent control flow.",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            outs = [fn(tt[i], yb[i]) for i in range(self.B)]
        if name == "f_and_g":
            return tuple(torch.stack([o[k] for o in outs]) for k in range(2))
        return torch.stack(outs)

    def _per_interval(self, name, s, y):
        out = self._call(name, s, y)
        self.system._check_output(name, out, self.B)
        return out.reshape(self.B * self.batch, *out.shape[2:])

    def _scale(self, value, factor):
        rows = factor.repeat_interleave(self.batch)
        return value * rows.view(-1, *([1] * (value.dim() - 1)))

    def f(self, s, y):
        if hasattr(self.base, "f"):
            return self._scale(self._per_interval("f", s, y), self.delta)
        return self.f_and_g(s, y)[0]

    def g(self, s, y):
        if hasattr(self.base, "g"):
            return self._scale(self._per_interval("g", s, y), self.delta.sqrt())
        return self.f_and_g(s, y)[1]

    def f_and_g(self, s, y):
        if hasattr(self.base, "f") and hasattr(self.base, "g"):
            return self.f(s, y), self.g(s, y)
        f, g = self._call("f_and_g", s, y)
        self.system._check_output("f", f, self.B)
        self.system._check_output("g", g, self.B)
        f = f.reshape(self.B * self.batch, *f.shape[2:])
        g = g.reshape(self.B * self.batch, *g.shape[2:])
        return self._scale(f, self.delta), self._scale(g, self.delta.sqrt())
