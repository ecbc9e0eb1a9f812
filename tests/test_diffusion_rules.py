"""The batched fine-step rules against the Diffusers schedulers' own ``step`` and ``set_timesteps``.

Every rule is fed ALL steps of a chain in ONE call (rows shuffled), each row
with its own step index, noise and (for DPM-Solver) history, and compared row
by row with the scheduler stepping sequentially.

Tolerances: 1e-5 (relative + absolute) in float32, where Diffusers computes
its coefficients in float32 and we in float64 rounded once; 1e-10 in float64,
where the Diffusers schedulers are made to compute in float64 on the *same*
``ᾱ``/``sigma`` values as our rule (Diffusers keeps those tables in float32, so
its 0-dim float32 coefficients would otherwise cap agreement at ~1e-7; the
DPM-Solver step even downcasts float64 samples to float32).
"""

from __future__ import annotations

import diffusers
import pytest
import torch
from diffusers import (
    DDIMParallelScheduler,
    DDIMScheduler,
    DDPMParallelScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
)

import pitsolve
from pitsolve.adapters.diffusers import SUPPORTED_SCHEDULERS, rule_from_scheduler
from pitsolve.adapters.diffusion import SchedulerBridgeRule
from pitsolve.adapters.diffusion import (
    DDIMRule,
    DDPMRule,
    DPMSolverMultistepRule,
    SampleClipping,
    VPSchedule,
    dpmsolver_sigmas,
    make_betas,
    make_timesteps,
)

# Diffusers' step sees one 3×8×8 image as a batch [1, 3, 8, 8]; a rule row is one sample (thresholded on its own).
SHAPE = (1, 3, 8, 8)
PREDICTIONS = ("epsilon", "v_prediction", "sample")
SPACINGS = ("leading", "trailing", "linspace")
DTYPES = (torch.float32, torch.float64)
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def close(actual, expected, dtype):
    torch.testing.assert_close(actual, expected, rtol=TOL[dtype], atol=TOL[dtype])


