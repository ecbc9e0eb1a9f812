"""SDE flows from torchsde, with a Brownian path fixed per interval, as banded systems."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
import torchsde
from torch import nn

from ._brownian import GridBrownian
from ._devices import digest, replica
from ._errors import InputTypeError, InputValueError
from ._grid import as_integer, check_grid, check_positive_int, check_tolerances
from ._state import StateSpec
from ._system import BandedSystem

__all__ = ["SDESystem", "SDE_METHODS"]

#: torchsde fixed-step methods that need no Lévy area and carry no state across steps.
SDE_METHODS = ("euler", "milstein", "heun", "midpoint", "euler_heun")
_NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
_SDE_TYPES = ("ito", "stratonovich")


class SDESystem(BandedSystem):
    r"""``dY = f(t, Y) dt + g(t, Y) dW`` on the grid ``t`` as a banded system.

    ``sde`` is an object as for ``torchsde.sdeint``: methods ``f(t, y)`` and
    ``g(t, y)`` (or ``f_and_g``) and attributes ``noise_type`` and ``sde_type``;
    ``y0`` has shape ``(batch, d)``.

    The Brownian increments of interval ``n`` are drawn once from a generator
    seeded by ``(seed, n)``: ``substeps`` increments of variance ``h_n/K`` each.
    So ``Φ_n`` (``substeps`` fixed steps of ``method``) is deterministic, and
    :func:`~pitsolve.sequential` uses the very same path.  A batch of intervals
    runs in **one** ``torchsde.sdeint`` call on the rescaled time
    ``s ∈ [0, 1]``: ``dY = h f(t_n + s h, Y) ds + √h g(t_n + s h, Y) dW_s`` with
    ``W_s = W_t / √h`` — for Itô and Stratonovich alike.

    :meth:`brownian_motion` returns the whole path as a torchsde Brownian
    motion in the original time, so ``torchsde.sdeint(sde, y0, t, bm=...,
    dt=h/K)`` reproduces the sequential solve.
    """

    def __init__(
        self,
        sde,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        method: str = "euler",
        substeps: int = 1,
        seed: int = 0,
        atol: float = 1.0,
        rtol: float = 1.0,
    ):
        for attr in ("noise_type", "sde_type"):
            if not hasattr(sde, attr):
                raise InputTypeError(
                    f"sde has no attribute {attr!r}; define it as for torchsde.sdeint "
                    "(e.g. noise_type='diagonal', sde_type='ito')."
                )
        if not (hasattr(sde, "f") or hasattr(sde, "f_and_g")) or not (hasattr(sde, "g") or hasattr(sde, "f_and_g")):
            raise InputTypeError("sde must define f(t, y) and g(t, y) (or f_and_g); see torchsde.sdeint.")
        for attr, allowed in (("noise_type", _NOISE_TYPES), ("sde_type", _SDE_TYPES)):
            if getattr(sde, attr) not in allowed:
                raise InputValueError(
                    f"sde.{attr}={getattr(sde, attr)!r} is not one of {list(allowed)}; set it as for torchsde.sdeint."
                )
        self._spec = StateSpec.of(y0, "y0")
        if isinstance(y0, tuple) or y0.dim() != 2:
            raise InputValueError(
                f"y0 has shape {self._spec.shapes[0] if not isinstance(y0, tuple) else 'tuple'}; "
                "torchsde states are 2-D (batch, d): use y0.reshape(batch, -1)."
            )
        self.t = check_grid(t, self._spec, increasing_only=True)
        if method not in SDE_METHODS:
            raise InputValueError(
                f"method={method!r} is not supported; choose one of {list(SDE_METHODS)} "
                "(fixed-step methods that need no Lévy area and carry no state across steps)."
            )
        seed = as_integer(seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputValueError(f"seed={seed!r} must be a non-negative int.")
        self.sde, self.method, self.seed = sde, method, seed
        self.substeps = check_positive_int(substeps, "substeps")
        self.atol, self.rtol = check_tolerances(atol, rtol)
        self._y0 = y0
        self._noise_channels = self._infer_noise_channels()
        #: Methods of ``sde`` that vmap cannot batch (e.g. ``float(t)``): called once per interval instead.
        self._unbatched = set()
        dtype, device = self._spec.dtype, self._spec.device
        self._s = torch.linspace(0.0, 1.0, self.substeps + 1, dtype=dtype, device=device)
        # Milstein differentiates g with autograd inside the step, which forward-mode
        # AD cannot trace: JVPs of this system use the double-backward trick.
        self._pitsolve_reverse_jvp = method == "milstein"
        self._check_contract()

    # -- BandedSystem ---------------------------------------------------------
    @property
    def initial_state(self) -> torch.Tensor:
        return self._y0

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
        return self._integrate(states, indices, self.increments(indices), self._s)

    def coarse_propagate(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """One step of the method over the whole interval, driven by the same path's total increment."""
        dW = self.increments(indices).sum(0, keepdim=True)
        return self._integrate(states, indices, dW, self._s[[0, -1]])

    def _integrate(self, states, indices, dW, s) -> torch.Tensor:
        B, batch, d = states.shape
        K = s.numel() - 1
        ta = self.t[indices]
        h = self.t[indices + 1] - ta
        # Increments in s-time, dW_s = dW_t / sqrt(h), as a path on the grid s: [K+1, B*batch, m].
        dW = (dW / h.sqrt().view(1, B, 1, 1)).reshape(K, B * batch, -1)
        W = torch.cat([torch.zeros_like(dW[:1]), dW.cumsum(0)], dim=0)
        rescaled = _RescaledSDE(self, ta, h, B, batch)
        ys = torchsde.sdeint(
            rescaled, states.reshape(B * batch, d), s[[0, -1]], bm=GridBrownian(s, W),
            method=self.method, dt=1.0 / K,
        )
        out = ys[-1].reshape(B, batch, d)
        # Milstein differentiates g internally, so its result carries a graph even when
        # the states do not; detach it then, or graphs would chain across sweeps.
        return out.detach() if out.requires_grad and not states.requires_grad else out

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.atol + self.rtol * states[:, self.monitored].abs()

    def to(self, device) -> "SDESystem":
        """A replica on ``device``: ``y0`` and ``t`` moved, ``sde`` moved if it is an ``nn.Module``.

        The Brownian path is drawn on the CPU from ``(seed, n)`` whatever the
        device, so every replica sees the same path.  ``self`` is not modified.
        """
        new = replica(self, device, ("_y0", "t", "_s", "sde"))
        new._spec = dataclasses.replace(self._spec, device=new.t.device)
        return new

    def fingerprint(self):
        return {
            **super().fingerprint(),
            "t": digest(self.t),
            "method": self.method,
            "substeps": str(self.substeps),
            "seed": str(self.seed),
            "atol, rtol": f"{self.atol!r}, {self.rtol!r}",
            "sde": f"{digest(self.sde)} ({self.sde.noise_type}, {self.sde.sde_type})",
        }

    # -- the fixed Brownian path ----------------------------------------------
    def increments(self, indices: torch.Tensor) -> torch.Tensor:
        """Brownian increments ``[K, B, batch, m]`` of the intervals ``indices`` (variance ``h_n/K``)."""
        batch = self._spec.shapes[0][0]
        out = []
        for n in indices.tolist():
            gen = torch.Generator(device="cpu").manual_seed(_interval_seed(self.seed, n))
            z = torch.randn(self.substeps, batch, self._noise_channels, generator=gen, dtype=torch.float64)
            out.append(z)
        z = torch.stack(out, dim=1).to(dtype=self._spec.dtype, device=self._spec.device)
        h = (self.t[indices + 1] - self.t[indices]).abs()
        return z * (h / self.substeps).sqrt().view(1, -1, 1, 1)

    def brownian_motion(self) -> GridBrownian:
        """The whole fixed path as a torchsde Brownian motion in the original time ``t``."""
        N, K = self.num_intervals, self.substeps
        idx = torch.arange(N, device=self.t.device)
        z = self.increments(idx)
        dW = z.transpose(0, 1).reshape(N * K, *z.shape[2:])
        W = torch.cat([torch.zeros_like(dW[:1]), dW.cumsum(0)], dim=0)
        frac = torch.arange(K, dtype=self.t.dtype, device=self.t.device) / K
        grid = (self.t[:-1, None] + frac[None, :] * (self.t[1:] - self.t[:-1])[:, None]).reshape(-1)
        grid = torch.cat([grid, self.t[-1:]])
        return GridBrownian(grid, W)

    # -- checks ------------------------------------------------------------------
    def _infer_noise_channels(self) -> int:
        d = self._spec.shapes[0][1]
        if self.sde.noise_type == "diagonal":
            return d
        if self.sde.noise_type == "scalar":
            return 1
        g = self.sde.f_and_g(self.t[0], self._y0)[1] if not hasattr(self.sde, "g") else self.sde.g(self.t[0], self._y0)
        if g.dim() != 3:
            raise InputValueError(
                f"sde.g returned shape {tuple(g.shape)} for noise_type={self.sde.noise_type!r}; "
                "expected (batch, d, m)."
            )
        return g.shape[2]

    def _check_contract(self) -> None:
        self._check_shapes()
        try:
            out = self.propagate(self._y0.unsqueeze(0), torch.zeros(1, dtype=torch.long, device=self.t.device))
        except ValueError as err:
            raise InputValueError(f"torchsde rejected the SDE: {err}") from err
        self._spec.check_batch(out, 1, "the SDE step")

    def _check_output(self, name: str, out, B: int) -> None:
        """Raise unless ``out``, ``sde.<name>`` on ``B`` intervals at once, has the shape, dtype and device it must."""
        batch, d = self._spec.shapes[0]
        expected = (batch, d) if name == "f" or self.sde.noise_type == "diagonal" else (batch, d, self._noise_channels)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, *expected):
            got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputValueError(
                f"sde.{name} returned shape {got} for y of shape {(batch, d)} and "
                f"noise_type={self.sde.noise_type!r}; make it return shape {expected}."
            )
        if out.dtype != self._spec.dtype:
            raise InputTypeError(
                f"sde.{name} returned dtype {out.dtype} but y0 has dtype {self._spec.dtype}; "
                "return the dtype of y (e.g. create constants with .to(y))."
            )
        if out.device != self._spec.device:
            raise InputTypeError(
                f"sde.{name} returned a tensor on {out.device} but y0 lies on {self._spec.device}; "
                "return it on y's device (e.g. create constants with .to(y))."
            )

    def _check_shapes(self) -> None:
        """Call the drift and diffusion once on ``y0`` and name any shape that does not fit it."""
        sde, t0, y0 = self.sde, self.t[0], self._y0
        f = sde.f(t0, y0) if hasattr(sde, "f") else sde.f_and_g(t0, y0)[0]
        g = sde.g(t0, y0) if hasattr(sde, "g") else sde.f_and_g(t0, y0)[1]
        batch, d = self._spec.shapes[0]
        m = self._noise_channels
        expected_g = (batch, d) if sde.noise_type == "diagonal" else (batch, d, m)
        for name, out, expected in (("f", f, (batch, d)), ("g", g, expected_g)):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if got != expected:
                raise InputValueError(
                    f"sde.{name} returned shape {got} for y0 of shape {(batch, d)} and "
                    f"noise_type={sde.noise_type!r}; make it return shape {expected}."
                )


