"""Brownian paths fixed on a grid: the increments (and Lévy areas) that drive an SDE's ``Φ_n``.

Notation (torchsde's, Foster et al. 2020): on a step ``[a, b]`` of length
``δ = b − a``

* ``W``  — the increment ``W_b − W_a``;
* ``H``  — the space-time Lévy area, ``H = U/δ − W/2`` with
  ``U = ∫_a^b (W_s − W_a) ds``; ``H ~ N(0, δ/12)`` independent of ``W``;
* ``A``  — the (antisymmetric) Lévy area ``½∫_a^b (W_s − W_a) ⊗ dW_s − dW_s ⊗ (W_s − W_a)``
  or its Davie/Foster approximation, shape ``[..., m, m]``.

:class:`GridBrownian` serves these per grid step to torchsde's solvers;
:func:`aggregate` joins consecutive steps exactly (Chen's relation), which is
what a query over several steps returns.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torchsde import BaseBrownian

__all__ = ["GridBrownian", "Noise", "aggregate"]


class Noise(NamedTuple):
    """Per-step Brownian data ``[K, ...]`` of K consecutive steps: ``W``, and ``H``, ``A`` where carried."""

    W: torch.Tensor
    H: Optional[torch.Tensor] = None
    A: Optional[torch.Tensor] = None

    def scaled(self, delta: torch.Tensor) -> "Noise":
        """The same path in the time ``s = t/δ``: ``W, H ↦ W/√δ`` and ``A ↦ A/δ`` (δ broadcast from the left)."""
        root = delta.sqrt()
        return Noise(
            self.W / root,
            None if self.H is None else self.H / root,
            None if self.A is None else self.A / delta.unsqueeze(-1),
        )


def aggregate(noise: Noise, lengths: torch.Tensor) -> Noise:
    """``W``, ``H``, ``A`` of the union of K consecutive steps of the given ``lengths`` ``[K]`` (a ``Noise`` of K=1).

    With ``S_k = Σ_{j<k} W_j`` the path's value at the start of step ``k``:

    * ``W = Σ_k W_k``;
    * ``U = Σ_k (U_k + δ_k S_k)`` with ``U_k = δ_k (W_k/2 + H_k)``, then ``H = U/T − W/2``, ``T = Σ_k δ_k``;
    * ``A = Σ_k (A_k + ½ (S_k ⊗ W_k − W_k ⊗ S_k))`` (Chen's relation).
    """
    W = noise.W
    shape = (-1,) + (1,) * (W.dim() - 1)
    d = lengths.to(W).view(shape)
    S = torch.cumsum(W, 0) - W
    total_W = W.sum(0, keepdim=True)
    H = A = None
    if noise.H is not None:
        U = (d * (0.5 * W + noise.H) + d * S).sum(0, keepdim=True)
        H = U / d.sum(0, keepdim=True) - 0.5 * total_W
    if noise.A is not None:
        cross = S.unsqueeze(-1) * W.unsqueeze(-2)
        A = (noise.A + 0.5 * (cross - cross.transpose(-1, -2))).sum(0, keepdim=True)
    return Noise(total_W, H, A)


class GridBrownian(BaseBrownian):
    """A Brownian path through values ``W[g]`` at ``grid[g]``, with per-step Lévy areas where carried.

    ``W`` has shape ``[G, batch, m]``; ``H`` (``[G−1, batch, m]``) and ``A``
    (``[G−1, batch, m, m]``) are optional.  A query ``bm(ta, tb)`` whose ends
    lie on the grid returns the increment exactly, with ``U`` and ``A``
    joined over the steps it spans (:func:`aggregate`); off the grid ``W`` is
    interpolated linearly and Lévy areas are refused.  ``levy_area_approximation``
    is ``"none"`` without ``H``, ``"space-time"`` with it, or the given
    approximation (``"davie"``, ``"foster"``) with ``A``.
    """

    __slots__ = ("_grid", "_W", "_H", "_A", "_levy")

    def __init__(
        self,
        grid: torch.Tensor,
        W: torch.Tensor,
        H: Optional[torch.Tensor] = None,
        A: Optional[torch.Tensor] = None,
        levy_area_approximation: Optional[str] = None,
    ):
        self._grid, self._W, self._H, self._A = grid, W, H, A
        self._levy = levy_area_approximation or ("space-time" if H is not None else "none")

    def _index(self, t) -> Optional[int]:
        """The grid index at ``t`` (within rounding of the grid's scale), or ``None`` off the grid."""
        g = self._grid
        t = torch.as_tensor(t, dtype=g.dtype, device=g.device).reshape(1)
        i = int(torch.argmin((g - t).abs()))
        scale = float((g[-1] - g[0]).abs()) or 1.0
        return i if abs(float(g[i] - t[0])) <= 1e-12 * scale + 4 * torch.finfo(g.dtype).eps * abs(float(t[0])) else None

    def _value(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self._grid.dtype, device=self._grid.device)
        g = self._grid
        i = (torch.searchsorted(g, t.reshape(1), right=True) - 1).clamp(0, g.numel() - 2)[0]
        w = (t - g[i]) / (g[i + 1] - g[i])
        return self._W[i] + w * (self._W[i + 1] - self._W[i])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            if return_U or return_A:
                raise ValueError("GridBrownian returns Lévy areas for intervals only; query bm(ta, tb).")
            return self._value(ta)
        if not (return_U or return_A):
            ia, ib = self._index(ta), self._index(tb)
            if ia is not None and ib is not None:
                return self._W[ib] - self._W[ia]
            return self._value(tb) - self._value(ta)
        if (return_U and self._H is None) or (return_A and self._A is None):
            raise ValueError(
                f"GridBrownian carries levy_area_approximation={self._levy!r}, which has no "
                f"{'space-time Lévy area' if return_U else 'Lévy area'}; use a method that needs none, e.g. 'euler'."
            )
        ia, ib = self._index(ta), self._index(tb)
        if ia is None or ib is None or ib <= ia:
            raise ValueError(
                f"GridBrownian holds Lévy areas only between its grid points; query ({float(ta)}, {float(tb)}) "
                "does not start and end on them."
            )
        steps = Noise(
            self._W[ia + 1:ib + 1] - self._W[ia:ib],
            None if self._H is None else self._H[ia:ib],
            None if self._A is None else self._A[ia:ib],
        )
        joined = aggregate(steps, self._grid[ia + 1:ib + 1] - self._grid[ia:ib])
        W = joined.W[0]
        out = [W]
        if return_U:
            out.append((self._grid[ib] - self._grid[ia]) * (0.5 * W + joined.H[0]))
        if return_A:
            out.append(joined.A[0])
        return tuple(out)

    def __repr__(self):
        return f"GridBrownian(points={self._grid.numel()}, shape={tuple(self.shape)}, levy_area_approximation={self._levy!r})"

    @property
    def dtype(self):
        return self._W.dtype

    @property
    def device(self):
        return self._W.device

    @property
    def shape(self):
        return self._W.shape[1:]

    @property
    def levy_area_approximation(self):
        return self._levy
