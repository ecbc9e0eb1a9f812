"""GaussianMixtureDenoiser: the exact denoiser of a Gaussian mixture, and parallel sampling on it.

The model's formulas (responsibility-weighted score, Tweedie) are checked
against an independent log-density built from ``torch.distributions`` and
differentiated by autograd; its data statistics against its own exact draws;
and a Diffusers DDIM loop run on it against the data distribution.  On that
exact model the parallel sampler is then measured: the Eq. 17 initialisation
against copy-forward, the parallel samples' distribution against the
sequential one (same noise) and the data, and the carried x̂_0 prediction.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import pitsolve
from pitsolve import InputTypeError, InputValueError, PitsolveError
from pitsolve.adapters.diffusers import build_system, parallel_sample, sequential_sample
from pitsolve.adapters.diffusion import PosteriorInit
from pitsolve.adapters.diffusion.gmm import DenoiserOutput, GaussianMixtureDenoiser

from conftest import gen

F64 = torch.float64
T = 1000


def linear_alphas_cumprod(T=T, beta_start=1e-4, beta_end=0.02):
    """DDPM's linear schedule, ᾱ_t = Π_{s<=t} (1 − β_s)."""
    return torch.cumprod(1 - torch.linspace(beta_start, beta_end, T, dtype=F64), 0)


ABAR = linear_alphas_cumprod()
TIMES = [0, 1, 37, 250, 500, 800, 999]


def mixture(K=3, d=5, seed=0, **kw):
    return GaussianMixtureDenoiser.random(d, K, alphas_cumprod=ABAR, seed=seed, spread=1.5, std=(0.2, 0.8), **kw)


def log_pt(model, x, t):
    """log p_t(x) written independently: Σ_k w_k N(α μ_k, (α² s_k² + σ²) I) via torch.distributions."""
    abar = ABAR[t]
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    mu = model.means.reshape(model.num_components, -1)
    scale = (alpha**2 * model.stds**2 + sigma**2).sqrt()[:, None].expand_as(mu)
    comp = Independent(Normal(alpha * mu, scale), 1)
    return MixtureSameFamily(Categorical(probs=model.weights), comp).log_prob(x.reshape(x.shape[0], -1))


def noisy_points(model, t, n=16, seed=1):
    """Points from the forward process at t, plus a few far outside the data."""
    g = torch.Generator().manual_seed(seed + t)
    abar = ABAR[t]
    x0 = model.sample(n, generator=g)
    x = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=g, dtype=F64)
    far = 8.0 * torch.randn((3, *model.sample_shape), generator=g, dtype=F64)
    return torch.cat([x, far])


# ---------------------------------------------------------------- 1. ε̂ = −σ ∇ log p_t


@pytest.mark.parametrize("t", TIMES)
@pytest.mark.parametrize("shape", [5, (2, 3, 3)], ids=["vector", "image"])
def test_epsilon_is_minus_sigma_times_autograd_score(t, shape):
    model = GaussianMixtureDenoiser.random(shape, 3, alphas_cumprod=ABAR, seed=4, spread=1.5, std=(0.2, 0.8))
    x = noisy_points(model, t).requires_grad_(True)
    (score,) = torch.autograd.grad(log_pt(model, x, t).sum(), x)
    sigma = (1 - ABAR[t]).sqrt()
    eps = model(x.detach(), t).sample
    assert eps.shape == x.shape and eps.dtype == F64 and torch.isfinite(eps).all()
    torch.testing.assert_close(eps, -sigma * score, rtol=0, atol=1e-10)


def test_jacobian_vector_product_is_minus_sigma_times_hessian():
    """Newton-type strategies differentiate the model: its JVP is −σ ∇² log p_t · v."""
    model = mixture()
    t = 300
    x = noisy_points(model, t, n=6)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    _, jvp = torch.func.jvp(lambda y: model(y, t).sample, (x,), (v,))
    _, hvp = torch.autograd.functional.hvp(lambda y: log_pt(model, y, t).sum(), x, v)
    torch.testing.assert_close(jvp, -(1 - ABAR[t]).sqrt() * hvp, rtol=0, atol=1e-9)


