"""One definition of the parallel solve's options (pitsolve.SolveOptions) for odeint, sdeint and their adjoints."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import torch

import pitsolve
from pitsolve import InputTypeError, InputValueError, SolveOptions

F64 = torch.float64


def decay(t, y):
    return -y


def grid(n=8):
    return torch.linspace(0.0, 1.0, n + 1, dtype=F64)


class OU(torch.nn.Module):
    noise_type, sde_type = "diagonal", "ito"

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(0.7, dtype=F64))

    def f(self, t, y):
        return -self.theta * y

    def g(self, t, y):
        return 0.3 * torch.ones_like(y)


def test_fields_are_solve_keywords():
    """Each field is a keyword of solve with the same default: adding an option is one field and solve's code."""
    params = inspect.signature(pitsolve.solve).parameters
    for f in fields(SolveOptions):
        assert f.name in params, f.name
        assert params[f.name].default == f.default, f.name
    solve_keywords = {n for n, p in params.items() if n != "system"}
    assert solve_keywords == {f.name for f in fields(SolveOptions)}


def test_object_and_flat_keywords_give_the_same_result():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    flat = pitsolve.odeint(decay, y0, grid(), method="rk4", window=4, tol=1e-10)
    held = pitsolve.odeint(decay, y0, grid(), method="rk4", solve_options=SolveOptions(window=4, tol=1e-10))
    mixed = pitsolve.odeint(decay, y0, grid(), method="rk4", solve_options=SolveOptions(window=4), tol=1e-10)
    assert torch.equal(flat, held) and torch.equal(flat, mixed)
    sde, x0 = OU(), torch.ones(2, 3, dtype=F64)
    a = pitsolve.sdeint(sde, x0, grid(), dt=0.0625, window=4)
    b = pitsolve.sdeint(sde, x0, grid(), dt=0.0625, solve_options=SolveOptions(window=4))
    assert torch.equal(a, b)


def test_adjoints_take_the_options():
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = pitsolve.odeint_adjoint(decay, y0, grid(), method="rk4", adjoint_params=(),
                                 solve_options=SolveOptions(window=4, tol=1e-10))
    ys.sum().backward()
    expected = torch.exp(-grid()).sum()
    assert torch.allclose(y0.grad, expected.expand(2), rtol=1e-6)
    sde, x0 = OU(), torch.ones(2, 3, dtype=F64)
    out = pitsolve.sdeint_adjoint(sde, x0, grid(), dt=0.0625, window=4)
    assert torch.equal(out.detach(), pitsolve.sdeint(sde, x0, grid(), dt=0.0625, window=4).detach())


@pytest.mark.parametrize("call", [
    lambda: pitsolve.odeint(decay, torch.ones(2, dtype=F64), grid(), windwo=4),
    lambda: pitsolve.sdeint(OU(), torch.ones(2, 3, dtype=F64), grid(), dt=0.0625, windwo=4),
    lambda: pitsolve.odeint_adjoint(decay, torch.ones(2, dtype=F64), grid(), adjoint_params=(), windwo=4),
    lambda: pitsolve.sdeint_adjoint(OU(), torch.ones(2, 3, dtype=F64), grid(), dt=0.0625, windwo=4),
])
def test_unknown_keyword_is_named(call):
    with pytest.raises(InputTypeError, match=r"unknown keyword arguments \['windwo'\]; its solve options are"):
        call()


def test_bad_combinations_are_typed():
    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(InputTypeError, match="solve_options is a dict; pass a pitsolve.SolveOptions"):
        pitsolve.odeint(decay, y0, grid(), solve_options=dict(window=4))
    with pytest.raises(InputValueError, match=r"\['window'\] given both as keywords and in solve_options"):
        pitsolve.odeint(decay, y0, grid(), solve_options=SolveOptions(window=4), window=2)
    with pytest.raises(InputValueError, match=r"odeint_adjoint\(\) does not take trajectory=False: the backward"):
        pitsolve.odeint_adjoint(decay, y0, grid(), adjoint_params=(), trajectory=False)
    with pytest.raises(InputValueError, match=r"sdeint_adjoint\(\) does not take devices=\['cpu'\]"):
        pitsolve.sdeint_adjoint(OU(), torch.ones(2, 3, dtype=F64), grid(), dt=0.0625, devices=["cpu"])