def randn(seed, dtype, shape=SHAPE):
    """What diffusers' randn_tensor draws on the CPU from ``torch.Generator().manual_seed(seed)``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def in_float64(scheduler):
    """Make a DDPM/DDIM scheduler compute in float64 on its own (float32-valued) ᾱ table."""
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    if hasattr(scheduler, "one"):
        scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)


def run_one_step_scheduler(scheduler, n, dtype, seed=0, **step_kwargs):
    """Each step of a DDPM/DDIM chain on independent random (x, model output); noise seeded per step."""
    scheduler.set_timesteps(n)
    if dtype == torch.float64:
        in_float64(scheduler)
    xs, outs, noises, refs = [], [], [], []
    for i, t in enumerate(scheduler.timesteps):
        x, mo = randn(seed + 3 * i, dtype), randn(seed + 3 * i + 1, dtype)
        gen = torch.Generator().manual_seed(seed + 3 * i + 2)
        refs.append(scheduler.step(mo, t, x, generator=gen, **step_kwargs).prev_sample)
        xs.append(x), outs.append(mo), noises.append(randn(seed + 3 * i + 2, dtype))
    return torch.stack(xs), torch.stack(outs), torch.stack(noises), torch.stack(refs)


def batched(rule, X, MO, N=None, history=(), seed=0):
    """``rule.step`` on all rows at once, in a shuffled row order; results in step order."""
    perm = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))
    inv = torch.argsort(perm)
    out, new_hist = rule.step(
        X[perm], MO[perm], perm, tuple(h[perm] for h in history), None if N is None else N[perm]
    )
    return out[inv], tuple(h[inv] for h in new_hist)


# --------------------------------------------------------------------------- DDPM
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_ddpm_matches_diffusers(prediction_type, spacing, dtype):
    sched = DDPMScheduler(prediction_type=prediction_type, timestep_spacing=spacing, clip_sample=False)
    rule = rule_from_scheduler(sched, 30)
    X, MO, N, ref = run_one_step_scheduler(sched, 30, dtype)
    assert torch.equal(rule.noise_steps, sched.timesteps > 0)
    close(batched(rule, X, MO, N)[0], ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "config",
    [
        dict(variance_type="fixed_small_log", clip_sample=True),
        dict(variance_type="fixed_large", thresholding=True, sample_max_value=3.0),
        dict(variance_type="fixed_small", steps_offset=1, clip_sample=True, clip_sample_range=2.0),
        dict(variance_type="fixed_large", beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction"),
    ],
    ids=["small_log-clip", "large-threshold", "offset1-clip2", "cosine-large-v"],
)
def test_ddpm_options_match_diffusers(config, dtype):
    sched = DDPMScheduler(**config)
    rule = rule_from_scheduler(sched, 10)
    X, MO, N, ref = run_one_step_scheduler(sched, 10, dtype, seed=7)
    close(batched(rule, X, MO, N)[0], ref, dtype)


# --------------------------------------------------------------------------- DDIM
def ddim_reference(x, mo, abar, abar_prev, eta, noise, prediction_type):
    """Song et al. Eq. 12 by hand for one step from ᾱ to ᾱ' (no clipping)."""
    a, s = abar**0.5, (1 - abar) ** 0.5
    if prediction_type == "epsilon":
        x0, eps = (x - s * mo) / a, mo
    elif prediction_type == "sample":
        x0, eps = mo, (x - a * mo) / s
    else:
        x0, eps = a * x - s * mo, a * mo + s * x
    std = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
    return abar_prev**0.5 * x0 + (1 - abar_prev - std**2) ** 0.5 * eps + std * noise


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n", [20, 30])
@pytest.mark.parametrize("eta", [0.0, 0.5])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
def test_ddim_matches_diffusers_where_the_stride_follows_the_schedule(prediction_type, spacing, eta, n, dtype):
    sched = DDIMScheduler(prediction_type=prediction_type, timestep_spacing=spacing, clip_sample=False)
    rule = rule_from_scheduler(sched, n, eta=eta)
    X, MO, N, ref = run_one_step_scheduler(sched, n, dtype, eta=eta)
    out = batched(rule, X, MO, N)[0]
    ts = sched.timesteps
    # Diffusers steps to t − 1000 // n; we step to the next schedule entry (DDIMRule docstring).
    nxt = torch.cat([ts[1:], ts.new_tensor([-1])])
    stride_prev = ts - 1000 // n
    agree = (stride_prev == nxt) | ((stride_prev < 0) & (nxt < 0))
    assert bool(agree.all()) == (spacing == "leading" or (spacing == "trailing" and 1000 % n == 0))
    close(out[agree], ref[agree], dtype)
    ac = sched.alphas_cumprod.to(torch.float64)
    for i in (~agree).nonzero().flatten().tolist():
        by_hand = ddim_reference(
            X[i].double(), MO[i].double(), ac[ts[i]], ac[nxt[i]] if nxt[i] >= 0 else 1.0, eta, N[i].double(),
            prediction_type,
        )
        close(out[i], by_hand.to(dtype), dtype)
    if not bool(agree.all()):  # the stride really lands elsewhere there
        assert float((out[~agree] - ref[~agree]).abs().max()) > 1e-4


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_ddim_eta1_is_diffusers_ddpm_on_a_linspace_schedule(dtype):
    """DDIM with η = 1 is the DDPM posterior: checked against DDPMScheduler, which follows the schedule."""
    ddpm = DDPMScheduler(timestep_spacing="linspace", clip_sample=False)
    X, MO, N, ref = run_one_step_scheduler(ddpm, 30, dtype, seed=11)
    rule = rule_from_scheduler(DDIMScheduler(timestep_spacing="linspace", clip_sample=False), 30, eta=1.0)
    close(batched(rule, X, MO, N)[0], ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "config, step_kwargs",
    [
        (dict(clip_sample=True), dict(eta=0.5, use_clipped_model_output=True)),
        (dict(thresholding=True, sample_max_value=2.0, set_alpha_to_one=False), dict(eta=0.0)),
        (dict(steps_offset=1, prediction_type="sample", clip_sample=True), dict(eta=1.0)),
    ],
    ids=["clip-clipped_output", "threshold-alpha0", "offset1-sample"],
)
def test_ddim_options_match_diffusers(config, step_kwargs, dtype):
    sched = DDIMScheduler(**config)
    rule = rule_from_scheduler(sched, 10, eta=step_kwargs["eta"])
    if step_kwargs.get("use_clipped_model_output"):
        rule = DDIMRule(
            rule.timesteps, sched.alphas_cumprod, eta=step_kwargs["eta"], clipping=rule.clipping,
            use_clipped_model_output=True,
        )
    X, MO, N, ref = run_one_step_scheduler(sched, 10, dtype, seed=5, **step_kwargs)
    close(batched(rule, X, MO, N)[0], ref, dtype)