def test_far_points_are_stable():
    """Responsibilities by log-sum-exp: every exp(logit) underflows here, the output stays exact."""
    model = mixture(d=50)
    x = torch.full((2, 50), 300.0, dtype=F64)
    x[1] *= -1
    assert math.exp(-0.5 * 300.0**2 * 50 / 0.8**2) == 0.0  # naive densities would give 0/0
    eps = model(x, 0).sample
    assert torch.isfinite(eps).all()
    xr = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(log_pt(model, xr, 0).sum(), xr)
    torch.testing.assert_close(eps, -(1 - ABAR[0]).sqrt() * score, rtol=1e-12, atol=0)


@pytest.mark.parametrize("t", TIMES)
def test_sample_and_v_prediction_follow_from_epsilon(t):
    models = {p: mixture(prediction_type=p) for p in ("epsilon", "sample", "v_prediction")}
    x = noisy_points(models["epsilon"], t)
    alpha, sigma = ABAR[t].sqrt(), (1 - ABAR[t]).sqrt()
    eps = models["epsilon"](x, t).sample
    x0 = models["sample"](x, t).sample
    v = models["v_prediction"](x, t).sample
    torch.testing.assert_close(x0, (x - sigma * eps) / alpha, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(v, alpha * eps - sigma * x0, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- 2. x̂_0 = E[x_0 | x_t]


@pytest.mark.parametrize("t", TIMES)
def test_single_gaussian_posterior_mean(t):
    g = torch.Generator().manual_seed(2)
    mu, s = torch.randn(1, 4, generator=g, dtype=F64), 0.7
    model = GaussianMixtureDenoiser(mu, s, alphas_cumprod=ABAR, prediction_type="sample")
    x = torch.randn(10, 4, generator=g, dtype=F64) * 2
    a2, sig2 = ABAR[t], 1 - ABAR[t]
    closed = a2.sqrt() * s**2 / (a2 * s**2 + sig2) * (x - a2.sqrt() * mu) + mu
    torch.testing.assert_close(model(x, t).sample, closed, rtol=0, atol=1e-12)


def test_class_labels_select_one_component():
    """Conditioning row b on component k gives the exact denoiser of N(μ_k, s_k² I)."""
    model = mixture(K=3, prediction_type="sample")
    labels = torch.tensor([0, 2, 1, 2, 0])
    ts = torch.tensor([0, 100, 400, 700, 999])
    x = noisy_points(model, 5, n=2)
    for k_input in (labels, int(labels[0])):
        out = model(x, ts, class_labels=k_input).sample
        for b in range(5):
            k = int(labels[b]) if isinstance(k_input, torch.Tensor) else k_input
            single = GaussianMixtureDenoiser(
                model.means[k : k + 1], model.stds[k : k + 1], alphas_cumprod=ABAR, prediction_type="sample"
            )
            torch.testing.assert_close(out[b], single(x[b : b + 1], int(ts[b])).sample[0], rtol=0, atol=1e-13)


def test_zero_terminal_snr_is_exact():
    """ᾱ = 0 (zero terminal SNR): no division by α, so ε̂ = x and x̂_0 = E[x_0] exactly."""
    abar = ABAR.clone()
    abar[-1] = 0.0
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=F64)
    kw = dict(alphas_cumprod=abar, seed=1)
    eps = GaussianMixtureDenoiser.random(5, 3, **kw)(x, T - 1).sample
    x0 = GaussianMixtureDenoiser.random(5, 3, prediction_type="sample", **kw)(x, T - 1).sample
    v = GaussianMixtureDenoiser.random(5, 3, prediction_type="v_prediction", **kw)(x, T - 1).sample
    mean = GaussianMixtureDenoiser.random(5, 3, **kw).mean()
    torch.testing.assert_close(eps, x, rtol=0, atol=1e-15)
    torch.testing.assert_close(x0, mean.expand_as(x), rtol=0, atol=1e-15)
    torch.testing.assert_close(v, -mean.expand_as(x), rtol=0, atol=1e-15)


# ---------------------------------------------------------------- 3. call conventions


def test_timestep_forms_agree():
    model = mixture()
    x = noisy_points(model, 37)
    B = x.shape[0]
    ref = model(x, 37).sample
    for t in (torch.tensor(37), torch.tensor([37]), torch.full((B,), 37), torch.tensor(37.0)):
        assert torch.equal(model(x, t).sample, ref)
    ts = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(0))
    out = model(x, ts).sample
    for b in range(B):
        torch.testing.assert_close(out[b], model(x[b : b + 1], int(ts[b])).sample[0], rtol=1e-15, atol=1e-15)


