"""Fast batched rules (issue 14, item 5): Euler, Euler ancestral, FlowMatch Euler and UniPC.

Each rule's sequential sample equals Diffusers' own loop (``set_timesteps``;
for each ``t``: ``scale_model_input``, model, ``scheduler.step``) in float32
to 1e-6 relative, on the exact denoiser of a Gaussian mixture (evaluated at
the schedulers' float timesteps) and on a tiny UNet; ``parallel_sample``
equals the sequential sample for ``N = T`` and ``N < T``.  Where Diffusers
rounds its coefficients to float32 enough to move the sample by more (UniPC
order 3 on a short Karras grid), the comparison is made with Diffusers'
σ table upcast to float64, where the two agree to round-off.
"""

from __future__ import annotations

import math

import diffusers
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import pitsolve
from pitsolve.adapters.diffusers import parallel_sample, rule_from_scheduler, sequential_sample
from pitsolve.adapters.diffusers.models import UNetModel
from pitsolve.adapters.diffusion import DiffusionSystem, GaussianMixtureDenoiser
from pitsolve.adapters.diffusion.init import PosteriorInit
from pitsolve.adapters.diffusion.rules import (
    REGISTRY,
    EulerAncestralRule,
    EulerDiscreteRule,
    FlowMatchEulerRule,
    UniPCMultistepRule,
)

from conftest import gen
from diffusion_models import tiny_unet

F32, F64 = torch.float32, torch.float64
SHAPE = (2, 1, 4, 4)
STEPS = 12
ABAR = diffusers.DDPMScheduler().alphas_cumprod.to(F64)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def vp_mixture(prediction_type="epsilon"):
    return GaussianMixtureDenoiser.random(
        SHAPE[1:], 3, alphas_cumprod=ABAR, seed=1, std=(0.2, 0.5), prediction_type=prediction_type,
        continuous_timesteps=True,
    )


def flow_mixture():
    return GaussianMixtureDenoiser.random(SHAPE[1:], 3, seed=1, std=(0.2, 0.5), prediction_type="flow_prediction")


def latents(dtype=F32):
    return torch.randn(SHAPE, generator=gen(0), dtype=dtype)


def diffusers_loop(model, scheduler, steps, x, generator=None, float64_sigmas=False, **set_timesteps_kwargs):
    """Diffusers' own sampling loop on a fresh copy of ``scheduler``."""
    s = type(scheduler).from_config(scheduler.config)
    s.set_timesteps(steps, **set_timesteps_kwargs)
    if float64_sigmas:
        s.sigmas = s.sigmas.to(F64)
    x = x * getattr(s, "init_noise_sigma", 1.0)
    scale = getattr(s, "scale_model_input", lambda sample, t: sample)
    step_kwargs = {} if generator is None else {"generator": generator}
    with torch.no_grad():
        for t in s.timesteps:
            out = model(scale(x, t), t).sample
            x = s.step(out, t, x, **step_kwargs).prev_sample
    return x


def check_sampler(model, scheduler, *, noise_seed=None, tol=1e-6, intervals=(STEPS, 5), steps=STEPS, exact64=False):
    """Sequential == Diffusers' loop in float32 (``tol`` relative); parallel == sequential for each N in ``intervals``.

    The parallel check runs in float64 (the mixture computes in float64 whatever the state's dtype) with
    ``tol=1e-8``: in float32 the error bound counts defects below 100·eps as round-off, so it cannot certify
    a tolerance much below 1e-5.  ``exact64``: also compare in float64 with Diffusers' σ table upcast
    (UniPC then computes in float64 throughout), to 1e-12.
    """
    lat = latents()
    g = (lambda: None) if noise_seed is None else (lambda: gen(noise_seed))
    ours, sol = sequential_sample(model, scheduler, num_inference_steps=steps, latents=lat, generator=g())
    assert sol.nfe == steps
    ref = diffusers_loop(model, scheduler, steps, lat, generator=g())
    assert ours.dtype == ref.dtype == F32
    assert rel(ours, ref) <= tol, rel(ours, ref)
    kw = dict(num_inference_steps=steps, latents=lat.to(F64))
    seq, _ = sequential_sample(model, scheduler, generator=g(), **kw)
    if noise_seed is None:  # (float64 noise draws differ from float32 ones)
        assert rel(seq.float(), ours) <= 1e-5
    if exact64:
        assert rel(seq, diffusers_loop(model, scheduler, steps, lat.to(F64), float64_sigmas=True)) <= 1e-12
    for n in intervals:
        par, psol = parallel_sample(model, scheduler, generator=g(), intervals=n, tol=1e-8, **kw)
        assert psol.converged and psol.iterations <= n
        assert rel(par, seq) <= 1e-7, (n, rel(par, seq))
    return ours


