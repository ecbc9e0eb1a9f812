"""What several test modules share: small float64 problems, fixtures and the report of measured figures.

Fixtures here: ``report`` (a line for the "measured" section of the summary), ``one_thread`` (one
intra-op thread for a module: ``pytestmark = pytest.mark.usefixtures("one_thread")``), ``gmm`` (an
exact two-dimensional Gaussian-mixture denoiser) and ``tiny_pipeline`` (a saved tiny
``DDPMPipeline`` folder, as ``--model`` takes it).  The Diffusers models themselves are built in
``tests/diffusion_models.py``; nothing here imports Diffusers until a fixture that needs it runs.

Markers (pyproject.toml): ``slow`` and ``distributed``; ``make test`` runs all tests, and
``pytest -m "not slow and not distributed"`` leaves those out.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import pitsolve

DT = torch.float64
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not of the installed package
    sys.path.insert(0, str(ROOT))


def load_example(name: str) -> ModuleType:
    """The script ``examples/<name>.py`` as a module (examples/ is not a package), executed afresh."""
    spec = importlib.util.spec_from_file_location(f"pitsolve_example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module, restored after it.

    The tensors and models of these tests are tiny, so more threads only add synchronisation, which
    on a machine whose few cores are shared costs up to seconds per model call; results are compared
    under the same setting.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    """A fresh CPU generator: every sample of a test draws its noise from its own seed."""
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gmm():
    """The exact denoiser of a random 3-component mixture in 2-D on DDPM's 1000-step linear schedule."""
    from diffusers import DDPMScheduler

    from pitsolve.adapters.diffusion import GaussianMixtureDenoiser

    acp = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    return GaussianMixtureDenoiser.random(2, components=3, alphas_cumprod=acp, seed=0, spread=1.0, std=0.3)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A folder holding a saved ``DDPMPipeline`` with a tiny UNet (seed 0); tests read it, never change it."""
    from diffusion_models import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("pipeline"))


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