def test_image_shaped_means_are_flattened_vectors():
    image = GaussianMixtureDenoiser.random((3, 4, 5), 2, alphas_cumprod=ABAR, seed=3)
    vector = GaussianMixtureDenoiser(image.means.reshape(2, -1), image.stds, image.weights, alphas_cumprod=ABAR)
    assert image.sample_shape == (3, 4, 5) and image.in_channels == 3 and image.sample_size == (4, 5)
    assert image.config.in_channels == 3 and image.config.out_channels == 3
    square = GaussianMixtureDenoiser.random((1, 8, 8), 2, alphas_cumprod=ABAR)
    assert square.config.sample_size == 8 and square.sample_size == 8
    assert vector.sample_shape == (60,) and vector.sample_size is None and vector.in_channels is None
    x = torch.randn(4, 3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=F64)
    out = image(x, torch.tensor([0, 10, 500, 999])).sample
    assert out.shape == x.shape
    torch.testing.assert_close(out.reshape(4, -1), vector(x.reshape(4, -1), torch.tensor([0, 10, 500, 999])).sample)
    assert image.mean().shape == (3, 4, 5) and image.variance().shape == (3, 4, 5)
    assert image.covariance().shape == (60, 60)
    torch.testing.assert_close(image.variance().flatten(), image.covariance().diagonal())


def test_return_dict_and_dtype():
    model = mixture()
    x = noisy_points(model, 10)
    out = model(x, 10)
    assert isinstance(out, DenoiserOutput) and out[0] is out.sample
    tup = model(x, 10, return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1 and torch.equal(tup[0], out.sample)
    out32 = model(x.float(), 10).sample
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, model(x.float().double(), 10).sample.float())
    # .to(dtype)/.half() keep the float64 ground truth; deepcopy works.
    model.half()
    assert model.means.dtype == F64 and model.alphas_cumprod.dtype == F64 and model.dtype == F64
    assert torch.equal(copy.deepcopy(model)(x, 10).sample, out.sample)


# ---------------------------------------------------------------- 4. data statistics


