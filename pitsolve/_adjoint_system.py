r"""The discrete adjoint of a banded system, itself a banded (affine) system (docs/odes.md, "The parallel adjoint").

For the forward chain ``X_{n+1} = Φ_n(X_n; θ)``, ``n = 0 … N−1``, and a loss
``L(X_0, …, X_N)`` with cotangents ``G_n = ∂L/∂X_n``, backpropagation is the
backward recursion (discretise-then-optimise)

.. math:: λ_N = G_N, \qquad λ_n = J_n^T λ_{n+1} + G_n, \qquad J_n = ∂Φ_n/∂X_n (X_n),

    ∂L/∂X_0 = λ_0, \qquad ∂L/∂θ = \sum_n (∂Φ_n/∂θ)^T λ_{n+1}.

Numbered backwards, ``Λ_m = λ_{N−m}``, it is the chain ``Λ_{m+1} = Ψ_m(Λ_m)``
with the affine propagator

.. math:: Ψ_m(Λ) = J_{N−1−m}^T Λ + G_{N−1−m}, \qquad Λ_0 = G_N,

whose Jacobian ``J_{N−1−m}^T`` does not depend on ``Λ``.  :class:`AdjointSystem`
is that chain as a :class:`~pitsolve.BandedSystem`, so :func:`~pitsolve.solve`
and every strategy of :mod:`pitsolve.jacobians` solve it: a batched call of
``Ψ`` is one batched vector–Jacobian product through ``Φ_n``, recomputed from
the stored ``X_n`` with autograd and freed after the call (its graph spans
the rows of one call, never the sweeps or N).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from ._system import BandedSystem

__all__ = ["AdjointSystem", "vjp"]


def vjp(fn, x: torch.Tensor, cotangents: torch.Tensor,
        params: Sequence[torch.Tensor] = ()) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
    r"""``(J^T u, (∂fn/∂θ)^T u)`` for ``y = fn(x)`` with rows ``x [B, D]`` and cotangents ``u [B, D]``.

    ``fn`` is recomputed from a detached ``x`` under autograd and its graph is
    released on return; a parameter (or ``x``) that ``fn`` does not use gets
    zeros.  The parameter gradients are summed over the rows.
    """
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        y = fn(xr)
        inputs = (xr, *params)
        if not y.requires_grad:
            grads = (None,) * len(inputs)
        else:
            grads = torch.autograd.grad(y, inputs, cotangents, allow_unused=True)
    grads = tuple(torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads))
    return grads[0], grads[1:]


class AdjointSystem(BandedSystem):
    r"""``Λ_{m+1} = J_{N−1−m}^T Λ_m + G_{N−1−m}``, ``Λ_0 = G_N``: the adjoint of ``forward`` run backwards.

    Args:
        forward: the forward system (its :meth:`~pitsolve.BandedSystem.propagate_flat`
            is differentiated; its :attr:`steps_per_interval` and
            :meth:`call_cost` give the cost of one vector–Jacobian product).
        xs: the forward trajectory, flat ``[N+1, D]`` (``X_0 … X_N``).
        grads: the cotangents ``G_0 … G_N``, flat ``[N+1, D]``.

    The stopping rule's scale is ``s = g + |Λ|`` elementwise with
    ``g = max_d Σ_n |G_n[d]|``, the largest adjoint the cotangents alone build
    up (``λ_0 = Σ_n G_n`` when every ``J_n = I``): relative to the adjoint, in
    the units of the accumulated cotangents, so that an entry of ``λ`` that
    crosses zero is not held to a relative accuracy the gradient does not need,
    and multiplying the loss by a constant changes no decision of the solve.  :attr:`calls`
    counts the batched calls (the sequential waves of vector–Jacobian products).
    """

    def __init__(self, forward: BandedSystem, xs: torch.Tensor, grads: torch.Tensor):
        self.forward = forward
        self.xs, self.grads = xs, grads
        self.N = xs.shape[0] - 1
        # The floor of the scale: the largest |λ| the cotangents alone can build up (J = I: λ_0 = Σ_n G_n).
        peak = grads.abs().sum(dim=0).max()
        self.floor = torch.where(peak > 0, peak, torch.ones_like(peak))
        self.calls = 0

    # -- BandedSystem -----------------------------------------------------------------------------
    @property
    def initial_state(self) -> torch.Tensor:
        return self.grads[self.N]

    @property
    def num_intervals(self) -> int:
        return self.N

    @property
    def steps_per_interval(self) -> int:  # type: ignore[override]
        """The forward's fine steps of one ``Φ_n``: a product ``J_n^T u`` recomputes and differentiates them."""
        return self.forward.steps_per_interval

    def call_cost(self, indices: torch.Tensor):
        return self.forward.call_cost(self.forward_index(indices))

    def propagate(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``Ψ_m(Λ) = J_n^T Λ + G_n`` with ``n = N−1−m``, one batched vector–Jacobian product."""
        n = self.forward_index(indices)
        return self.transpose_products(n, states) + self.grads[n]

    def coarse_propagate(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``G^T_n Λ + G_n`` with the forward's coarse propagator (Parareal, ``init="coarse"``)."""
        n = self.forward_index(indices)
        self.calls += 1
        out, _ = vjp(lambda x: self.forward.coarse_flat(x, n), self.xs[n], states)
        return out + self.grads[n]

    def jvp_flat(self, x: torch.Tensor, indices: torch.Tensor, tangents: torch.Tensor):
        """``(Ψ_m(x), J_n^T v)``: ``Ψ`` is affine, so both are products with ``J_n^T``, in one batched call."""
        n = self.forward_index(indices)
        out = self.transpose_products(torch.cat([n, n]), torch.cat([x, tangents]))
        B = x.shape[0]
        return out[:B] + self.grads[n], out[B:]

    def error_scale(self, states: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self.floor + states.abs()

    # -- the products -----------------------------------------------------------------------------
    def forward_index(self, indices: torch.Tensor) -> torch.Tensor:
        """The forward interval ``n = N−1−m`` of adjoint interval ``m``."""
        return self.N - 1 - indices

    def transpose_products(self, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``J_n^T u_b`` for every row ``b``: ``Φ_n`` recomputed at the stored ``X_n`` and differentiated."""
        self.calls += 1
        out, _ = vjp(lambda x: self.forward.propagate_flat(x, n), self.xs[n], u)
        return out
