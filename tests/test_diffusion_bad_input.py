"""Input to the Diffusers bridge: bad input gives a typed error naming the value and the fix, before any
model call; counts as numpy integers, and the UNet sizes and conditioning a model takes, are accepted.

Every error is a :class:`pitsolve.PitsolveError` and also the built-in type a
caller would catch (``ValueError``/``TypeError``; ``FloatingPointError`` and
``RuntimeError`` for a model that returns NaN).  Models are spies that count
their calls, so each test also checks that validation happened before the
first one: a bad argument costs no model time.  The core's input is checked in
tests/test_bad_input.py.
"""

from __future__ import annotations

import contextlib
import signal

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    HeunDiscreteScheduler,
    KarrasVeScheduler,
    PNDMScheduler,
)

from pitsolve import ConvergenceError, InputTypeError, InputValueError, NonFiniteError, PitsolveError
from pitsolve.adapters.diffusers import ParallelDiffusionPipeline, build_system, parallel_sample, sequential_sample
from pitsolve.adapters.diffusion import GaussianMixtureDenoiser

from conftest import gen
from diffusion_models import tiny_cond_unet, tiny_unet

T = 8
SHAPE = (2, 1, 8, 8)
SAMPLERS = {"parallel": parallel_sample, "sequential": sequential_sample}
BOTH = pytest.mark.parametrize("sampler", list(SAMPLERS.values()), ids=list(SAMPLERS))


class Spy:
    """A model that counts its calls (and forwards ``config`` so shape checks see it)."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self.config = getattr(model, "config", None)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def gmm_spy() -> Spy:
    """The exact ε-prediction of a two-component mixture of 1×8×8 images."""
    abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    return Spy(GaussianMixtureDenoiser.random(SHAPE[1:], components=2, alphas_cumprod=abar))


def cond_spy() -> Spy:
    return Spy(tiny_cond_unet(dtype=torch.float32))


def check(info, kind, spy=None) -> None:
    """The library's own subclass, also the matching built-in type; no model call happened."""
    err = info.value
    assert isinstance(err, PitsolveError) and isinstance(err, kind)
    builtin = {InputValueError: ValueError, InputTypeError: TypeError}.get(kind)
    if builtin is not None:
        assert isinstance(err, builtin)
    if spy is not None:
        assert spy.calls == 0, f"{spy.calls} model call(s) before the error"


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging (POSIX timers; a no-op where there are none)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------- schedulers
@BOTH
@pytest.mark.parametrize("scheduler", [DPMSolverSDEScheduler, KarrasVeScheduler], ids=lambda c: c.__name__)
def test_unsupported_scheduler_names_the_reason(sampler, scheduler):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=rf"{scheduler.__name__} cannot be served by the generic bridge: .*"
                                              r"docs/schedulers.md") as info:
        sampler(spy, scheduler(), num_inference_steps=T, shape=SHAPE)
    check(info, InputValueError, spy)


@BOTH
@pytest.mark.parametrize("scheduler", [HeunDiscreteScheduler, PNDMScheduler], ids=lambda c: c.__name__)
def test_other_schedulers_go_through_the_bridge(sampler, scheduler):
    from pitsolve.adapters.diffusers import rule_from_scheduler
    from pitsolve.adapters.diffusion import SchedulerBridgeRule

    assert isinstance(rule_from_scheduler(scheduler(num_train_timesteps=1000), T), SchedulerBridgeRule)


def test_scheduler_subclass_goes_through_the_bridge():
    class MyDDIM(DDIMScheduler):
        pass

    spy = gmm_spy()
    seq, _ = sequential_sample(spy, MyDDIM(), num_inference_steps=T, shape=SHAPE,
                               generator=torch.Generator().manual_seed(0))
    par, _ = parallel_sample(spy, MyDDIM(), num_inference_steps=T, shape=SHAPE, tol=1e-6,
                             generator=torch.Generator().manual_seed(0))
    assert float((par - seq).norm() / seq.norm()) < 1e-4


@BOTH
@pytest.mark.parametrize("scheduler", [DDPMScheduler, DPMSolverMultistepScheduler], ids=lambda c: c.__name__)
def test_eta_for_a_non_ddim_scheduler(sampler, scheduler):
    spy = gmm_spy()
    match = rf"eta=0.5 applies to DDIM only.*{scheduler.__name__} takes eta=0"
    with pytest.raises(InputValueError, match=match) as info:
        sampler(spy, scheduler(), num_inference_steps=T, shape=SHAPE, eta=0.5)
    check(info, InputValueError, spy)


@BOTH
@pytest.mark.parametrize("steps", [0, -3])
def test_num_inference_steps_not_positive(sampler, steps):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=rf"num_inference_steps must be an int >= 1, got {steps}") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=steps, shape=SHAPE)
    check(info, InputValueError, spy)


