"""Every scheduler class Diffusers ships × prediction types × spacings, against Diffusers' own loop.

(a) the sequential sampler equals Diffusers' loop (set_timesteps; for t: scale_model_input, model, step)
    to 1e-6 relative in float32 on a closed-form model, with the same generator — stochastic samplers
    included, since the bridge draws each step's noise up front in the order of Diffusers' loop;
(b) the parallel sampler equals the sequential one to the tolerance for N = T and N < T;
(c) a class the bridge cannot serve is refused with a typed error naming it and the reason, before any
    model call; where Diffusers' own loop cannot run a variant either, the bridge refuses it too.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import diffusers
import pytest
import torch

import pitsolve
from pitsolve.adapters.diffusers import parallel_sample, rule_from_scheduler, sequential_sample
from pitsolve.adapters.diffusers.support import (
    EXACT,
    STEPS,
    TinyDenoiser,
    compare_with_diffusers,
    diffusers_loop,
    make_scheduler,
    prediction_types,
    scheduler_classes,
    timestep_spacings,
)
from pitsolve.adapters.diffusion import SchedulerBridgeRule
from pitsolve.adapters.diffusion.rules.bridge import UnsupportedScheduler
from pitsolve.adapters.diffusion.rules.registry import REGISTRY, SAMPLERS

CLASSES = scheduler_classes()


def _variants(name):
    """Prediction types at the default spacing, and spacings at the default (ε) prediction."""
    preds, spacings = prediction_types(name), timestep_spacings(name)
    out = [(p, spacings[0]) for p in preds] + [(preds[0], s) for s in spacings[1:]]
    return out


#: Documented, deliberate differences of hand-written rules from Diffusers (see the rules' docstrings).
DEVIATIONS = {
    ("DDIMScheduler", "linspace"): "DDIMRule steps to the next scheduled timestep, Diffusers by a fixed stride",
    ("DDIMParallelScheduler", "linspace"): "DDIMRule steps to the next scheduled timestep, Diffusers by a fixed stride",
}


def _case(n, p, s):
    why = DEVIATIONS.get((n, s))
    marks = [pytest.mark.xfail(strict=True, reason=why, raises=AssertionError)] if why else []
    return pytest.param(n, p, s, id=f"{n}-{p}-{s}", marks=marks)


CASES = [_case(n, p, s) for n in CLASSES for p, s in _variants(n)]


def _build(name, prediction_type=None, spacing=None):
    try:
        return make_scheduler(name, prediction_type, spacing)
    except Exception as err:  # noqa: BLE001 - the class itself refuses these settings
        pytest.skip(f"diffusers' {name} cannot be built with prediction_type={prediction_type}, "
                    f"timestep_spacing={spacing} and its defaults ({type(err).__name__})")


def _diffusers_runs(scheduler) -> bool:
    g = torch.Generator().manual_seed(0)
    try:
        diffusers_loop(scheduler, TinyDenoiser(), torch.randn((2, 2, 4, 4), generator=g), g)
    except Exception:  # noqa: BLE001 - Diffusers' own loop fails for this class/variant
        return False
    return True


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name, prediction_type, spacing", CASES)
def test_sequential_equals_diffusers_loop(name, prediction_type, spacing):
    scheduler = _build(name, prediction_type, spacing)
    try:
        result = compare_with_diffusers(scheduler)
    except pitsolve.InputValueError as err:
        # (c) a typed refusal names the class; a scheduler Diffusers can run in its own loop must be
        # refused for a stated reason, not by accident.
        assert name in str(err)
        if rule_class_for_exact(name) is not None:  # a rule refuses only what the bridge cannot serve either
            with pytest.raises(pitsolve.InputValueError):
                SchedulerBridgeRule.from_scheduler(scheduler, STEPS)
            return
        if _diffusers_runs(scheduler):  # refused although Diffusers' loop runs: only the documented classes
            assert name in UNSUPPORTED, f"{name} refused: {err}"
            assert isinstance(err, UnsupportedScheduler) and "cannot be served by the generic bridge" in str(err)
        return
    if result["diverges"]:
        pytest.skip(f"Diffusers' own loop of {name} gives NaN/Inf with these settings")
    assert result["error"] <= EXACT, f"{name}: sequential differs from Diffusers' loop by {result['error']:.2e}"
    rule = result["rule"]
    if rule_class_for_exact(name) is None:
        assert isinstance(rule, SchedulerBridgeRule) or name == "DPMSolverMultistepScheduler"
    elif not isinstance(rule, rule_class_for_exact(name)):  # the rule refused this configuration: the bridge serves it
        assert isinstance(rule, SchedulerBridgeRule)


def rule_class_for_exact(name):
    return REGISTRY.get(name)


def _served():
    """The classes the matrix serves at their default settings (computed once, on first use)."""
    out = []
    for name in CLASSES:
        try:
            scheduler = getattr(diffusers, name)()
            rule_from_scheduler(scheduler, STEPS)
        except Exception:  # noqa: BLE001 - refused (tested above) or not buildable with defaults
            continue
        out.append(name)
    return out


def test_the_named_samplers_and_the_issues_list_are_served():
    served = set(_served())
    wanted = {e.scheduler for e in SAMPLERS} | {
        "EulerAncestralDiscreteScheduler", "LCMScheduler", "TCDScheduler", "KDPM2AncestralDiscreteScheduler",
        "FlowMatchEulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverSinglestepScheduler",
    }
    assert wanted <= served, f"not served: {sorted(wanted - served)}"


PARALLEL = ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
            "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
            "UniPCMultistepScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "DEISMultistepScheduler",
            "DPMSolverSinglestepScheduler", "LCMScheduler", "TCDScheduler", "SASolverScheduler", "IPNDMScheduler",
            "FlowMatchEulerDiscreteScheduler", "FlowMatchHeunDiscreteScheduler", "EDMEulerScheduler"]


@pytest.mark.parametrize("name", PARALLEL)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_parallel_equals_sequential(name, prediction_type):
    if prediction_type not in prediction_types(name):
        pytest.skip(f"{name} takes no prediction_type")
    scheduler = _build(name, prediction_type, None)
    model = TinyDenoiser()
    g = torch.Generator().manual_seed(3)
    latents = torch.randn((2, 2, 4, 4), generator=g)
    state = g.get_state()
    seq, seq_sol = sequential_sample(model, scheduler, num_inference_steps=STEPS, latents=latents, generator=g)
    T = seq_sol.num_intervals
    for N in (T, max(2, T // 2)):
        g.set_state(state)
        par, sol = parallel_sample(model, scheduler, num_inference_steps=STEPS, latents=latents, generator=g,
                                   intervals=N, tol=1e-5)
        error = float((par - seq).norm() / seq.norm())
        assert error <= 1e-3, f"{name} N={N}: parallel differs from sequential by {error:.2e}"
        assert sol.iterations <= N  # finite termination: at most N sweeps


def test_two_evaluation_steps_are_counted_honestly():
    # Heun: 2T − 1 scheduler steps, each one model call, all on the sequential critical path.
    scheduler = diffusers.HeunDiscreteScheduler()
    rule = rule_from_scheduler(scheduler, STEPS)
    assert rule.num_steps == 2 * STEPS - 1
    calls = []

    def model(x, t):
        calls.append(x.shape[0])
        return TinyDenoiser()(x, t)

    latents = torch.randn((2, 2, 4, 4), generator=torch.Generator().manual_seed(0))
    _, sol = sequential_sample(model, scheduler, num_inference_steps=STEPS, latents=latents)
    assert sol.nfe == sol.depth == 2 * STEPS - 1 and len(calls) == 2 * STEPS - 1


UNSUPPORTED = {
    "DPMSolverSDEScheduler": "noise_sampler",  # a Brownian tree seeded and shaped by the first sample
    "CosineDPMSolverMultistepScheduler": "noise_sampler",
    "KarrasVeScheduler": "sigma_hat",  # its step takes (sigma_hat, sigma_prev, sample_hat), not a timestep
    "RePaintScheduler": "original_image",  # inpainting: the step needs the image and the mask
    "CogVideoXDPMScheduler": "old_pred_original_sample",
    "ScoreSdeVeScheduler": "no step",
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_schedulers_get_a_typed_error_before_any_model_call(name):
    calls = []

    def model(x, t):
        calls.append(1)
        return x

    with pytest.raises(UnsupportedScheduler) as info:
        parallel_sample(model, getattr(diffusers, name)(), num_inference_steps=STEPS,
                        latents=torch.zeros((1, 2, 4, 4)))
    assert isinstance(info.value, pitsolve.InputValueError)
    assert name in str(info.value) and UNSUPPORTED[name] in str(info.value) and "docs/schedulers.md" in str(info.value)
    assert calls == []


def test_rule_from_scheduler_prefers_registered_rules():
    for name, rule_cls in REGISTRY.items():
        rule = rule_from_scheduler(getattr(diffusers, name)(), STEPS)
        assert isinstance(rule, rule_cls) or name == "DPMSolverMultistepScheduler"


def test_a_subclass_goes_through_the_bridge():
    class MyDDIM(diffusers.DDIMScheduler):  # its step may differ from DDIM's: serve it by its own step
        pass

    rule = rule_from_scheduler(MyDDIM(), STEPS)
    assert isinstance(rule, SchedulerBridgeRule) and rule.scheduler_class == "MyDDIM"


def test_the_noise_tap_leaves_diffusers_own_draws_alone():
    rule_from_scheduler(diffusers.EulerAncestralDiscreteScheduler(), STEPS)  # installs the tap
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as module

    a = module.randn_tensor((3, 4), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, torch.randn((3, 4), generator=torch.Generator().manual_seed(5)))


def test_support_table_lists_every_class():
    text = (Path(__file__).resolve().parents[1] / "docs" / "schedulers.md").read_text()
    for name in CLASSES:
        assert f"| `{name}` |" in text, f"docs/schedulers.md misses {name}; run python -m pitsolve.adapters.diffusers.support"
    for name, rule_cls in REGISTRY.items():
        assert f"| `{name}` | hand-written rule ({rule_cls.__name__})" in text


@pytest.mark.parametrize("name, kind", [("EulerDiscreteScheduler", "sigma"), ("UniPCMultistepScheduler", "vp"),
                                        ("FlowMatchEulerDiscreteScheduler", "flow")])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_bridge_posterior_is_the_inverse_of_eq16(name, kind, prediction_type):
    # The Eq. 17 posterior feeds the scheduler the model output whose x̂_0 (Eq. 16) is the given one.
    if prediction_type not in prediction_types(name):
        pytest.skip(f"{name} takes no prediction_type")
    rule = SchedulerBridgeRule.from_scheduler(make_scheduler(name, prediction_type), STEPS)  # not a registered rule
    assert rule.parametrisation == kind and rule.has_posterior
    g = torch.Generator().manual_seed(0)
    x, x0 = torch.randn((STEPS, 2, 4, 4), generator=g), torch.randn((STEPS, 2, 4, 4), generator=g)
    idx = torch.arange(STEPS)
    out = rule._output_from_x0(x.double(), x0.double(), idx)
    torch.testing.assert_close(rule._convert(x.double(), out, idx), x0.double(), rtol=1e-9, atol=1e-9)
    # and the step's own pred_original_sample on that output is x0 (where the scheduler returns one)
    hist = tuple(torch.zeros_like(x) for _ in range(rule.history_size))
    _, _, pred = rule.step_and_denoise(x, out.float(), idx, hist, torch.zeros_like(x))
    if rule._returns_x0:
        torch.testing.assert_close(pred, x0, rtol=1e-4, atol=1e-4)
