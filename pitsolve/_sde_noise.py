"""The fixed Brownian path of an :class:`~pitsolve.SDESystem`: a user's torchsde ``bm`` queried once, or seeded draws.

Every step's increment (and the Lévy areas a method needs) is fixed before
the solve, so ``Φ_n`` is a deterministic function of ``X_n``: the banded
system of the discretised SDE (docs/odes.md, "SDEs").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchsde

from ._brownian import GridBrownian, Noise

__all__ = ["BrownianPath", "NEEDS", "SERVES"]

#: What each method needs from the Brownian path besides the increment (torchsde's solvers).
NEEDS = {"srk": "U", "log_ode": "A"}
#: torchsde's ``levy_area_approximation`` values that serve each need.
SERVES = {"U": ("space-time", "davie", "foster"), "A": ("davie", "foster")}


class BrownianPath:
    """The path's increments per interval and its torchsde view, for :class:`~pitsolve.SDESystem`.

    The host sets ``t``, ``substeps``, ``seed``, ``method``, ``bm``, ``_path``
    (the queried ``bm`` or ``None``), ``_spec`` and ``_noise_channels``.
    """

    def noise(self, indices: torch.Tensor) -> Noise:
        """The path's data on the steps of the intervals ``indices``, in the original time.

        ``W`` (increments, ``[K, B, batch, m]``), and where the method needs
        them ``H`` (space-time Lévy areas, same shape) or ``A`` (Lévy areas,
        ``[K, B, batch, m, m]``); see :mod:`pitsolve._brownian`.
        """
        if self._path is not None:
            idx = indices.to(self._path.W.device)
            return Noise(*(None if x is None else x[idx].transpose(0, 1).to(self.t.device) for x in self._path))
        batch, K, m = self._spec.shapes[0][0], self.substeps, self._noise_channels
        need_H = NEEDS.get(self.method) == "U"
        W, H = [], []
        for n in indices.tolist():
            gen = torch.Generator(device="cpu").manual_seed(_interval_seed(self.seed, n))
            W.append(torch.randn(K, batch, m, generator=gen, dtype=torch.float64))
            if need_H:
                gen = torch.Generator(device="cpu").manual_seed(_interval_seed(self.seed, n, 1))
                H.append(torch.randn(K, batch, m, generator=gen, dtype=torch.float64) / math.sqrt(12.0))
        delta = ((self.t[indices + 1] - self.t[indices]).abs() / K).sqrt().view(1, -1, 1, 1)
        as_state = lambda z: torch.stack(z, dim=1).to(dtype=self._spec.dtype, device=self._spec.device) * delta
        return Noise(as_state(W), as_state(H) if need_H else None)

    def increments(self, indices: torch.Tensor) -> torch.Tensor:
        """Brownian increments ``[K, B, batch, m]`` of the intervals ``indices`` (variance ``h_n/K``)."""
        return self.noise(indices).W

    def brownian_motion(self) -> torchsde.BaseBrownian:
        """The whole fixed path as a torchsde Brownian motion in the original time ``t``.

        The user's ``bm`` when one was given; else a :class:`GridBrownian`
        through the seeded increments (with their space-time Lévy areas for
        ``srk``), so ``torchsde.sdeint(sde, y0, t, bm=..., dt=h/K,
        method=...)`` reproduces :func:`~pitsolve.sequential`.
        """
        if self.bm is not None:
            return self.bm
        N, K = self.num_intervals, self.substeps
        noise = self.noise(torch.arange(N, device=self.t.device))
        dW = noise.W.transpose(0, 1).reshape(N * K, *noise.W.shape[2:])
        W = torch.cat([torch.zeros_like(dW[:1]), dW.cumsum(0)], dim=0)
        H = None if noise.H is None else noise.H.transpose(0, 1).reshape(N * K, *noise.H.shape[2:])
        grid = torch.cat([self._step_times()[:, :-1].reshape(-1), self.t[-1:]])
        return GridBrownian(grid, W, H)

    def _step_times(self) -> torch.Tensor:
        """``[N, K+1]``: ``t_n + kδ_n``, with ``t_{n+1}`` itself at ``k = K`` (the query times of the path)."""
        K = self.substeps
        t = self.t
        delta = (t[1:] - t[:-1]) / K
        k = torch.arange(K + 1, dtype=t.dtype, device=t.device)
        times = t[:-1, None] + k[None, :] * delta[:, None]
        times[:, -1] = t[1:]
        return times

    def _query_bm(self) -> Noise:
        """The user's ``bm`` on every step, queried once in time order: ``Noise`` of ``[N, K, batch, m(, m)]``."""
        need = NEEDS.get(self.method)
        times = self._step_times().to(self.bm.device)
        W, X = [], []
        for n in range(times.shape[0]):
            for k in range(self.substeps):
                out = self.bm(times[n, k], times[n, k + 1], return_U=need == "U", return_A=need == "A")
                if need is None:
                    W.append(out)
                    continue
                W.append(out[0])
                if need == "U":  # H from U = δ (W/2 + H)
                    X.append(out[1] / (times[n, k + 1] - times[n, k]) - 0.5 * out[0])
                else:
                    X.append(out[1])
        shape = (times.shape[0], self.substeps)
        stack = lambda parts: torch.stack(parts).reshape(*shape, *parts[0].shape).detach()
        W = stack(W)
        if need is None:
            return Noise(W)
        return Noise(W, stack(X), None) if need == "U" else Noise(W, None, stack(X))


def _interval_seed(seed: int, n: int, stream: int = 0) -> int:
    """A 63-bit seed for interval ``n`` of run ``seed`` (independent streams via SeedSequence).

    Stream 0 draws the increments, stream 1 the space-time Lévy areas.
    """
    key = [seed, n] if stream == 0 else [seed, n, stream]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