# -------------------------------------------------------------------- latents
@BOTH
@pytest.mark.parametrize(
    "latents, shape, match",
    [
        (torch.randn(2, 3, 8, 8), None, r"latents has shape \(2, 3, 8, 8\) but the model takes samples of shape "
                                        r"\(1, 8, 8\); pass \[batch, 1, 8, 8\]"),
        (torch.randn(2, 8, 8), None, r"latents has shape \(2, 8, 8\).*pass \[batch, 1, 8, 8\]"),
        (torch.randn(2, 1, 8, 8), (3, 1, 8, 8), r"latents have shape \(2, 1, 8, 8\) but shape=\(3, 1, 8, 8\); "
                                                r"pass one or make them agree"),
    ],
    ids=["channels", "3-d", "disagrees-with-shape"],
)
def test_latents_of_the_wrong_shape(sampler, latents, shape, match):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=match) as info:
        sampler(spy, DDPMScheduler(), num_inference_steps=T, latents=latents, shape=shape)
    check(info, InputValueError, spy)


@BOTH
def test_latents_of_the_wrong_shape_for_a_unet(sampler):
    unet = Spy(tiny_unet(dtype=torch.float32))
    with pytest.raises(InputValueError, match=r"latents has shape \(1, 4, 8, 8\) but the UNet takes "
                                              r"\[batch, 1, H, W\] \(in_channels=1\)") as info:
        sampler(unet, DDIMScheduler(), num_inference_steps=T, latents=torch.randn(1, 4, 8, 8))
    check(info, InputValueError, unet)
    with pytest.raises(InputValueError, match=r"shape has shape \(1, 1, 0, 8\).*positive sizes") as info:
        sampler(unet, DDIMScheduler(), num_inference_steps=T, shape=(1, 1, 0, 8))
    check(info, InputValueError, unet)


@BOTH
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_latents_of_integer_dtype(sampler, dtype):
    spy = gmm_spy()
    with pytest.raises(InputTypeError, match=rf"latents have dtype {dtype}; pass floating-point latents") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, latents=torch.zeros(SHAPE, dtype=dtype))
    check(info, InputTypeError, spy)


@BOTH
@pytest.mark.parametrize("latents", [np.zeros(SHAPE, dtype=np.float32), [[0.0] * 8] * 8], ids=["ndarray", "list"])
def test_latents_not_a_tensor(sampler, latents):
    spy = gmm_spy()
    name = type(latents).__name__
    with pytest.raises(InputTypeError, match=rf"latents is a {name}; pass a floating-point torch.Tensor") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, latents=latents)
    check(info, InputTypeError, spy)


@BOTH
def test_generator_list_of_the_wrong_length(sampler):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=r"3 generators for 2 images; pass one generator per image") as info:
        sampler(spy, DDPMScheduler(), num_inference_steps=T, shape=SHAPE, generator=[gen(0), gen(1), gen(2)])
    check(info, InputValueError, spy)


# -------------------------------------------------------- conditioning / guidance
COND_SHAPE = (2, 4, 8, 8)


def embeds(batch=2):
    return torch.randn(batch, 3, 16, generator=gen(batch))


@BOTH
def test_guidance_scale_without_encoder_hidden_states(sampler):
    spy = cond_spy()
    with pytest.raises(InputValueError, match=r"guidance_scale=3.0 needs encoder_hidden_states.*pass them") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, shape=COND_SHAPE, guidance_scale=3.0)
    check(info, InputValueError, spy)


@BOTH
def test_guidance_above_one_without_negative_states(sampler):
    spy = cond_spy()
    with pytest.raises(InputValueError, match=r"guidance_scale=3.0 > 1 needs negative_encoder_hidden_states "
                                              r"\(e.g. the embeddings of the empty prompt\)") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, shape=COND_SHAPE, guidance_scale=3.0,
                encoder_hidden_states=embeds())
    check(info, InputValueError, spy)


@BOTH
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(encoder_hidden_states=embeds(3)),
         r"encoder_hidden_states has shape \(3, 3, 16\); its first axis must be the number of images \(2\)"),
        (dict(encoder_hidden_states=embeds(2), negative_encoder_hidden_states=embeds(3), guidance_scale=3.0),
         r"negative_encoder_hidden_states has shape \(3, 3, 16\); its first axis must be the number of images \(2\)"),
        (dict(encoder_hidden_states=embeds(2), negative_encoder_hidden_states=torch.zeros(2, 5, 16),
              guidance_scale=3.0),
         r"negative_encoder_hidden_states \(2, 5, 16\) and encoder_hidden_states \(2, 3, 16\) differ in shape"),
    ],
    ids=["cond-batch", "negative-batch", "negative-length"],
)
def test_encoder_states_of_the_wrong_batch(sampler, kwargs, match):
    spy = cond_spy()
    with pytest.raises(InputValueError, match=match) as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, shape=COND_SHAPE, **kwargs)
    check(info, InputValueError, spy)


