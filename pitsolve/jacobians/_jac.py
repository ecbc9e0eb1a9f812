"""Materialised Jacobians ``J_n`` of a window, in one batched JVP call.

Row 0 of a window multiplies ``δ_0 = 0`` (the anchor is fixed), so its
Jacobian is never needed: only rows ``1 … p−1`` are evaluated and row 0 is
zero.  The batched JVP call is one more wave of ``K`` fine steps on the
critical path (depth) after the wave of ``Φ``.
"""

from __future__ import annotations

import torch

from ._base import Sweep

__all__ = ["jacobian_columns", "probe_diagonal"]


def _batched_jvp(sweep: Sweep, copies: int, tangents: torch.Tensor) -> torch.Tensor:
    """``J_i v`` for rows ``1 … p−1`` of the window, ``copies`` tangents per row, one call."""
    x, idx = sweep.x[1:-1], sweep.indices[1:]
    xs = x.repeat_interleave(copies, dim=0)
    ids = idx.repeat_interleave(copies)
    _, jv = sweep.system.jvp_flat(xs, ids, tangents)
    K = sweep.system.steps_per_interval
    sweep.cost.nfe += xs.shape[0] * K
    sweep.cost.depth += K
    return jv


def jacobian_columns(sweep: Sweep) -> torch.Tensor:
    """``J_i = ∂Φ_i/∂X_i`` at the window's iterates, ``[p, D, D]`` (row 0 zero).

    The ``(p−1)·D`` Jacobian-vector products (one per basis vector) run in a
    single batched :meth:`~pitsolve.BandedSystem.jvp_flat` call.
    """
    p, D = sweep.fx.shape
    out = torch.zeros((p, D, D), dtype=sweep.fx.dtype, device=sweep.fx.device)
    if p > 1:
        basis = torch.eye(D, dtype=out.dtype, device=out.device).repeat(p - 1, 1)
        out[1:] = _batched_jvp(sweep, D, basis).view(p - 1, D, D).transpose(1, 2)
    return out


def probe_diagonal(sweep: Sweep, probes: int, generator: torch.Generator) -> torch.Tensor:
    """Stochastic estimate of ``diag(J_i)``, ``[p, D]`` (row 0 zero): ``E[v ⊙ J v]`` over Rademacher ``v``."""
    p, D = sweep.fx.shape
    out = torch.zeros((p, D), dtype=sweep.fx.dtype, device=sweep.fx.device)
    if p > 1:
        v = torch.randint(0, 2, ((p - 1) * probes, D), generator=generator).to(out) * 2 - 1
        jv = _batched_jvp(sweep, probes, v)
        out[1:] = (v * jv).view(p - 1, probes, D).mean(dim=1)
    return out
