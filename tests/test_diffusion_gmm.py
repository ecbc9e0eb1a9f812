"""On an exact Gaussian-mixture model: Eq. 17 initialisation and the distribution of parallel samples (issue check 4)."""

from __future__ import annotations

import pytest
import torch

import pitsolve
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pitsolve.adapters.diffusion import GaussianMixtureDenoiser
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

ACP = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixtureDenoiser.random(2, components=3, alphas_cumprod=ACP, seed=0, spread=1.0, std=0.3)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "name, scheduler, steps",
    [
        ("DDPM-100", DDPMScheduler(clip_sample=False), 100),
        ("DPM-Solver++-25", DPMSolverMultistepScheduler(), 25),
    ],
)
def test_eq17_initialisation_needs_fewer_iterations(gmm, report, name, scheduler, steps):
    # guard=False: the bare identity iteration from each start (the guard would send the
    # copy-forward start of DPM-Solver++-25, whose far points diverge, to the sequential sweep).
    # The paper's rule (Eq. 14), whose sweeps the initialisation shortens; under the error bound a run of
    # 128 samples at 1e-3 ends throttled to one point per sweep whatever the start (it may also decline to
    # certify one sample: throw=False), which would hide the comparison.
    kw = dict(num_inference_steps=steps, shape=(128, 2), tol=1e-3, guard=False, throw=False, stopping="eq14")
    seq, _ = sequential_sample(gmm, scheduler, generator=gen(0), **kw)
    copy, copy_sol = parallel_sample(gmm, scheduler, generator=gen(0), init="constant", **kw)
    eq17, eq17_sol = parallel_sample(gmm, scheduler, generator=gen(0), preconditioning_steps=1, **kw)
    report(
        f"GMM {name}, N=T, tol=1e-3: iterations copy-forward {copy_sol.iterations} (NFE {copy_sol.nfe}) vs "
        f"Eq. 17 M=1 {eq17_sol.iterations} (NFE {eq17_sol.nfe}, depth {eq17_sol.depth})"
    )
    assert eq17_sol.iterations < copy_sol.iterations
    assert eq17_sol.nfe < copy_sol.nfe
    for sample in (copy, eq17):
        assert float((sample - seq).pow(2).mean().sqrt() / seq.pow(2).mean().sqrt()) < 1e-3


@pytest.mark.parametrize("scheduler", [DDIMScheduler(clip_sample=False), DDPMScheduler(clip_sample=False)],
                         ids=["DDIM-50", "DDPM-50"])
def test_parallel_samples_have_the_sequential_distribution(gmm, report, scheduler):
    """Same noise → samples agree one by one; their statistics agree far inside Monte Carlo error.

    With n = 2000 samples the standard error of a mean entry is about std/√n ≈ 0.03 and of
    a covariance entry about 0.04; the parallel-vs-sequential differences must be far below
    that (here: 1e-3), and both must match the data within 5 standard errors plus the
    sampler's own discretisation allowance (DDIM-50 shrinks the covariance by ~5 %).
    """
    n = 2000
    kw = dict(num_inference_steps=50, shape=(n, 2))
    seq, _ = sequential_sample(gmm, scheduler, generator=gen(1), **kw)
    # tol 1e-3 (relative to σ_t): the sample-by-sample gap is then ~1e-4, far below the 1e-3 asked.
    # The error bound may decline to certify 1e-3 on this mixture (its exact denoiser flips modes
    # under tiny changes, a large gain); the samples must agree either way.
    par, sol = parallel_sample(gmm, scheduler, generator=gen(1), intervals=10, window=6, tol=1e-3, throw=False,
                               **kw)
    assert sol.status in (pitsolve.Status.CONVERGED, pitsolve.Status.UNCERTIFIED)
    mean_gap = float((par.mean(0) - seq.mean(0)).abs().max())
    cov_gap = float((torch.cov(par.T) - torch.cov(seq.T)).abs().max())
    report(f"GMM {sol.iterations} iterations (N=10, window 6): |mean par - seq| {mean_gap:.1e}, "
           f"|cov par - seq| {cov_gap:.1e}")
    assert mean_gap < 1e-3 and cov_gap < 1e-3
    data_mean, data_cov = gmm.mean(), gmm.covariance()
    se_mean = (data_cov.diagonal() / n).sqrt()
    assert ((par.mean(0).double() - data_mean).abs() < 5 * se_mean + 0.02).all()
    assert ((torch.cov(par.T).double() - data_cov).abs() < 0.1 + 5 * 0.04).all()


def test_carried_prediction_is_not_extrapolated(gmm):
    """The x̂_0 carried in the state is an output of Φ, not an input: sweeps take Φ's value there.

    Extrapolating it like the sample (A = I) feeds garbage predictions to the Eq. 17
    initialisation of points entering the window, and the sweeps diverge (measured: residual
    3.6e46 and 85 sweeps for DDPM-200, window 16, against 27 sweeps without).
    """
    import pitsolve
    from pitsolve.adapters.diffusion import PosteriorInit
    from pitsolve.adapters.diffusers import build_system

    scheduler = DDPMScheduler(clip_sample=False)
    system = build_system(gmm, scheduler, num_inference_steps=200, generator=gen(0), shape=(64, 2))
    assert system.passive is not None
    # Eq. 14's rule, as when the figures above were measured: this is about the update, not acceptance.
    sol = pitsolve.solve(system, "identity", window=16, tol=1e-2, init=PosteriorInit(1), stopping="eq14")
    assert sol.resets == 0 and max(sol.residuals) < 1e3 and sol.iterations < 40