@BOTH
def test_max_batch_zero(sampler):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=r"max_batch=0 must be an int >= 1 or None") as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, shape=SHAPE, max_batch=0)
    check(info, InputValueError, spy)


# ------------------------------------------------------ the parallel solve's options
@pytest.mark.parametrize(
    "steps, match",
    [
        (T + 1, rf"preconditioning_steps={T + 1} is larger than the number of sampling steps T={T}; "
                rf"pass 0 <= preconditioning_steps <= {T}"),
        (-1, r"preconditioning_steps=-1 must be an int >= 0"),
    ],
    ids=["above-T", "negative"],
)
def test_preconditioning_steps_out_of_range(steps, match):
    spy = gmm_spy()
    with pytest.raises(InputValueError, match=match) as info:
        parallel_sample(spy, DDIMScheduler(), num_inference_steps=T, shape=SHAPE, preconditioning_steps=steps)
    check(info, InputValueError, spy)


@BOTH
@pytest.mark.parametrize(
    "intervals, kind, match",
    [
        (0, InputValueError, rf"intervals=0 is outside 1..{T}.*pass N between 1 \(sequential\) and {T}"),
        (T + 1, InputValueError, rf"intervals={T + 1} is outside 1..{T}"),
        (2.5, InputTypeError, rf"intervals=2.5 is not an int; pass 1 <= intervals <= {T}"),
        ("4", InputTypeError, rf"intervals='4' is not an int"),
    ],
    ids=["zero", "T+1", "float", "str"],
)
def test_intervals_out_of_range_or_not_int(sampler, intervals, kind, match):
    spy = gmm_spy()
    with pytest.raises(kind, match=match) as info:
        sampler(spy, DDIMScheduler(), num_inference_steps=T, shape=SHAPE, intervals=intervals)
    check(info, kind, spy)


# ------------------------------------------------------------- misbehaving models
def nan_model(x, t, **kwargs):
    return torch.full_like(x, float("nan"))


def nan_late_model(x, t, **kwargs):
    """Finite at the first (noisiest) steps, NaN once the timestep drops below 500."""
    bad = (t < 500).view(-1, *([1] * (x.dim() - 1)))
    return torch.where(bad, torch.full_like(x, float("nan")), 0.1 * x)


@pytest.mark.parametrize("model", [nan_model, nan_late_model], ids=["nan", "nan-late"])
@pytest.mark.parametrize(
    "sampler, options",
    [
        (sequential_sample, {}),
        (parallel_sample, {}),
        (parallel_sample, dict(preconditioning_steps=0)),
        (parallel_sample, dict(preconditioning_steps=0, intervals=3, jacobian="anderson")),
    ],
    ids=["sequential", "parallel", "parallel-M0", "parallel-anderson"],
)
def test_model_returning_nan_raises_nonfinite(model, sampler, options):
    # Sequential: "produced NaN or Inf in interval n"; parallel: the front's Φ became non-finite.
    with deadline(30), pytest.raises(NonFiniteError, match=r"NaN or Inf (in interval \d+|appeared in the propagated)"
                                                           r".*check the system for blow-up") as info:
        sampler(model, DDPMScheduler(), num_inference_steps=T, shape=SHAPE, generator=gen(), **options)
    err = info.value
    assert isinstance(err, ConvergenceError) and isinstance(err, FloatingPointError)
    assert isinstance(err, RuntimeError) and isinstance(err, PitsolveError)


@BOTH
def test_model_returning_the_wrong_shape(sampler):
    with pytest.raises(InputValueError, match=r"the model returned \(2, 1, 8, 4\) for input \(2, 1, 8, 8\); "
                                              r"it must return the input's shape") as info:
        sampler(lambda x, t: x[..., :4], DDIMScheduler(), num_inference_steps=T, shape=SHAPE)
    check(info, InputValueError)


@BOTH
def test_model_returning_no_tensor(sampler):
    with pytest.raises(InputTypeError, match=r"the unet returned a str; it must return a tensor or .sample") as info:
        sampler(lambda x, t: "noise", DDIMScheduler(), num_inference_steps=T, shape=SHAPE)
    check(info, InputTypeError)


# ------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def ddpm_pipe():
    pipe = DDPMPipeline(unet=tiny_unet(dtype=torch.float32), scheduler=DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@contextlib.contextmanager
def count_unet_calls(unet):
    calls = []
    handle = unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()


@pytest.mark.parametrize("output_type", ["jpeg", "PIL", None])
def test_pipeline_unknown_output_type(ddpm_pipe, output_type):
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe)
    with count_unet_calls(ppipe.unet) as calls, pytest.raises(
        InputValueError, match=rf"output_type={output_type!r}; choose one of 'pil', 'np', 'pt', 'latent'"
    ) as info:
        ppipe(num_inference_steps=T, output_type=output_type)
    check(info, InputValueError)
    assert not calls