# --------------------------------------------------------------------------- DPM-Solver
def run_dpm(sched, n, dtype, seed=0):
    """Diffusers' multistep chain with random model outputs: inputs, outputs and converted outputs per step."""
    sched.set_timesteps(n)
    current = {}
    if dtype == torch.float64:
        # Diffusers' step runs its update on `sample.to(torch.float32)`; run its own update functions on the
        # float64 sample instead, with its sigma table (float32 values) in float64.
        sched.sigmas = sched.sigmas.to(torch.float64)
        for name in (
            "dpm_solver_first_order_update",
            "multistep_dpm_solver_second_order_update",
            "multistep_dpm_solver_third_order_update",
        ):
            fn = getattr(sched, name)
            setattr(sched, name, lambda *a, _fn=fn, sample=None, noise=None: _fn(*a, sample=current["x"], noise=noise))
    x = randn(seed, dtype)
    xs, mos, refs, converted = [], [], [], []
    for i, t in enumerate(sched.timesteps):
        mo = denoiser_output(x, float(sched.sigmas[i]), randn(seed + i + 1, dtype), sched.config.prediction_type)
        xs.append(x), mos.append(mo)
        current["x"] = x
        x = sched.step(mo, t, x).prev_sample
        assert x.dtype == dtype
        refs.append(x), converted.append(sched.model_outputs[-1].clone())
    return torch.stack(xs), torch.stack(mos), torch.stack(refs), torch.stack(converted)


def denoiser_output(x, s, x0, prediction_type):
    """The output of a model that predicts the random clean sample ``x0`` from ``x`` at DPM sigma ``s``.

    Purely random ε̂ at t ≈ 999 would give |x̂_0| ~ 1/α ≈ 160 and a chain drifting to |x| ~ 10³, where
    float32 evaluations (ours or Diffusers') disagree at ~1e-4 from cancellation alone; a random
    clean-sample prediction keeps every term O(1), as for a trained model.
    """
    alpha = 1 / (s**2 + 1) ** 0.5
    sigma = s * alpha
    eps = (x - alpha * x0) / sigma
    return {"epsilon": eps, "sample": x0, "v_prediction": alpha * eps - sigma * x0}[prediction_type]


def histories(converted, size):
    """Row i: (m_{i−1}, m_{i−2}, …), zeros before step 0."""
    out = []
    for j in range(1, size + 1):
        h = torch.zeros_like(converted)
        h[j:] = converted[:-j]
        out.append(h)
    return tuple(out)


def check_dpm(sched, n, dtype, seed=0):
    rule = rule_from_scheduler(sched, n)
    assert isinstance(rule, DPMSolverMultistepRule)
    X, MO, ref, conv = run_dpm(sched, n, dtype, seed)
    hist = histories(conv, rule.history_size)
    out, new_hist = batched(rule, X, MO, history=hist, seed=seed)
    close(out, ref, dtype)
    if rule.history_size:  # the new history is (m_i, m_{i−1}, …)
        # m_i = x̂_0 = (x − σ ε̂)/α has condition number 1/α (≈ 157 at t = 999): a one-ulp difference in
        # float32 coefficients moves it by ~1/α ulps, so its tolerance is scaled by 1/α per row.
        kappa = (1 + rule.sigmas[:-1] ** 2).sqrt().to(dtype).reshape(-1, *[1] * len(SHAPE))
        close(new_hist[0] / kappa, conv / kappa, dtype)
        assert all(torch.equal(new, old) for new, old in zip(new_hist[1:], hist))
    return rule