# --------------------------------------------------------------------------- the registry
def test_registry_serves_the_four_schedulers():
    expected = {
        "EulerDiscreteScheduler": EulerDiscreteRule,
        "EulerAncestralDiscreteScheduler": EulerAncestralRule,
        "FlowMatchEulerDiscreteScheduler": FlowMatchEulerRule,
        "UniPCMultistepScheduler": UniPCMultistepRule,
    }
    for name, cls in expected.items():
        assert REGISTRY[name] is cls
        assert type(rule_from_scheduler(getattr(diffusers, name)(), 7)) is cls


# --------------------------------------------------------------------------- Euler
@pytest.mark.parametrize("grid", ["default", "karras", "exponential"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_euler_matches_diffusers(prediction_type, grid):
    options = {"karras": {"use_karras_sigmas": True}, "exponential": {"use_exponential_sigmas": True}}.get(grid, {})
    scheduler = diffusers.EulerDiscreteScheduler(prediction_type=prediction_type, **options)
    check_sampler(vp_mixture(prediction_type), scheduler)


@pytest.mark.parametrize("config", [
    {"timestep_spacing": "leading", "steps_offset": 1},  # init_noise_sigma = √(σ_0² + 1) after set_timesteps
    {"timestep_spacing": "trailing"},
    {"interpolation_type": "log_linear"},
    {"final_sigmas_type": "sigma_min", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
])
def test_euler_spacings_and_options_match_diffusers(config):
    scheduler = diffusers.EulerDiscreteScheduler(**config)
    model = GaussianMixtureDenoiser.random(
        SHAPE[1:], 3, alphas_cumprod=scheduler.alphas_cumprod.to(F64), seed=1, std=(0.2, 0.5),
        continuous_timesteps=True,
    )
    check_sampler(model, scheduler, intervals=(4,))


# --------------------------------------------------------------------------- Euler ancestral
@pytest.mark.parametrize("spacing", ["linspace", "leading"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_ancestral_matches_diffusers(prediction_type, spacing):
    """Same generator, same draws: the latents, then one draw per step, as Diffusers' loop makes them."""
    scheduler = diffusers.EulerAncestralDiscreteScheduler(prediction_type=prediction_type, timestep_spacing=spacing)
    rule = rule_from_scheduler(scheduler, STEPS)
    assert bool(rule.noise_steps.all())
    check_sampler(vp_mixture(prediction_type), scheduler, noise_seed=5)


# --------------------------------------------------------------------------- flow matching
@pytest.mark.parametrize("config", [
    {},
    {"shift": 3.0},
    {"shift": 3.0, "use_karras_sigmas": True},
    {"shift_terminal": 0.1},
    {"stochastic_sampling": True},
])
def test_flowmatch_matches_diffusers(config):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(**config)
    seed = 5 if config.get("stochastic_sampling") else None
    check_sampler(flow_mixture(), scheduler, noise_seed=seed)


def test_flowmatch_set_shift_carries_over():
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler()
    scheduler.set_shift(2.5)
    rule = rule_from_scheduler(scheduler, STEPS)
    scheduler.set_timesteps(STEPS)  # what the user's own scheduler steps through
    torch.testing.assert_close(rule.sigmas, scheduler.sigmas.to(F64), rtol=0, atol=0)
    unshifted = diffusers.FlowMatchEulerDiscreteScheduler()
    unshifted.set_timesteps(STEPS)
    assert not torch.equal(rule.sigmas, unshifted.sigmas.to(F64))


def solve_with_rule(model, rule, lat, intervals=None, parallel=False):
    """sequential/parallel sample through a DiffusionSystem built from ``rule`` (for rule options such as ``mu``)."""
    system = DiffusionSystem(UNetModel(model, lat.shape[0]), rule, lat * rule.init_noise_sigma, intervals=intervals)
    with torch.no_grad():
        if not parallel:
            return pitsolve.sequential(system).y[0]
        init = PosteriorInit(1)
        init.reset(system)
        sol = pitsolve.solve(system, "identity", tol=1e-8, init=init)
        assert sol.converged
        return sol.y[0]


@pytest.mark.parametrize("time_shift_type", ["exponential", "linear"])
def test_flowmatch_dynamic_shifting_matches_diffusers(time_shift_type):
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type=time_shift_type)
    mu = 0.8 if time_shift_type == "exponential" else 1.7
    model, lat = flow_mixture(), latents()
    rule = rule_from_scheduler(scheduler, STEPS, mu=mu)
    ours = solve_with_rule(model, rule, lat)
    ref = diffusers_loop(model, scheduler, STEPS, lat, mu=mu)
    assert rel(ours, ref) <= 1e-6
    seq = solve_with_rule(model, rule, lat.to(F64))
    for n in (STEPS, 5):
        assert rel(solve_with_rule(model, rule, lat.to(F64), intervals=n, parallel=True), seq) <= 1e-7


# --------------------------------------------------------------------------- UniPC
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_unipc_matches_diffusers(prediction_type, solver_type, order):
    # bh1 with a zero final σ: Diffusers' last step is NaN (see the test below); compare it on sigma_min.
    final = "sigma_min" if solver_type == "bh1" else "zero"
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type=prediction_type, solver_type=solver_type, solver_order=order, final_sigmas_type=final
    )
    intervals = (STEPS, 5) if prediction_type == "epsilon" else (5,)
    check_sampler(vp_mixture(prediction_type), scheduler, intervals=intervals, exact64=True)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("solver_type", ["bh1", "bh2"])
def test_unipc_karras_matches_diffusers_in_float64(solver_type, order):
    """On a short Karras grid Diffusers' float32 ρ moves the sample by ~1e-6; with float64 σ both agree to round-off."""
    scheduler = diffusers.UniPCMultistepScheduler(
        solver_type=solver_type, solver_order=order, use_karras_sigmas=True, final_sigmas_type="sigma_min"
    )
    model, lat = vp_mixture(), latents(F64)
    for steps in (6, 13):
        ours, _ = sequential_sample(model, scheduler, num_inference_steps=steps, latents=lat)
        ref = diffusers_loop(model, scheduler, steps, lat, float64_sigmas=True)
        assert rel(ours, ref) <= 1e-12
    ours32, _ = sequential_sample(model, scheduler, num_inference_steps=6, latents=lat.float())
    assert rel(ours32, diffusers_loop(model, scheduler, 6, lat.float())) <= 1e-5


@pytest.mark.parametrize("config", [
    {"predict_x0": False, "final_sigmas_type": "sigma_min"},
    {"solver_order": 3, "disable_corrector": [0, 4]},
    {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {"thresholding": True, "sample_max_value": 1.5, "prediction_type": "sample"},
    {"timestep_spacing": "trailing", "solver_order": 3},
])
def test_unipc_options_match_diffusers(config):
    # Order 3 up to the last step: Diffusers' float32 ρ moves the float32 sample by ~1e-6 (float64: round-off).
    tol = 3e-6 if config.get("lower_order_final") is False else 1e-6
    check_sampler(vp_mixture(config.get("prediction_type", "epsilon")), diffusers.UniPCMultistepScheduler(**config),
                  intervals=(5,), tol=tol, exact64=True)


def test_unipc_flow_sigmas_match_diffusers():
    scheduler = diffusers.UniPCMultistepScheduler(
        use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0, solver_order=3
    )
    check_sampler(flow_mixture(), scheduler, intervals=(5,), exact64=True)


def test_unipc_bh1_last_step_is_the_limit_where_diffusers_is_nan():
    """bh1, final σ = 0: Diffusers' last step is −∞·0 = NaN; the rule returns the limit x̂_0 of the last model call."""
    model, lat = vp_mixture(), latents()
    scheduler = diffusers.UniPCMultistepScheduler(solver_type="bh1", solver_order=2)
    ours, _ = sequential_sample(model, scheduler, num_inference_steps=STEPS, latents=lat)
    assert bool(diffusers_loop(model, scheduler, STEPS, lat).isnan().all())
    s = diffusers.UniPCMultistepScheduler.from_config(scheduler.config)
    s.set_timesteps(STEPS)
    x = lat
    with torch.no_grad():
        for t in s.timesteps[:-1]:
            x = s.step(model(x, t).sample, t, x).prev_sample
        t = s.timesteps[-1]
        last = s.convert_model_output(model(x, t).sample, sample=x)  # x̂_0 at the last predicted sample
    assert rel(ours, last) <= 1e-6


def test_unipc_rows_at_different_steps_in_one_call():
    """All T steps as one shuffled batch, each row with its own history, equal the chain stepped one by one."""
    rule = rule_from_scheduler(diffusers.UniPCMultistepScheduler(solver_order=3), STEPS)
    model = vp_mixture()
    x, hist = latents(F64)[:1], tuple(torch.zeros((1, *SHAPE[1:]), dtype=F64) for _ in range(rule.history_size))
    xs, outs, hists, nexts = [], [], [], []
    for i in range(STEPS):
        out = model(x, rule.timesteps[i]).sample
        nxt, new_hist = rule.step(x, out, torch.tensor([i]), hist)
        xs.append(x), outs.append(out), hists.append(hist), nexts.append(nxt)
        x, hist = nxt, new_hist
    perm = torch.randperm(STEPS, generator=gen(3))
    X, O = torch.cat(xs)[perm], torch.cat(outs)[perm]
    H = tuple(torch.cat([h[j] for h in hists])[perm] for j in range(rule.history_size))
    batched, _ = rule.step(X, O, perm, H)
    torch.testing.assert_close(batched, torch.cat(nexts)[perm], rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------- a UNet at float timesteps
@pytest.mark.parametrize("name", ["euler_karras_v", "unipc_bh2_3", "flow_shift"])
def test_tiny_unet_matches_diffusers(name):
    schedulers = {
        "euler_karras_v": diffusers.EulerDiscreteScheduler(use_karras_sigmas=True, prediction_type="v_prediction"),
        "unipc_bh2_3": diffusers.UniPCMultistepScheduler(solver_order=3),
        "flow_shift": diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
    }
    unet, shape, steps = tiny_unet(dtype=F32), (1, 1, 8, 8), 8
    lat = torch.randn(shape, generator=gen(0))
    ours, _ = sequential_sample(unet, schedulers[name], num_inference_steps=steps, latents=lat)
    assert rel(ours, diffusers_loop(unet, schedulers[name], steps, lat)) <= 1e-6
    par, sol = parallel_sample(unet, schedulers[name], num_inference_steps=steps, latents=lat, intervals=3, tol=1e-5)
    assert sol.converged and rel(par, ours) <= 1e-4


# --------------------------------------------------------------------------- posterior steps
@pytest.mark.parametrize("name", ["euler", "ancestral", "flow", "flow_stochastic", "unipc"])
def test_posterior_step_with_the_models_x0_is_the_step(name):
    scheduler, model = {
        "euler": (diffusers.EulerDiscreteScheduler(use_karras_sigmas=True), vp_mixture()),
        "ancestral": (diffusers.EulerAncestralDiscreteScheduler(), vp_mixture()),
        "flow": (diffusers.FlowMatchEulerDiscreteScheduler(shift=2.0), flow_mixture()),
        "flow_stochastic": (diffusers.FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), flow_mixture()),
        "unipc": (diffusers.UniPCMultistepScheduler(solver_order=3), vp_mixture()),
    }[name]
    rule = rule_from_scheduler(scheduler, STEPS)
    idx = torch.arange(STEPS)
    g = gen(4)
    x = torch.randn((STEPS, *SHAPE[1:]), generator=g, dtype=F64) * 2
    hist = tuple(torch.randn((STEPS, *SHAPE[1:]), generator=g, dtype=F64) for _ in range(rule.history_size))
    noise = torch.randn((STEPS, *SHAPE[1:]), generator=g, dtype=F64)
    out = model(rule.scale_model_input(x, idx), rule.timesteps).sample
    x0 = rule.denoise(x, out, idx)
    a, ha = rule.step(x, out, idx, hist, noise)
    b, hb = rule.posterior_step(x, x0, idx, hist, noise)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    for u, v in zip(ha, hb):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- the mixture at float timesteps
def mixture_log_density(model, x, alpha, sigma):
    mu = model.means.reshape(model.num_components, -1)
    scale = (alpha**2 * model.stds**2 + sigma**2).sqrt()[:, None].expand_as(mu)
    comp = Independent(Normal(alpha * mu, scale), 1)
    return MixtureSameFamily(Categorical(probs=model.weights), comp).log_prob(x.reshape(x.shape[0], -1))


def autograd_eps(model, x, alpha, sigma):
    """ε̂ = −σ ∇ log p_t(x) from an independent log-density, differentiated by autograd."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture_log_density(model, x, alpha, sigma).sum(), x)
    return -sigma * grad


def test_mixture_at_karras_float_timesteps_is_the_exact_denoiser_at_that_sigma():
    model = GaussianMixtureDenoiser.random(3, 3, alphas_cumprod=ABAR, seed=2, continuous_timesteps=True)
    s = diffusers.EulerDiscreteScheduler(use_karras_sigmas=True)
    s.set_timesteps(10)
    x = torch.randn(4, 3, generator=gen(1), dtype=F64) * 3
    for t, karras_sigma in zip(s.timesteps, s.sigmas[:-1]):
        alpha, sigma = (v[0, 0] for v in model.alpha_sigma(t))
        assert abs(float(sigma / alpha) / float(karras_sigma) - 1) < 1e-5  # the σ the scheduler meant
        torch.testing.assert_close(model(x, t).sample, autograd_eps(model, x, alpha, sigma), rtol=1e-9, atol=1e-9)
    # A Python float is read in float64 (not rounded through float32 first).
    t = 978.5714285714286
    assert model.alpha_sigma(t)[1].item() == model.alpha_sigma(torch.tensor(t, dtype=F64))[1].item()
    # Integer timesteps read alphas_cumprod exactly, as before.
    integer = GaussianMixtureDenoiser.random(3, 3, alphas_cumprod=ABAR, seed=2)
    for t in (0, 1, 500, 999):
        torch.testing.assert_close(model(x, float(t)).sample, integer(x, t).sample, rtol=0, atol=0)


def test_flow_mixture_velocity_is_exact():
    model = flow_mixture()
    x = torch.randn((5, *SHAPE[1:]), generator=gen(2), dtype=F64) * 1.5
    for t in (1.0, 137.5, 500.0, 999.0, 1000.0):
        s = t / 1000
        eps = autograd_eps(model, x, torch.tensor(1 - s, dtype=F64), torch.tensor(s, dtype=F64))
        x0 = (x - s * eps) / (1 - s) if s < 1 else None
        v = model(x, torch.tensor(t)).sample
        if x0 is not None:
            torch.testing.assert_close(v, eps - x0, rtol=1e-8, atol=1e-8)
        else:  # σ = 1: pure noise, x̂_0 = E[x_0]
            torch.testing.assert_close(v, x - model.mean(), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- refusals
def test_refusals_name_the_value_and_the_fix():
    cases = [
        (lambda: rule_from_scheduler(diffusers.EulerDiscreteScheduler(), 10, eta=0.5), "eta=0.5 applies to DDIM"),
        (lambda: EulerDiscreteRule.from_scheduler(diffusers.EulerDiscreteScheduler(), 10, s_churn=1.0), "s_churn=1.0"),
        (lambda: EulerAncestralRule.from_scheduler(diffusers.EulerAncestralDiscreteScheduler(prediction_type="sample"), 10),
         "prediction_type='sample' is not supported by EulerAncestralRule; choose one of 'epsilon', 'v_prediction'"),
        (lambda: FlowMatchEulerRule.from_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(invert_sigmas=True), 10),
         "invert_sigmas=True is not supported"),
        (lambda: FlowMatchEulerRule.from_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), 10),
         "pass mu=<float>"),
        (lambda: rule_from_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(), 10, mu=0.5), "mu=0.5 has no effect"),
        (lambda: UniPCMultistepRule.from_scheduler(diffusers.UniPCMultistepScheduler(predict_x0=False), 10),
         "predict_x0=False with final_sigmas_type='zero'"),
        (lambda: UniPCMultistepRule.from_scheduler(diffusers.UniPCMultistepScheduler(lower_order_final=False), 10),
         "lower_order_final=False with solver_order=2"),
        (lambda: UniPCMultistepRule.from_scheduler(diffusers.UniPCMultistepScheduler(solver_p=diffusers.DDIMScheduler()), 10),
         "solver_p"),
        (lambda: rule_from_scheduler(diffusers.EulerDiscreteScheduler(), 0), "num_inference_steps must be an int >= 1"),
        (lambda: rule_from_scheduler(diffusers.DDIMScheduler(), 10, mu=1.0), "unexpected options ['mu']"),
        (lambda: GaussianMixtureDenoiser.random(2, 2, alphas_cumprod=ABAR, prediction_type="flow_prediction"),
         "drop alphas_cumprod"),
        (lambda: GaussianMixtureDenoiser.random(2, 2), "needs alphas_cumprod"),
        (lambda: vp_mixture()(latents(), 999.5), r"outside [0, len(alphas_cumprod) - 1] = [0, 999]"),
        (lambda: flow_mixture()(latents(), torch.tensor(1000.5)), "outside [0, num_train_timesteps = 1000]"),
    ]
    for call, message in cases:
        with pytest.raises((pitsolve.InputValueError, pitsolve.InputTypeError)) as info:
            call()
        assert message in str(info.value), str(info.value)


def test_sigma_boundary_and_initial_noise_scale():
    euler = rule_from_scheduler(diffusers.EulerDiscreteScheduler(timestep_spacing="leading", steps_offset=1), 10)
    assert math.isclose(euler.init_noise_sigma, math.sqrt(float(euler.sigmas[0]) ** 2 + 1), rel_tol=1e-6)
    flow = rule_from_scheduler(diffusers.FlowMatchEulerDiscreteScheduler(), 10)
    assert flow.init_noise_sigma == 1.0 and float(flow.sigma_boundary()[-1]) == 0.0
    unipc = rule_from_scheduler(diffusers.UniPCMultistepScheduler(), 10)
    s = unipc.sigmas
    torch.testing.assert_close(unipc.sigma_boundary(), s / (1 + s**2).sqrt())
    assert unipc.history_size == 3 and unipc.step_orders.tolist() == [1, 2, 2, 2, 2, 2, 2, 2, 2, 1]
