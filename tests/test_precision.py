"""Reduced precision: the model in bfloat16, the solver's state and its sums in float32 (CPU).

bfloat16 keeps 8 significant bits (unit round-off 2^-8 ≈ 3.9e-3), so a
bfloat16 model differs from its float32 original by ~1e-3–1e-2 relative;
that is the model's error and the sequential solve has it too.  What the
parallel solve must do is reproduce the sequential solve *with the same
bfloat16 model*: both evaluate the same model on the same float32 states
cast to bfloat16, so their gap is the stopping rule's, bounded by a small
multiple of ``tol`` (measured: 0 at tol 1e-3 here, since the converged
iterate repeats the sequential arithmetic exactly).
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import pitsolve
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample

from diffusion_models import tiny_unet

F32, BF16 = torch.float32, torch.bfloat16


def rel(a, b):
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def test_ode_func_in_bfloat16_state_in_float32():
    seen = []

    def func(t, y):
        seen.append(y.dtype)
        return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])

    t = torch.linspace(0.0, 3.0, 31, dtype=F32)
    y0 = torch.tensor([2.0, 0.0], dtype=F32)
    low = pitsolve.ODESystem(func, y0, t, substeps=2, func_dtype=BF16, atol=1e-3, rtol=1e-3)
    assert seen and set(seen) == {BF16}  # func really runs in bfloat16
    full = pitsolve.ODESystem(func, y0, t, substeps=2, atol=1e-3, rtol=1e-3)
    seq = pitsolve.sequential(low)
    sol = pitsolve.solve(low, "identity", tol=1e-3)
    assert seq.ys.dtype == F32 and sol.ys.dtype == F32
    assert rel(sol.ys, seq.ys) < 1e-3  # parallel = sequential with the same bfloat16 func
    model_error = rel(seq.ys, pitsolve.sequential(full).ys)
    assert 1e-4 < model_error < 5e-2  # the bfloat16 func's own error, ~2^-8 per evaluation


def test_func_dtype_is_validated():
    with pytest.raises(pitsolve.InputTypeError, match=r"func_dtype=torch.int32 is not a floating-point"):
        pitsolve.ODESystem(lambda t, y: -y, torch.ones(2), torch.linspace(0, 1, 3), func_dtype=torch.int32)


@pytest.mark.parametrize("scheduler", [DDPMScheduler(num_train_timesteps=1000), DDIMScheduler(num_train_timesteps=1000)],
                         ids=["ddpm", "ddim"])
def test_unet_in_bfloat16_state_in_float32(scheduler):
    unet16, unet32 = tiny_unet(dtype=BF16), tiny_unet(dtype=F32)
    inputs = []
    handle = unet16.conv_in.register_forward_pre_hook(lambda mod, args: inputs.append(args[0].dtype))
    kw = dict(num_inference_steps=10, shape=(1, 1, 8, 8))
    seq, _ = sequential_sample(unet16, scheduler, generator=torch.Generator().manual_seed(0), **kw)
    par, sol = parallel_sample(unet16, scheduler, generator=torch.Generator().manual_seed(0), tol=1e-3, **kw)
    handle.remove()
    assert set(inputs) == {BF16}
    assert seq.dtype == F32 and par.dtype == F32 and sol.ys[0].dtype == F32  # the state stays float32
    assert sol.converged and rel(par, seq) < 1e-2  # the stopping rule's gap, a few tol at most
    ref, _ = sequential_sample(unet32, scheduler, generator=torch.Generator().manual_seed(0), **kw)
    assert rel(seq, ref) > 0  # bfloat16 really changes the model