class _RescaledSDE(nn.Module):
    """The user's SDE on s ∈ [0, 1] for B intervals at once (per-row time)."""

    def __init__(self, system: "SDESystem", ta: torch.Tensor, h: torch.Tensor, B: int, batch: int):
        super().__init__()
        self.system, self.base, self.ta, self.h, self.B, self.batch = system, system.sde, ta, h, B, batch
        self.noise_type, self.sde_type = self.base.noise_type, self.base.sde_type

    def _call(self, name, s, y):
        """``sde.<name>`` on every interval: ``[B, batch, ...]`` (a tuple of two for ``f_and_g``).

        Batched with vmap, where each call sees ``t`` as a 0-dim tensor as in
        torchsde.  A method vmap cannot trace (``float(t)``, ``.item()``,
        data-dependent control flow) is called once per interval instead,
        with ``t`` a plain 0-dim tensor, after a one-time warning.
        """
        fn = getattr(self.base, name)
        tt = self.ta + s * self.h
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
            return self._scale(self._per_interval("f", s, y), self.h)
        return self.f_and_g(s, y)[0]

    def g(self, s, y):
        if hasattr(self.base, "g"):
            return self._scale(self._per_interval("g", s, y), self.h.sqrt())
        return self.f_and_g(s, y)[1]

    def f_and_g(self, s, y):
        if hasattr(self.base, "f") and hasattr(self.base, "g"):
            return self.f(s, y), self.g(s, y)
        f, g = self._call("f_and_g", s, y)
        self.system._check_output("f", f, self.B)
        self.system._check_output("g", g, self.B)
        f = f.reshape(self.B * self.batch, *f.shape[2:])
        g = g.reshape(self.B * self.batch, *g.shape[2:])
        return self._scale(f, self.h), self._scale(g, self.h.sqrt())


def _interval_seed(seed: int, n: int) -> int:
    """A 63-bit seed for interval ``n`` of run ``seed`` (independent streams via SeedSequence)."""
    return int(np.random.SeedSequence([seed, n]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
