"""Materialised Jacobians ``J_n`` of a window, in one batched JVP call."""

from __future__ import annotations

import torch

from ._base import Sweep

__all__ = ["jacobian_columns", "probe_diagonal"]


def jacobian_columns(sweep: Sweep) -> torch.Tensor:
    """``J_i = ∂Φ_i/∂X_i`` at the window's iterates, ``[p, D, D]``.

    All ``p·D`` Jacobian-vector products (one per basis vector) run in a
    single batched :meth:`~pitsolve.BandedSystem.jvp_flat` call.
    """
    x, idx = sweep.x[:-1], sweep.indices
    p, D = x.shape
    xs = x.repeat_interleave(D, dim=0)
    ids = idx.repeat_interleave(D)
    basis = torch.eye(D, dtype=x.dtype, device=x.device).repeat(p, 1)
    _, jv = sweep.system.jvp_flat(xs, ids, basis)
    sweep.cost.nfe += p * D * sweep.system.steps_per_interval
    return jv.view(p, D, D).transpose(1, 2)


def probe_diagonal(sweep: Sweep, probes: int, generator: torch.Generator) -> torch.Tensor:
    """Stochastic estimate of ``diag(J_i)``, ``[p, D]``: ``E[v ⊙ J v]`` over Rademacher ``v``."""
    x, idx = sweep.x[:-1], sweep.indices
    p, D = x.shape
    xs = x.repeat_interleave(probes, dim=0)
    ids = idx.repeat_interleave(probes)
    v = torch.randint(0, 2, (p * probes, D), generator=generator).to(x) * 2 - 1
    _, jv = sweep.system.jvp_flat(xs, ids, v)
    sweep.cost.nfe += p * probes * sweep.system.steps_per_interval
    return (v * jv).view(p, probes, D).mean(dim=1)
