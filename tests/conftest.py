"""Shared problems for the core tests (float64, small) and a report of measured figures."""

from __future__ import annotations

import pytest
import torch

import pitsolve

DT = torch.float64
_MEASURED: list[str] = []


@pytest.fixture
def report():
    """Record a measured figure; printed in the terminal summary ("measured" section)."""
    return _MEASURED.append


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)


# A 4-D non-normal linear system y' = A y.
A_LINEAR = torch.tensor(
    [[-0.5, 2.0, 0.0, 0.0], [0.0, -0.3, 1.5, 0.0], [0.0, 0.0, -0.2, 1.0], [0.1, 0.0, 0.0, -0.4]], dtype=DT
)


def linear_func(t, y):
    return A_LINEAR @ y


def van_der_pol(t, y, mu=1.0):
    x, v = y[0], y[1]
    return torch.stack([v, mu * (1 - x**2) * v - x])


class OrnsteinUhlenbeck(torch.nn.Module):
    """dY = θ(μ − Y) dt + σ dW, diagonal Itô noise."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, theta=0.7, mu=0.3, sigma=0.5):
        super().__init__()
        self.theta, self.mu, self.sigma = theta, mu, sigma

    def f(self, t, y):
        return self.theta * (self.mu - y)

    def g(self, t, y):
        return self.sigma * torch.ones_like(y)


def linear_system(n=24, substeps=2, method="rk4"):
    y0 = torch.tensor([1.0, -0.5, 0.3, 0.2], dtype=DT)
    return pitsolve.ODESystem(linear_func, y0, torch.linspace(0, 3, n + 1, dtype=DT), method=method, substeps=substeps)


def vdp_system(n=24, substeps=4, t_end=6.0):
    y0 = torch.tensor([2.0, 0.0], dtype=DT)
    return pitsolve.ODESystem(van_der_pol, y0, torch.linspace(0, t_end, n + 1, dtype=DT), substeps=substeps)


def ou_system(n=20, substeps=4, seed=3, method="euler"):
    y0 = torch.tensor([[1.0, -1.0], [0.5, 0.2]], dtype=DT)
    return pitsolve.SDESystem(
        OrnsteinUhlenbeck(), y0, torch.linspace(0, 2, n + 1, dtype=DT), method=method, substeps=substeps, seed=seed
    )


SYSTEMS = {"linear": linear_system, "vdp": vdp_system, "ou": ou_system}
STRATEGIES = sorted(pitsolve.jacobians.REGISTRY)


def max_err(a, b):
    if isinstance(a, tuple):
        return max(max_err(x, y) for x, y in zip(a, b))
    return float((a - b).abs().max())


class NoisyMap(pitsolve.BandedSystem):
    """``Φ_n(x) = 0.9 x`` plus fresh noise on every call: not deterministic, no fixed point."""

    def __init__(self, n: int = 8):
        self.n = n
        self.gen = torch.Generator().manual_seed(0)

    @property
    def initial_state(self):
        return torch.ones(2, dtype=torch.float64)

    @property
    def num_intervals(self):
        return self.n

    def propagate(self, states, indices):
        return 0.9 * states + 1e-3 * torch.randn(states.shape, generator=self.gen, dtype=torch.float64)
