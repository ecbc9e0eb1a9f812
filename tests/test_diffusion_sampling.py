"""Parallel sampling reproduces the sequential sampler, which reproduces Diffusers' own loop.

The sequential sampler against Diffusers' scheduler loop (DDPM, DDIM, DPM-Solver++ 2M) with the
same noise; the parallel solve against the sequential one for UNet2DModel, every Jacobian
strategy, a conditional UNet with classifier-free guidance and class labels; and the noise itself
(different across images and seeds, shared by both solves, DDIM's η noise included).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

import pitsolve
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

from conftest import gen
from diffusion_models import tiny_cond_unet, tiny_unet

DT = torch.float64


def schedulers():
    return {
        "ddpm": DDPMScheduler(num_train_timesteps=1000),
        "ddim": DDIMScheduler(num_train_timesteps=1000),
        "dpm2m": DPMSolverMultistepScheduler(num_train_timesteps=1000, solver_order=2,
                                             algorithm_type="dpmsolver++"),
    }


def diffusers_loop(unet, scheduler, steps, latents, generator, **unet_kwargs):
    """Diffusers' own sequential sampling loop."""
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t, **unet_kwargs).sample
            x = scheduler.step(out, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm2m"])
def test_sequential_sample_equals_diffusers_loop(name):
    unet, scheduler, steps = tiny_unet(), schedulers()[name], 10
    shape = (2, 1, 8, 8)
    ours, sol = sequential_sample(unet, scheduler, num_inference_steps=steps, generator=gen(3), shape=shape,
                                  latents=None)
    g = gen(3)
    latents = torch.randn(shape, generator=g, dtype=DT)
    ref = diffusers_loop(unet, scheduler, steps, latents, g)
    assert sol.nfe == steps and sol.depth == steps
    # Diffusers' DPM-Solver step rounds the sample to float32 internally: compare relatively.
    assert rel_err(ours, ref) < 1e-6


def rel_err(a, b):
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm2m"])
@pytest.mark.parametrize("intervals", [20, 4, 7])
def test_parallel_equals_sequential_unet2d(name, intervals):
    unet, scheduler = tiny_unet(), schedulers()[name]
    kw = dict(num_inference_steps=20, generator=None, shape=(2, 1, 8, 8), intervals=intervals)
    seq, _ = sequential_sample(unet, scheduler, **{**kw, "generator": gen(1)})
    par, sol = parallel_sample(unet, scheduler, **{**kw, "generator": gen(1)}, tol=1e-9)
    assert sol.converged
    assert rel_err(par, seq) < 1e-6
    assert sol.iterations <= intervals


# dense builds the full Jacobian of the step, one UNet JVP per state entry: ~5-10x the time of the others
@pytest.mark.parametrize("jacobian", [pytest.param(name, marks=pytest.mark.slow) if name == "dense" else name
                                      for name in sorted(pitsolve.jacobians.REGISTRY)])
def test_parallel_every_strategy(jacobian):
    unet, scheduler = tiny_unet(), schedulers()["dpm2m"]
    kw = dict(num_inference_steps=10, shape=(1, 1, 8, 8), intervals=5)
    seq, _ = sequential_sample(unet, scheduler, generator=gen(2), **kw)
    par, sol = parallel_sample(unet, scheduler, generator=gen(2), jacobian=jacobian, tol=1e-9, window=3, **kw)
    assert rel_err(par, seq) < 1e-6, sol


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm2m"])
def test_parallel_conditional_unet_with_guidance(name):
    unet, scheduler = tiny_cond_unet(), schedulers()[name]
    cond = torch.randn(2, 3, 16, generator=gen(5), dtype=DT)
    uncond = torch.randn(2, 3, 16, generator=gen(6), dtype=DT)
    kw = dict(num_inference_steps=10, shape=(2, 4, 8, 8), guidance_scale=5.0, encoder_hidden_states=cond,
              negative_encoder_hidden_states=uncond)
    seq, _ = sequential_sample(unet, scheduler, generator=gen(4), **kw)
    for intervals in (10, 2, 3):  # N = T, N = T/5, N not dividing T
        par, sol = parallel_sample(unet, scheduler, generator=gen(4), intervals=intervals, tol=1e-9, max_batch=8,
                                   **kw)
        assert rel_err(par, seq) < 1e-6, intervals
    # Guidance really is applied: the unguided sample differs.
    plain, _ = sequential_sample(unet, scheduler, generator=gen(4), **{**kw, "guidance_scale": 1.0})
    assert rel_err(plain, seq) > 1e-3
    # Against Diffusers' loop with guidance computed by hand.
    scheduler2 = type(scheduler).from_config(scheduler.config)
    scheduler2.set_timesteps(10)
    g = gen(4)
    x = torch.randn((2, 4, 8, 8), generator=g, dtype=DT)
    with torch.no_grad():
        for t in scheduler2.timesteps:
            both = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            u, c = both.chunk(2)
            x = scheduler2.step(u + 5.0 * (c - u), t, x, generator=g).prev_sample
    assert rel_err(seq, x) < 1e-6


def test_class_conditional_unet():
    unet = tiny_unet(num_class_embeds=3)
    labels = torch.tensor([0, 2])
    kw = dict(num_inference_steps=10, shape=(2, 1, 8, 8), class_labels=labels)
    seq, _ = sequential_sample(unet, schedulers()["ddim"], generator=gen(0), **kw)
    par, _ = parallel_sample(unet, schedulers()["ddim"], generator=gen(0), tol=1e-9, **kw)
    assert rel_err(par, seq) < 1e-6
    other, _ = sequential_sample(unet, schedulers()["ddim"], generator=gen(0), **{**kw, "class_labels": labels.flip(0)})
    assert rel_err(other, seq) > 1e-4


def test_noise_differs_across_images_and_seeds_and_is_shared():
    from pitsolve.adapters.diffusers.sampling import build_system

    unet, scheduler = tiny_unet(), schedulers()["ddpm"]
    a = build_system(unet, scheduler, num_inference_steps=10, generator=gen(0), shape=(3, 1, 8, 8))
    b = build_system(unet, scheduler, num_inference_steps=10, generator=gen(0), shape=(3, 1, 8, 8))
    c = build_system(unet, scheduler, num_inference_steps=10, generator=gen(1), shape=(3, 1, 8, 8))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.noise, c.noise)
    live = a.noise[:-1]  # the last DDPM step (t = 0) takes no noise
    assert not torch.allclose(live[:, 0], live[:, 1]) and not torch.allclose(live[:, 1], live[:, 2])
    assert torch.equal(a.noise[-1], torch.zeros_like(a.noise[-1]))
    # Noise of different steps differs too (not seeded by timestep alone).
    assert not torch.allclose(live[0], live[1])


def test_ddim_eta_uses_the_same_noise_in_both_solves():
    unet, scheduler = tiny_unet(), schedulers()["ddim"]
    kw = dict(num_inference_steps=10, shape=(2, 1, 8, 8), eta=0.7)
    seq, _ = sequential_sample(unet, scheduler, generator=gen(9), **kw)
    par, _ = parallel_sample(unet, scheduler, generator=gen(9), tol=1e-9, intervals=3, **kw)
    assert rel_err(par, seq) < 1e-6
    g = gen(9)
    latents = torch.randn((2, 1, 8, 8), generator=g, dtype=DT)
    sch = type(scheduler).from_config(scheduler.config)
    sch.set_timesteps(10)
    x = latents
    with torch.no_grad():
        for t in sch.timesteps:
            x = sch.step(unet(x, t).sample, t, x, eta=0.7, generator=g).prev_sample
    assert float((seq - x).abs().max()) < 1e-5
