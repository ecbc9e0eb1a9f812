"""Valid inputs that must be accepted, and the public checks the solve loop reads.

* numpy scalars and 0-dim tensors where a count, seed or tolerance is asked for;
* an SDE whose ``f``/``g`` call ``float(t)`` (``t`` is a 0-dim tensor, as in torchsde);
* UNet sizes and conditioning the model can take;
* :meth:`BandedSystem.checked_error_ratio`, :meth:`BandedSystem.checked_costs` and
  :func:`pitsolve._grid.check_tolerance` directly, and the per-call checks of
  ``func``/``sde`` (shape on every call, no in-place change of the state).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
import torch
import torchsde
from diffusers import DDIMScheduler

import pitsolve
from pitsolve import BandedSystem, InputTypeError, InputValueError, ODESystem, SDESystem
from pitsolve._grid import check_positive_int, check_tolerance
from pitsolve.adapters.cli import sample as cli_sample
from pitsolve.adapters.diffusers import build_system, parallel_sample
from pitsolve.jacobians import Diagonal, Parareal

from diffusion_models import tiny_cond_unet, tiny_unet

F64 = torch.float64
N = 8


def decay(t, y):
    return -y


def grid(n=N):
    return torch.linspace(0.0, 1.0, n + 1, dtype=F64)


class Halving(BandedSystem):
    def __init__(self, D=2, ratio=None, steps=1, coarse=1):
        self.D, self.ratio, self.steps_per_interval, self.coarse_steps = D, ratio, steps, coarse

    @property
    def initial_state(self):
        return torch.ones(self.D, dtype=F64)

    @property
    def num_intervals(self):
        return N

    def propagate(self, states, indices):
        return 0.5 * states

    def error_ratio(self, new, old, indices):
        return super().error_ratio(new, old, indices) if self.ratio is None else self.ratio(new, old)


def ratio(system, new=None, old=None):
    new = torch.ones(N, system.D, dtype=F64) if new is None else new
    old = 0.5 * torch.ones_like(new) if old is None else old
    return system.checked_error_ratio(new, old, torch.arange(1, N + 1))


# ----------------------------------------------------------------------------- tolerances and counts
@pytest.mark.parametrize(
    "tol", [1e-6, 0, np.float32(1e-3), np.float64(1e-6), np.array(2e-3), torch.tensor(1e-6), torch.tensor(1e-6, dtype=F64)],
    ids=["float", "int", "np-float32", "np-float64", "np-0d-array", "tensor-f32", "tensor-f64"],
)
def test_check_tolerance_accepts_real_scalars(tol):
    value = check_tolerance(tol)
    assert type(value) is float and value == pytest.approx(float(tol))


@pytest.mark.parametrize(
    "tol, match",
    [(-1e-3, r"tol=-0\.001 must be a finite number >= 0"), (float("nan"), r"tol=nan must be"),
     (float("inf"), r"tol=inf must be"), ("1e-6", r"tol='1e-6' must be"), (True, r"tol=True must be"),
     (torch.tensor(-1.0), r"tol=-1\.0 must be"), (torch.ones(2), r"tol=<a tensor of shape \(2,\).* must be"),
     (None, r"tol=None must be")],
    ids=["negative", "nan", "inf", "str", "bool", "tensor-negative", "tensor-1d", "none"],
)
def test_check_tolerance_refuses(tol, match):
    with pytest.raises(InputValueError, match=match):
        check_tolerance(tol)
    with pytest.raises(InputValueError, match=match.replace("tol=", "atol_x=")):
        check_tolerance(tol, "atol_x")


def test_check_positive_int_accepts_numpy_and_0dim_tensors():
    for value in (np.int64(4), np.int32(4), torch.tensor(4), 4):
        assert check_positive_int(value, "window") == 4 and type(check_positive_int(value, "window")) is int
    with pytest.raises(InputTypeError, match=r"window is a tensor of shape \(1,\), not an integer"):
        check_positive_int(torch.tensor([4]), "window")
    with pytest.raises(InputTypeError, match=r"window=tensor\(4\.\) is not an integer"):
        check_positive_int(torch.tensor(4.0), "window")


def test_solve_accepts_a_0dim_tensor_tol():
    sol = pitsolve.solve(ODESystem(decay, torch.ones(3, dtype=F64), grid()), tol=torch.tensor(1e-8))
    assert sol.converged


def test_numpy_counts_and_seeds_are_accepted():
    system = ODESystem(decay, torch.ones(3, dtype=F64), grid())
    sol = pitsolve.solve(system, window=np.int64(4), max_iters=np.int64(8), tol=np.float64(1e-10))
    assert sol.converged
    # Diagonal's options and seed: numpy integers give the solve of Python ints.
    ref = pitsolve.solve(system, Diagonal(exact_below=0, probes=2, seed=3), tol=1e-10)
    got = pitsolve.solve(system, Diagonal(exact_below=np.int64(0), probes=np.int32(2), seed=np.int64(3)), tol=1e-10)
    assert torch.equal(ref.ys, got.ys)
    assert Diagonal(seed=2**63 - 1).seed == 2**63 - 1 and Parareal(cost=np.int64(2)).cost == 2
    # SDESystem's seed.
    sde = OU()
    a = pitsolve.sequential(SDESystem(sde, torch.ones(2, 3, dtype=F64), grid(), seed=3)).ys
    b = pitsolve.sequential(SDESystem(sde, torch.ones(2, 3, dtype=F64), grid(), seed=np.int64(3))).ys
    assert torch.equal(a, b)


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


def test_cli_takes_the_largest_generator_seed(tmp_path):
    parser = cli_sample.add_arguments(argparse.ArgumentParser())
    cli_sample._check(parser.parse_args(["--seed", str(2**64 - 1), "--output", str(tmp_path / "out")]))
    torch.Generator().manual_seed(2**64 - 1)  # what the check promises torch takes


# ----------------------------------------------------------------------------- SDEs calling float(t)
class OU:
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -t * y

    def g(self, t, y):
        return 0.3 * t * torch.ones_like(y)


class FloatOU(OU):
    """The same SDE written with ``float(t)``, which works in torchsde (t is a 0-dim tensor) but not under vmap."""

    def f(self, t, y):
        return -float(t) * y

    def g(self, t, y):
        return 0.3 * float(t) * torch.ones_like(y)


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_sde_calling_float_t_works_per_interval(method):
    y0, t = torch.ones(2, 3, dtype=F64), grid()
    with pytest.warns(RuntimeWarning, match=r"sde\.[fg] cannot be batched over intervals with torch\.func\.vmap.*float"):
        system = SDESystem(FloatOU(), y0, t, substeps=2, seed=1, method=method)
    reference = SDESystem(OU(), y0, t, substeps=2, seed=1, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at construction
        sol = pitsolve.solve(system, tol=1e-10)
    assert sol.converged
    torch.testing.assert_close(sol.ys, pitsolve.solve(reference, tol=1e-10).ys, rtol=0, atol=1e-12)
    if method == "euler":
        ys = torchsde.sdeint(FloatOU(), y0, t, bm=system.brownian_motion(), dt=1.0 / (2 * N), method=method)
        torch.testing.assert_close(sol.ys, ys, rtol=0, atol=1e-9)


def test_sde_user_errors_are_not_retried_as_vmap_failures():
    class Broken(OU):
        def g(self, t, y):
            raise ZeroDivisionError("user g failed")

    with pytest.raises(ZeroDivisionError, match="user g failed"):
        SDESystem(Broken(), torch.ones(2, 3, dtype=F64), grid())


# ----------------------------------------------------------------------------- checked_error_ratio / checked_costs
def test_checked_error_ratio_returns_the_default_measure():
    system = Halving()
    new, old = torch.randn(N, 2, dtype=F64), torch.randn(N, 2, dtype=F64)
    idx = torch.arange(1, N + 1)
    torch.testing.assert_close(system.checked_error_ratio(new, old, idx), system.error_ratio(new, old, idx))
    ode = ODESystem(decay, torch.ones(3, dtype=F64), grid())
    new3 = torch.randn(N, 3, dtype=F64)
    torch.testing.assert_close(ode.checked_error_ratio(new3, 0 * new3, idx), ode.error_ratio(new3, 0 * new3, idx))


@pytest.mark.parametrize(
    "fn, kind, match",
    [
        (lambda new, old: torch.zeros(2 * new.shape[0], dtype=F64), InputValueError,
         r"Halving\.error_ratio returned shape \(16,\), expected \(8,\) \(one measure per point of a batch of 8\)"),
        (lambda new, old: torch.tensor(0.0, dtype=F64), InputValueError,
         r"Halving\.error_ratio returned shape \(\), expected \(8,\)"),
        (lambda new, old: torch.zeros(new.shape[0], 1, dtype=F64), InputValueError,
         r"returned shape \(8, 1\), expected \(8,\).*return a 1-D tensor of length B"),
        (lambda new, old: 0.5, InputTypeError, r"Halving\.error_ratio returned a float; return a 1-D floating-point"),
        (lambda new, old: torch.zeros(new.shape[0], dtype=torch.long), InputTypeError,
         r"Halving\.error_ratio returned dtype torch\.int64; return a floating-point tensor"),
        (lambda new, old: torch.full((new.shape[0],), float("nan"), dtype=F64), InputValueError,
         r"Halving\.error_ratio returned NaN for finite states \(rows \[0, 1, .*\] of 8\); make it finite there"),
    ],
    ids=["2B", "scalar", "B1", "float", "int-dtype", "nan"],
)
def test_checked_error_ratio_refuses(fn, kind, match):
    with pytest.raises(kind, match=match):
        ratio(Halving(ratio=fn))


def test_checked_error_ratio_lets_nan_of_nonfinite_states_through():
    new = torch.ones(N, 2, dtype=F64)
    new[3, 0] = float("nan")
    out = ratio(Halving(), new=new)
    assert torch.isnan(out[3]) and torch.isfinite(out[:3]).all()


def test_solve_checks_error_ratio():
    with pytest.raises(InputValueError, match=r"error_ratio returned shape \(\d+, 1\)"):
        pitsolve.solve(Halving(ratio=lambda new, old: (new - old).abs().amax(1, keepdim=True)))


def test_checked_costs():
    assert ODESystem(decay, torch.ones(3, dtype=F64), grid(), substeps=3).checked_costs() == (3, 1)
    costs = Halving(steps=np.int64(2), coarse=torch.tensor(1)).checked_costs()
    assert costs == (2, 1) and all(type(c) is int for c in costs)
    with pytest.raises(InputTypeError, match=r"Halving\.steps_per_interval=1\.5 is not an integer \(float\)"):
        Halving(steps=1.5).checked_costs()
    with pytest.raises(InputValueError, match=r"Halving\.coarse_steps=-1 must be >= 1 \(the fine steps one coarse G_n"):
        Halving(coarse=-1).checked_costs()


# ----------------------------------------------------------------------------- per-call checks of Φ
def test_sde_outputs_are_checked_on_every_call():
    class Later(OU):
        calls = 0

        def g(self, t, y):
            Later.calls += 1
            return 0.3 * torch.ones_like(y) if Later.calls < 4 else 0.3 * torch.ones_like(y[..., :1])

    with pytest.raises(InputValueError, match=r"sde\.g returned shape \(2, 1\) for y of shape \(2, 3\).*"
                                              r"make it return shape \(2, 3\)"):
        pitsolve.solve(SDESystem(Later(), torch.ones(2, 3, dtype=F64), grid()))


def test_func_returning_another_dtype_later_is_refused():
    calls = [0]

    def func(t, y):
        calls[0] += 1
        return -y if calls[0] < 3 else (-y).float()

    with pytest.raises(InputTypeError, match=r"func returned dtype torch\.float32 but y0 has dtype torch\.float64"):
        pitsolve.solve(ODESystem(func, torch.ones(2, dtype=F64), grid(), batched_func=True))


def test_in_place_func_under_vmap_is_refused_and_leaves_y0_alone():
    y0 = torch.ones(3, dtype=F64)
    with pytest.raises(InputValueError, match=r"func modified its input y in place"):
        ODESystem(lambda t, y: y.mul_(2), y0, grid())
    with pytest.raises(InputValueError, match=r"Halving2\.propagate modified its input states in place"):
        pitsolve.solve(Halving2(), "newton")


class Halving2(Halving):
    def propagate(self, states, indices):
        states += 0  # in place, even if it changes nothing
        return 0.5 * states


@pytest.mark.parametrize("jacobian", ["identity", "newton", "diagonal", "parareal"])
def test_valid_systems_pass_the_per_call_checks(jacobian):
    system = ODESystem(lambda t, y: (-y[0], y[0][:2] - y[1]), (torch.ones(3, dtype=F64), torch.zeros(2, dtype=F64)),
                       grid(), func_dtype=torch.float32)
    sol = pitsolve.solve(system, jacobian, tol=1e-6)
    assert sol.converged
    with torch.inference_mode():  # inference tensors track no versions: the in-place check steps aside
        assert pitsolve.solve(ODESystem(decay, torch.ones(3, dtype=F64), grid()), jacobian, tol=1e-6).converged


# ----------------------------------------------------------------------------- UNet sizes and conditioning
def deep_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8, 16),
        down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, norm_num_groups=4,
    ).eval()


def test_unet_sizes_and_conditioning_the_model_takes_are_accepted():
    gen = torch.Generator().manual_seed(0)
    build_system(deep_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 12, 20), generator=gen)
    with pytest.raises(InputValueError, match=r"shape has shape \(1, 1, 12, 6\).*multiples of 4.*\(1, 1, 12, 4\) or "
                                              r"\(1, 1, 12, 8\)"):
        build_system(deep_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 12, 6), generator=gen)
    # UNet2DConditionModel forwards odd sizes to its upsamplers: any size goes.
    x, sol = parallel_sample(tiny_cond_unet(dtype=torch.float32), DDIMScheduler(), num_inference_steps=2,
                             shape=(1, 4, 7, 7), encoder_hidden_states=torch.randn(1, 3, 16), generator=gen)
    assert x.shape == (1, 4, 7, 7) and torch.isfinite(x).all()
    build_system(tiny_unet(num_class_embeds=10), DDIMScheduler(), num_inference_steps=2, shape=(1, 1, 8, 8),
                 class_labels=torch.tensor([3]), generator=gen)
    with pytest.raises(InputValueError, match=r"class_labels were given but the UNet has no class embedding"):
        build_system(tiny_cond_unet(), DDIMScheduler(), num_inference_steps=2, shape=(1, 4, 8, 8),
                     encoder_hidden_states=torch.randn(1, 3, 16, dtype=F64), class_labels=torch.tensor([3]),
                     generator=gen)