def test_pipeline_with_an_unsupported_scheduler(ddpm_pipe):
    scheduler = DPMSolverSDEScheduler.from_config(ddpm_pipe.scheduler.config)
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe, scheduler=scheduler)
    with count_unet_calls(ppipe.unet) as calls, pytest.raises(
        InputValueError, match=r"DPMSolverSDEScheduler cannot be served by the generic bridge: .*noise_sampler"
    ) as info:
        ppipe(num_inference_steps=T)
    check(info, InputValueError)
    assert not calls


def test_pipeline_bad_sampler_options_before_any_unet_call(ddpm_pipe):
    ppipe = ParallelDiffusionPipeline.from_pipe(ddpm_pipe)
    cases = [
        (dict(num_inference_steps=0), InputValueError, r"num_inference_steps must be an int >= 1, got 0"),
        (dict(intervals=T + 1), InputValueError, rf"intervals={T + 1} is outside 1..{T}"),
        (dict(preconditioning_steps=T + 1), InputValueError, rf"preconditioning_steps={T + 1} is larger"),
        (dict(eta=0.3), InputValueError, r"eta=0.3 applies to DDIM only"),
        (dict(max_batch=0), InputValueError, r"max_batch=0 must be an int >= 1"),
        (dict(batch_size=2, generator=[gen()]), InputValueError, r"1 generators for 2 images"),
        (dict(prompt="a church"), InputValueError, r"no text encoder/tokenizer; pass prompt_embeds"),
    ]
    for kwargs, kind, match in cases:
        with count_unet_calls(ppipe.unet) as calls, pytest.raises(kind, match=match) as info:
            ppipe(**{"num_inference_steps": T, **kwargs})
        check(info, kind)
        assert not calls, kwargs


def test_from_pipe_unknown_component_or_not_a_pipeline(ddpm_pipe):
    with pytest.raises(InputTypeError, match=r"unknown components \['unett'\]; replaceable ones: unet, scheduler"):
        ParallelDiffusionPipeline.from_pipe(ddpm_pipe, unett=ddpm_pipe.unet)
    with pytest.raises(InputTypeError, match=r"needs a Diffusers pipeline with a unet, got UNet2DModel"):
        ParallelDiffusionPipeline.from_pipe(ddpm_pipe.unet)


# ---------------------------------------------------------------------------------------------
# Accepted: numpy counts, the UNet sizes and conditioning the model takes


def test_diffusion_accepts_numpy_integers():
    options = dict(shape=(1, 1, 8, 8), tol=1e-3)
    ref, _ = parallel_sample(tiny_unet(dtype=torch.float32), DDIMScheduler(), num_inference_steps=4, intervals=2,
                             window=2, max_iters=5, preconditioning_steps=1, max_batch=4,
                             generator=torch.Generator().manual_seed(3), **options)
    got, _ = parallel_sample(tiny_unet(dtype=torch.float32), DDIMScheduler(), num_inference_steps=np.int64(4),
                             intervals=np.int64(2), window=np.int64(2), max_iters=np.int64(5),
                             preconditioning_steps=np.int64(1), max_batch=np.int64(4),
                             generator=torch.Generator().manual_seed(3), **options)
    assert torch.equal(ref, got)


def deep_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8, 16),
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4,
    ).eval()


def test_unet_sizes_and_conditioning_the_model_takes_are_accepted():
    generator = gen(0)
    build_system(deep_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 12, 20), generator=generator)
    with pytest.raises(InputValueError, match=r"shape has shape \(1, 1, 12, 6\).*multiples of 4.*\(1, 1, 12, 4\) or "
                                              r"\(1, 1, 12, 8\)"):
        build_system(deep_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 12, 6), generator=generator)
    # UNet2DConditionModel forwards odd sizes to its upsamplers: any size goes.
    x, sol = parallel_sample(tiny_cond_unet(dtype=torch.float32), DDIMScheduler(), num_inference_steps=2,
                             shape=(1, 4, 7, 7), encoder_hidden_states=torch.randn(1, 3, 16), generator=generator)
    assert x.shape == (1, 4, 7, 7) and torch.isfinite(x).all()
    build_system(tiny_unet(num_class_embeds=10), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 8, 8),
                 class_labels=torch.tensor([3]), generator=generator)
    with pytest.raises(InputValueError, match=r"class_labels were given but the UNet has no class embedding"):
        build_system(tiny_cond_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 4, 8, 8),
                     encoder_hidden_states=torch.randn(1, 3, 16, dtype=torch.float64),
                     class_labels=torch.tensor([3]), generator=generator)