def test_sample_statistics_match_mean_and_covariance():
    """Exact draws: each estimate is within 5 standard errors of the closed form.

    The sample mean of coordinate i has SE sqrt(Σ_ii / n); the sample covariance
    entry (i, j) has SE sqrt(Var[(x_i − m_i)(x_j − m_j)] / n), the variance
    taken from an independent large draw.  By the CLT each is ≈ normal, and
    |z| > 5 has probability 6e-7, so a correct model passes for any seed, while
    a wrong weight or a missing within-component s² term moves the estimate by
    tens of SE.  The seed is fixed, so the test is deterministic.
    """
    model = GaussianMixtureDenoiser(
        torch.tensor([[0.0, 2.0, -1.0], [1.5, -1.0, 0.5], [-2.0, 0.0, 1.0]]),
        torch.tensor([0.3, 0.6, 1.0]),
        torch.tensor([0.2, 0.5, 0.3]),
        alphas_cumprod=ABAR,
    )
    g = torch.Generator().manual_seed(11)
    n = 20_000
    x = model.sample(n, generator=g)
    assert x.shape == (n, 3) and x.dtype == F64
    m, cov = model.mean(), model.covariance()

    se_mean = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - m).abs() <= 5 * se_mean).all()

    big = model.sample(200_000, generator=g) - m
    prod = big[:, :, None] * big[:, None, :]
    se_cov = (prod.var(0) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se_cov).all()

    # Weights: E_{p_0}[r_k(x)] = w_k exactly for the data-level responsibilities r_k (computed here
    # independently), so their sample means are unbiased estimates of w_k with SE std(r_k)/sqrt(n).
    logits = model.weights.log() + Normal(model.means, model.stds[:, None]).log_prob(x[:, None, :]).sum(-1)
    r = torch.softmax(logits, dim=1)
    assert ((r.mean(0) - model.weights).abs() <= 5 * r.std(0) / math.sqrt(n)).all()

    # Reproducible with a generator.
    assert torch.equal(model.sample(5, torch.Generator().manual_seed(0)), model.sample(5, torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- 5. bad input


def _raises(kind, match, fn, *args, **kwargs):
    with pytest.raises(kind, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, PitsolveError)
    assert isinstance(info.value, {InputValueError: ValueError, InputTypeError: TypeError}[kind])


def test_bad_construction():
    G = GaussianMixtureDenoiser
    mu = torch.zeros(3, 2)
    ok = dict(alphas_cumprod=ABAR)
    _raises(InputValueError, r"stds has shape \(2,\).*K=3.*shape \[3\]", G, mu, torch.ones(2), **ok)
    _raises(InputValueError, r"weights has shape \(4,\).*shape \[3\]", G, mu, 1.0, torch.ones(4), **ok)
    _raises(InputValueError, r"means has shape \(3,\).*\[K, \*sample_shape\]", G, torch.zeros(3), 1.0, **ok)
    _raises(InputValueError, r"stds=\[1.0, 0.0, 1.0\].*positive", G, mu, torch.tensor([1.0, 0.0, 1.0]), **ok)
    _raises(InputValueError, r"stds=\[-1.0, -1.0, -1.0\]", G, mu, -1.0, **ok)
    _raises(InputValueError, r"weights=\[0.5, -0.1, 0.6\].*non-negative", G, mu, 1.0, torch.tensor([0.5, -0.1, 0.6], dtype=F64), **ok)
    _raises(InputValueError, r"weights=\[0.0, 0.0, 0.0\] are all zero", G, mu, 1.0, torch.zeros(3), **ok)
    _raises(InputValueError, r"prediction_type='eps' is unknown.*'epsilon'", G, mu, 1.0, prediction_type="eps", **ok)
    _raises(InputValueError, r"alphas_cumprod has values outside \[0, 1\]", G, mu, 1.0, alphas_cumprod=ABAR + 1)
    _raises(InputValueError, r"alphas_cumprod has shape \(2, 3\)", G, mu, 1.0, alphas_cumprod=torch.ones(2, 3))
    _raises(InputTypeError, r"means has dtype torch.complex64", G, mu.to(torch.complex64), 1.0, **ok)
    _raises(InputValueError, r"components=0", G.random, 2, 0, **ok)
    _raises(InputValueError, r"std=\(0.5, 0.1\)", G.random, 2, 2, std=(0.5, 0.1), **ok)
    # Weights are normalised, not rejected, when they do not sum to one.
    torch.testing.assert_close(G(mu, 1.0, torch.tensor([1.0, 1.0, 2.0]), **ok).weights, torch.tensor([0.25, 0.25, 0.5], dtype=F64))


def test_bad_call():
    model = mixture(K=3, d=5)
    x = torch.zeros(4, 5, dtype=F64)
    _raises(InputValueError, r"timestep has values outside 0..len\(alphas_cumprod\) - 1 = 0..999 \(min 1000", model, x, 1000)
    _raises(InputValueError, r"timestep has values outside .*min -1", model, x, torch.tensor([0, 1, -1, 2]))
    _raises(InputValueError, r"timestep has shape \(3,\) for a batch of 4", model, x, torch.tensor([1, 2, 3]))
    _raises(InputValueError, r"timestep has non-integer values \(e.g. \[2.5\]\)", model, x, torch.tensor(2.5))
    _raises(InputTypeError, r"timestep=2.5 is a float", model, x, 2.5)
    _raises(InputTypeError, r"timestep=True is a bool", model, x, True)
    _raises(InputValueError, r"sample has shape \(4, 6\).*shape \(5,\).*\[batch, 5\]", model, torch.zeros(4, 6), 3)
    _raises(InputValueError, r"sample has shape \(5,\).*sample\[None\]", model, torch.zeros(5), 3)
    _raises(InputTypeError, r"sample has dtype torch.int64", model, torch.zeros(4, 5, dtype=torch.long), 3)
    _raises(InputTypeError, r"sample is a list", model, [[0.0] * 5], 3)
    _raises(InputValueError, r"class_labels has values outside 0..2 \(components - 1\)", model, x, 3, torch.tensor([0, 1, 2, 3]))
    _raises(InputValueError, r"n=-1", model.sample, -1)


# ---------------------------------------------------------------- 6. a Diffusers sampler on it


def test_ddim_sampler_reproduces_the_data_distribution(report):
    """DDIM-50 (Diffusers) from N(0, I) noise lands on the mixture's statistics.

    n = 2000 two-dimensional samples.  The tolerance is Monte Carlo error plus
    DDIM's own bias: 5 SE as in the statistics test (SE of a mean
    coordinate sqrt(Σ_ii/2000) = 0.027 / 0.017; of the covariance entries
    0.033 / 0.019 / 0.016, from exact draws), plus the discretisation bias of DDIM-50 on this
    mixture, measured once at n = 2e5 as ≈ 0.005 on the mean and −0.054 /
    −0.022 / −0.030 on Σ_11 / Σ_12 / Σ_22 (DDIM under-disperses; with 200
    steps it falls to −0.015).  We allow 0.1 for it.  The mode weights
    (0.3 / 0.7) must come out within 5 binomial SE (0.051).
    """
    means = torch.tensor([[-1.5, -0.5], [1.0, 1.0]], dtype=F64)
    n = 2000
    outs = {}
    for prediction_type in ("epsilon", "v_prediction"):
        scheduler = DDIMScheduler(num_train_timesteps=T, clip_sample=False, prediction_type=prediction_type)
        # float64 ᾱ in the scheduler too, so that α² + σ² = 1 to round-off and the two parametrisations agree.
        scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(F64)
        model = GaussianMixtureDenoiser(
            means, torch.tensor([0.4, 0.3]), torch.tensor([0.3, 0.7]),
            alphas_cumprod=scheduler.alphas_cumprod, prediction_type=prediction_type,
        )
        scheduler.set_timesteps(50)
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x).prev_sample
        outs[prediction_type] = x
    x = outs["epsilon"]
    # The same sampler in v-parametrisation is the same ODE step: same samples to round-off.
    torch.testing.assert_close(outs["v_prediction"], x, rtol=0, atol=1e-9)

    m, cov = model.mean(), model.covariance()
    ref = model.sample(200_000, generator=torch.Generator().manual_seed(2)) - m
    se_mean = (cov.diagonal() / n).sqrt()
    se_cov = ((ref[:, :, None] * ref[:, None, :]).var(0) / n).sqrt()
    err_mean, err_cov = x.mean(0) - m, torch.cov(x.T) - cov
    report(f"gmm DDIM-50 n={n}: mean err {err_mean.tolist()}, cov err {err_cov.flatten().tolist()}")
    assert (err_mean.abs() <= 5 * se_mean + 0.02).all(), err_mean
    assert (err_cov.abs() <= 5 * se_cov + 0.1).all(), err_cov
    frac = ((x - means[1]).norm(dim=1) < (x - means[0]).norm(dim=1)).double().mean()
    assert abs(float(frac) - 0.7) <= 5 * math.sqrt(0.21 / n)


# ---------------------------------------------------------------- 7. the parallel sampler on it
# (the ``gmm`` fixture of conftest.py: 3 components in 2-D on DDPM's 1000-step schedule)


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
    copy_fwd, copy_sol = parallel_sample(gmm, scheduler, generator=gen(0), init="constant", **kw)
    eq17, eq17_sol = parallel_sample(gmm, scheduler, generator=gen(0), preconditioning_steps=1, **kw)
    report(
        f"GMM {name}, N=T, tol=1e-3: iterations copy-forward {copy_sol.iterations} (NFE {copy_sol.nfe}) vs "
        f"Eq. 17 M=1 {eq17_sol.iterations} (NFE {eq17_sol.nfe}, depth {eq17_sol.depth})"
    )
    assert eq17_sol.iterations < copy_sol.iterations
    assert eq17_sol.nfe < copy_sol.nfe
    for sample in (copy_fwd, eq17):
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
    scheduler = DDPMScheduler(clip_sample=False)
    system = build_system(gmm, scheduler, num_inference_steps=200, generator=gen(0), shape=(64, 2))
    assert system.passive is not None
    # Eq. 14's rule, as when the figures above were measured: this is about the update, not acceptance.
    sol = pitsolve.solve(system, "identity", window=16, tol=1e-2, init=PosteriorInit(1), stopping="eq14")
    assert sol.resets == 0 and max(sol.residuals) < 1e3 and sol.iterations < 40