DPM_SOLVERS = [(1, "midpoint"), (2, "midpoint"), (2, "heun"), (3, "midpoint"), (3, "heun")]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTIONS)
@pytest.mark.parametrize("order, solver_type", DPM_SOLVERS)
@pytest.mark.parametrize("algorithm_type", ["dpmsolver++", "dpmsolver"])
def test_dpmsolver_all_steps_in_one_call_match_diffusers(
    algorithm_type, order, solver_type, prediction_type, spacing, dtype
):
    sched = DPMSolverMultistepScheduler(
        algorithm_type=algorithm_type,
        solver_order=order,
        solver_type=solver_type,
        prediction_type=prediction_type,
        timestep_spacing=spacing,
        final_sigmas_type="zero" if algorithm_type == "dpmsolver++" else "sigma_min",
    )
    check_dpm(sched, 10, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "config, n",
    [
        (dict(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min"), 10),
        (dict(solver_order=3, euler_at_final=True, final_sigmas_type="sigma_min"), 16),
        (dict(solver_order=3), 16),
        (dict(solver_order=2, thresholding=True, sample_max_value=1.5, prediction_type="sample"), 12),
        (dict(solver_order=3, algorithm_type="dpmsolver", thresholding=True, final_sigmas_type="sigma_min"), 8),
        (dict(solver_order=3, use_karras_sigmas=True), 12),
        (dict(solver_order=2, use_exponential_sigmas=True, solver_type="heun"), 12),
        (dict(solver_order=3, use_beta_sigmas=True), 12),
        (dict(solver_order=3, use_lu_lambdas=True), 12),
        (dict(solver_order=2, beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1), 12),
        (dict(solver_order=3, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 1),
        (dict(solver_order=3, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012), 3),
    ],
    ids=[
        "no_lower_final", "euler_final", "n16", "threshold", "plain-threshold", "karras", "exponential", "beta",
        "lu", "cosine-clipped", "n1", "n3",
    ],
)
def test_dpmsolver_options_match_diffusers(config, n, dtype):
    check_dpm(DPMSolverMultistepScheduler(**config), n, dtype, seed=3)


def test_dpmsolver_step_orders_warm_up_and_final():
    def orders(n, **config):
        return rule_from_scheduler(DPMSolverMultistepScheduler(**config), n).step_orders.tolist()

    assert orders(8, solver_order=3) == [1, 2, 3, 3, 3, 3, 2, 1]
    assert orders(16, solver_order=3) == [1, 2] + [3] * 13 + [1]
    assert orders(16, solver_order=3, final_sigmas_type="sigma_min") == [1, 2] + [3] * 14
    assert orders(8, solver_order=2, lower_order_final=False, final_sigmas_type="sigma_min") == [1] + [2] * 7


def test_dpmsolver_ignores_unneeded_history():
    """Rows whose order does not need a history entry ignore it, even when it is NaN."""
    rule = rule_from_scheduler(DPMSolverMultistepScheduler(solver_order=3), 6)
    X, MO, ref, conv = run_dpm(DPMSolverMultistepScheduler(solver_order=3), 6, torch.float64)
    hist = list(histories(conv, 2))
    hist[0][0] = float("nan")  # step 0: order 1
    hist[1][:2] = float("nan")  # steps 0, 1: order ≤ 2
    hist[1][-2:] = float("nan")  # steps 4, 5: lower-order final steps
    out, new_hist = rule.step(X, MO, torch.arange(6), tuple(hist))
    close(out, ref, torch.float64)
    assert all(bool(torch.isfinite(h).all()) for h in new_hist)
    assert bool((new_hist[1][0] == 0).all())  # m_{−1} does not exist: zero


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("steps_offset", [0, 1])
@pytest.mark.parametrize("n", [1, 10, 30, 50, 999, 1000])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmsolver"])
def test_make_timesteps_matches_set_timesteps(kind, spacing, n, steps_offset):
    cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmsolver": DPMSolverMultistepScheduler}[kind]
    sched = cls(timestep_spacing=spacing, steps_offset=steps_offset)
    sched.set_timesteps(n)
    ours = make_timesteps(1000, n, spacing, steps_offset=steps_offset, kind=kind)
    assert ours.dtype == torch.long
    assert torch.equal(ours, sched.timesteps)


def test_make_timesteps_dpmsolver_lambda_min_clipped():
    sched = DPMSolverMultistepScheduler(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1)
    vp = VPSchedule(sched.alphas_cumprod)
    last = int((vp.lambda_(torch.arange(1000)) >= -5.1).sum())
    assert last < 1000
    for spacing in SPACINGS:
        sched = DPMSolverMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1, timestep_spacing=spacing
        )
        sched.set_timesteps(20)
        assert torch.equal(make_timesteps(1000, 20, spacing, kind="dpmsolver", last_timestep=last), sched.timesteps)


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_schedule_and_sigmas_equal_diffusers(beta_schedule):
    kw = dict(beta_schedule=beta_schedule, beta_start=0.00085, beta_end=0.012)
    sched = DPMSolverMultistepScheduler(**kw)
    assert torch.equal(make_betas(beta_schedule, 1000, 0.00085, 0.012), sched.betas)
    vp = VPSchedule.from_config(beta_schedule, 1000, 0.00085, 0.012)
    assert torch.equal(vp.alphas_cumprod, sched.alphas_cumprod.double())
    t = torch.arange(1000)
    torch.testing.assert_close(vp.alpha(t), sched.alpha_t.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(vp.sigma(t), sched.sigma_t.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(vp.lambda_(t), sched.lambda_t.double(), rtol=1e-5, atol=1e-5)
    assert float(vp.sigma(torch.tensor([-1]))) == 0.0
    for final in ("zero", "sigma_min"):
        sched = DPMSolverMultistepScheduler(final_sigmas_type=final, **kw)
        sched.set_timesteps(25)
        assert torch.equal(dpmsolver_sigmas(sched.alphas_cumprod, sched.timesteps, final), sched.sigmas.double())


def test_library_free_rules_equal_the_bridged_ones():
    ac = VPSchedule.from_config("linear").alphas_cumprod
    X, MO, N = (randn(s, torch.float64, (12, *SHAPE)) for s in (1, 2, 3))
    idx = torch.arange(12)
    pairs = [
        (DDPMRule(make_timesteps(1000, 12, "trailing", kind="ddpm"), ac),
         rule_from_scheduler(DDPMScheduler(timestep_spacing="trailing", clip_sample=False), 12)),
        (DDIMRule(make_timesteps(1000, 12, "linspace"), ac, eta=0.3),
         rule_from_scheduler(DDIMScheduler(timestep_spacing="linspace", clip_sample=False), 12, eta=0.3)),
    ]
    ts = make_timesteps(1000, 12, "linspace", kind="dpmsolver")
    pairs.append((DPMSolverMultistepRule(ts, dpmsolver_sigmas(ac.float(), ts), solver_order=1),
                  rule_from_scheduler(DPMSolverMultistepScheduler(solver_order=1), 12)))
    for ours, bridged in pairs:
        assert torch.equal(ours.timesteps, bridged.timesteps)
        assert torch.equal(ours.step(X, MO, idx, noise=N)[0], bridged.step(X, MO, idx, noise=N)[0])
        assert torch.equal(ours.sigma_boundary(), bridged.sigma_boundary())


def test_sigma_boundary():
    ac = DDPMScheduler().alphas_cumprod.double()
    ddpm = rule_from_scheduler(DDPMScheduler(), 10)
    assert ddpm.sigma_boundary().dtype == torch.float64 and ddpm.sigma_boundary().shape == (11,)
    torch.testing.assert_close(ddpm.sigma_boundary()[:-1], (1 - ac[ddpm.timesteps]).sqrt())
    assert float(ddpm.sigma_boundary()[-1]) == 0.0
    ddim = rule_from_scheduler(DDIMScheduler(set_alpha_to_one=False), 10)
    assert float(ddim.sigma_boundary()[-1]) == pytest.approx(float((1 - ac[0]).sqrt()))
    dpm = rule_from_scheduler(DPMSolverMultistepScheduler(), 10)
    s = dpm.sigmas
    torch.testing.assert_close(dpm.sigma_boundary(), s / (1 + s**2).sqrt())
    assert float(dpm.sigma_boundary()[-1]) == 0.0


# --------------------------------------------------------------------------- the bridge
@pytest.mark.parametrize("name", ["HeunDiscreteScheduler", "PNDMScheduler", "LMSDiscreteScheduler"])
def test_rule_from_scheduler_bridges_unregistered_schedulers(name):
    rule = rule_from_scheduler(getattr(diffusers, name)(), 10)
    assert isinstance(rule, SchedulerBridgeRule) and rule.scheduler_class == name
    assert name not in SUPPORTED_SCHEDULERS  # the hand-written ones only


def test_rule_from_scheduler_rejects_non_schedulers():
    with pytest.raises(pitsolve.InputTypeError) as info:
        rule_from_scheduler(object(), 10)
    assert "SchedulerMixin" in str(info.value) and "object" in str(info.value)
    assert all(s in str(info.value) for s in SUPPORTED_SCHEDULERS)


def test_rule_from_scheduler_rejects_eta_and_bad_options():
    for sched in (DDPMScheduler(), DDPMParallelScheduler(), DPMSolverMultistepScheduler()):
        with pytest.raises(pitsolve.InputValueError, match="eta"):
            rule_from_scheduler(sched, 10, eta=0.5)
    for algorithm in ("sde-dpmsolver++", "sde-dpmsolver"):  # the stochastic variants go through the bridge
        sched = DPMSolverMultistepScheduler(algorithm_type=algorithm, final_sigmas_type="sigma_min")
        rule = rule_from_scheduler(sched, 10)
        assert isinstance(rule, SchedulerBridgeRule) and bool(rule.noise_steps.any())
    with pytest.raises(pitsolve.InputValueError, match="learned_range"):
        rule_from_scheduler(DDPMScheduler(variance_type="learned_range"), 10)
    # Flow sigmas are outside the hand-written rule's VP schedule: the scheduler's own step serves them.
    flow = DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction")
    with pytest.raises(pitsolve.InputValueError, match="use_flow_sigmas"):
        DPMSolverMultistepRule.from_scheduler(flow, 10)
    assert isinstance(rule_from_scheduler(flow, 10), SchedulerBridgeRule)
    with pytest.raises(ValueError, match="num_inference_steps"):
        rule_from_scheduler(DDIMScheduler(), 0)


@pytest.mark.parametrize(
    "parallel, plain, eta", [(DDPMParallelScheduler, DDPMScheduler, 0.0), (DDIMParallelScheduler, DDIMScheduler, 0.7)]
)
def test_rule_from_scheduler_accepts_parallel_variants(parallel, plain, eta):
    p = rule_from_scheduler(parallel(timestep_spacing="trailing"), 25, eta=eta)
    q = rule_from_scheduler(plain(timestep_spacing="trailing"), 25, eta=eta)
    assert type(p) is type(q)
    X, MO, N = (randn(s, torch.float32, (25, *SHAPE)) for s in (1, 2, 3))
    idx = torch.arange(25)
    assert torch.equal(p.step(X, MO, idx, noise=N)[0], q.step(X, MO, idx, noise=N)[0])
    # Diffusers' DDPMParallelScheduler.step is DDPMScheduler.step: compare with it on one step.
    sched = parallel(timestep_spacing="trailing")
    sched.set_timesteps(25)
    t = sched.timesteps[3]
    kwargs = {"eta": eta} if parallel is DDIMParallelScheduler else {}
    ref = sched.step(MO[3], t, X[3], generator=torch.Generator().manual_seed(9), **kwargs)
    noise = randn(9, torch.float32)
    close(p.step(X[3:4], MO[3:4], torch.tensor([3]), noise=noise[None])[0][0], ref.prev_sample, torch.float32)


def test_rule_from_scheduler_does_not_mutate_the_scheduler():
    sched = DPMSolverMultistepScheduler(solver_order=3)
    before = (sched.timesteps.clone(), sched.num_inference_steps, dict(sched.config))
    rule_from_scheduler(sched, 7)
    assert torch.equal(sched.timesteps, before[0]) and sched.num_inference_steps == before[1]
    assert dict(sched.config) == before[2]


# --------------------------------------------------------------------------- posterior and errors
@pytest.mark.parametrize(
    "rule",
    [
        DDPMRule(make_timesteps(1000, 20, "leading", kind="ddpm"), make_betas().double().neg().add(1).cumprod(0),
                 clipping=SampleClipping(clip_sample=True)),
        DDPMRule(make_timesteps(1000, 20, "trailing", kind="ddpm"), VPSchedule.from_config().alphas_cumprod,
                 prediction_type="v_prediction", variance_type="fixed_large",
                 clipping=SampleClipping(thresholding=True, sample_max_value=2.0)),
        DDIMRule(make_timesteps(1000, 20, "linspace"), VPSchedule.from_config().alphas_cumprod, eta=0.5),
        DDIMRule(make_timesteps(1000, 20, "trailing"), VPSchedule.from_config().alphas_cumprod, eta=0.0,
                 prediction_type="sample", clipping=SampleClipping(clip_sample=True), use_clipped_model_output=True),
    ],
    ids=["ddpm-clip", "ddpm-v-threshold", "ddim-eta0.5", "ddim-clipped-output"],
)
def test_posterior_step_with_the_models_x0_is_the_step(rule):
    X, MO, N = (randn(s, torch.float64, (20, *SHAPE)) for s in (4, 5, 6))
    idx = torch.arange(20)
    x0 = rule.denoise(X, MO, idx)
    torch.testing.assert_close(rule.posterior_step(X, x0, idx, noise=N)[0], rule.step(X, MO, idx, noise=N)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm_type, final", [("dpmsolver++", "zero"), ("dpmsolver", "sigma_min")])
def test_dpmsolver_posterior_step_with_the_models_x0_is_the_step(algorithm_type, final):
    rule = rule_from_scheduler(
        DPMSolverMultistepScheduler(solver_order=3, algorithm_type=algorithm_type, final_sigmas_type=final), 9
    )
    X, MO, H1, H2 = (randn(s, torch.float64, (9, *SHAPE)) for s in (4, 5, 6, 7))
    idx = torch.arange(9)
    x0 = rule.denoise(X, MO, idx)
    a, b = rule.posterior_step(X, x0, idx, (H1, H2)), rule.step(X, MO, idx, (H1, H2))
    for u, v in zip((a[0], *a[1]), (b[0], *b[1])):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


def test_rules_reject_bad_input():
    ac = VPSchedule.from_config().alphas_cumprod
    ddpm = DDPMRule(make_timesteps(1000, 10, "leading"), ac)
    X = torch.zeros(3, *SHAPE)
    with pytest.raises(pitsolve.InputValueError, match="noise"):
        ddpm.step(X, X, torch.tensor([0, 1, 2]))
    with pytest.raises(pitsolve.InputValueError, match="step_index"):
        ddpm.step(X, X, torch.tensor([0, 1, 10]), noise=X)
    with pytest.raises(pitsolve.InputValueError, match="history"):
        ddpm.step(X, X, torch.tensor([0, 1, 2]), (X,), noise=X)
    ddpm.step(X, X, torch.tensor([9, 9, 9]))  # timestep 0 takes no noise
    with pytest.raises(pitsolve.InputValueError, match="'learned'"):
        DDPMRule(ddpm.timesteps, ac, variance_type="learned")
    with pytest.raises(pitsolve.InputValueError, match="prediction_type='flow'"):
        DDIMRule(ddpm.timesteps, ac, prediction_type="flow")
    with pytest.raises(pitsolve.InputValueError, match="eta"):
        DDIMRule(ddpm.timesteps, ac, eta=-0.1)
    with pytest.raises(pitsolve.InputValueError, match="eta=3"):
        DDIMRule(ddpm.timesteps, ac, eta=3.0)
    with pytest.raises(pitsolve.InputValueError, match="strictly decrease"):
        DDIMRule(ddpm.timesteps.flip(0), ac)
    with pytest.raises(pitsolve.InputValueError, match="timesteps must lie"):
        DDIMRule(ddpm.timesteps + 100, ac)
    ts = make_timesteps(1000, 10, "linspace", kind="dpmsolver")
    with pytest.raises(pitsolve.InputValueError, match="sde-dpmsolver"):
        DPMSolverMultistepRule(ts, dpmsolver_sigmas(ac, ts), algorithm_type="sde-dpmsolver")
    with pytest.raises(pitsolve.InputValueError, match="solver_order=4"):
        DPMSolverMultistepRule(ts, dpmsolver_sigmas(ac, ts), solver_order=4)
    with pytest.raises(pitsolve.InputValueError, match="final_sigmas_type"):
        DPMSolverMultistepRule(ts, dpmsolver_sigmas(ac, ts), algorithm_type="dpmsolver")
    with pytest.raises(pitsolve.InputValueError, match="length"):
        DPMSolverMultistepRule(ts, dpmsolver_sigmas(ac, ts)[:-1])
    with pytest.raises(pitsolve.InputValueError, match="spacing"):
        make_timesteps(1000, 10, "uniform")


def test_half_precision_is_stepped_in_float32():
    rule = DDIMRule(make_timesteps(1000, 10, "trailing"), VPSchedule.from_config().alphas_cumprod)
    X, MO = randn(1, torch.float32, (10, *SHAPE)), randn(2, torch.float32, (10, *SHAPE))
    idx = torch.arange(10)
    half = rule.step(X.half(), MO.half(), idx)[0]
    assert half.dtype == torch.float16
    assert torch.equal(half, rule.step(X.half().float(), MO.half().float(), idx)[0].half())
