"""``A_n = J_n``: Newton on the banded system (Prop. 3, DEER)."""

from __future__ import annotations

import torch

from .._errors import InputValueError
from .._scan import linear_scan
from ._base import JacobianStrategy, Sweep
from ._jac import jacobian_columns

__all__ = ["ExactJVP", "Dense"]


class ExactJVP(JacobianStrategy):
    r"""Newton with matrix-free Jacobian-vector products (Prop. 3, Eq. 11).

    .. math:: X^{k+1}_{n+1} = Φ_n(X^k_n) + J_n(X^k_n)\,(X^{k+1}_n − X^k_n)

    The recurrence in ``δ`` is swept point by point, one JVP each, so its
    depth grows with the window: a verification tool for small N.  (On a
    CPU each JVP also pays the Python overhead of forward-mode AD through
    the integrator, so wall time is far above what the depth suggests.)  On an
    affine ``Φ`` it is exact in one iteration; on smooth problems it converges
    quadratically.
    """

    name = "newton"

    def extra_depth(self, system, p: int) -> int:
        return (p - 1) * system.steps_per_interval

    def update(self, sweep: Sweep) -> torch.Tensor:
        b, x = sweep.b, sweep.x
        K = sweep.system.steps_per_interval
        deltas = [b[0]]
        for i in range(1, sweep.size):
            _, jv = sweep.system.jvp_flat(x[i : i + 1], sweep.indices[i : i + 1], deltas[-1].unsqueeze(0))
            deltas.append(b[i] + jv[0])
            sweep.cost.nfe += K
            sweep.cost.depth += K
        return x[1:] + torch.stack(deltas)


class Dense(JacobianStrategy):
    r"""Newton with materialised Jacobians and a parallel associative scan (DEER).

    All ``J_n`` of the window come from one batched JVP call (``D`` per point),
    the same forward-mode call that evaluates ``Φ`` (one wave, no extra depth);
    the recurrence ``δ_{i+1} = J_i δ_i + b_i`` is solved by a scan over the
    affine pairs ``(J_i, b_i)`` in O(log p) depth.  Memory ``p·D²``: meant for
    states of at most ``max_size`` entries.
    """

    name = "dense"

    def __init__(self, max_size: int = 256):
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise InputValueError(f"max_size={max_size!r} must be an int >= 1 (the largest state size D).")
        self.max_size = max_size

    def init(self, system) -> None:
        D = system.spec.size
        if D > self.max_size:
            raise InputValueError(
                f"Dense materialises {D}x{D} Jacobians (state size D={D} > max_size={self.max_size}); "
                "use jacobian='newton' (matrix-free) or 'diagonal', or raise Dense(max_size=...)."
            )

    def wave_tangents(self, system) -> torch.Tensor:
        D = system.spec.size
        return torch.eye(D, dtype=system.spec.dtype, device=system.spec.device)

    def extra_depth(self, system, p: int) -> int:
        return 0  # the Jacobians come with Φ, in the same wave (wave_tangents)

    def update(self, sweep: Sweep) -> torch.Tensor:
        jac = sweep.jacobian if sweep.jacobian is not None else jacobian_columns(sweep)
        return sweep.x[1:] + linear_scan(jac, sweep.b, dense=True)

    def __repr__(self) -> str:
        return f"Dense(max_size={self.max_size})"
