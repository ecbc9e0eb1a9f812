"""A Brownian path fixed on a grid, as a torchsde ``BaseBrownian``."""

from __future__ import annotations

import torch
from torchsde import BaseBrownian

__all__ = ["GridBrownian"]


class GridBrownian(BaseBrownian):
    """Piecewise-linear Brownian path through values ``W[g]`` at ``grid[g]``.

    ``W`` has shape ``[G, batch, m]``.  Queried at grid points (as fixed-step
    solvers do) it returns the pre-drawn increments exactly; between grid
    points it interpolates linearly.  It carries no Lévy area, so it serves
    torchsde's methods that need none (euler, milstein, heun, midpoint,
    euler_heun).
    """

    __slots__ = ("_grid", "_W")

    def __init__(self, grid: torch.Tensor, W: torch.Tensor):
        self._grid = grid
        self._W = W

    def _value(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self._grid.dtype, device=self._grid.device)
        g = self._grid
        i = (torch.searchsorted(g, t.reshape(1), right=True) - 1).clamp(0, g.numel() - 2)[0]
        w = (t - g[i]) / (g[i + 1] - g[i])
        return self._W[i] + w * (self._W[i + 1] - self._W[i])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U or return_A:
            raise ValueError("GridBrownian carries no Lévy area; use a method that needs none, e.g. 'euler'.")
        if tb is None:
            return self._value(ta)
        return self._value(tb) - self._value(ta)

    def __repr__(self):
        return f"GridBrownian(points={self._grid.numel()}, shape={tuple(self.shape)})"

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
        return "none"
