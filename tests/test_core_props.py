"""Propositions 3 and 4 of the paper, measured.

Prop. 3: Newton (``A_n = J_n``) is exact in one iteration on an affine Φ and
converges quadratically on a smooth nonlinear problem.  Prop. 4: the identity
update is exact in one iteration when Φ is a translation and superlinear
when ``‖J_n − I‖`` is small.  Errors are the largest deviation from the
sequential trajectory after k iterations (``max_iters=k``, ``tol=0`` so no
early stop).  Measured orders go to the "measured" section of the test report.

The solves run with ``guard=False``: these are properties of the bare strategies,
which the depth budget of the default guard would otherwise override.
"""

from __future__ import annotations

import math

import pytest
import torch

import pitsolve

from conftest import DT, linear_system, max_err, vdp_system


def errors_per_iteration(system, jacobian, k_max, **kw):
    seq = pitsolve.sequential(system).ys
    out = []
    for k in range(1, k_max + 1):
        # The update's convergence, read off the newest iterate (Eq. 14's rule returns it).
        sol = pitsolve.solve(system, jacobian, tol=0.0, max_iters=k, throw=False, guard=False, stopping="eq14", **kw)
        out.append(max_err(sol.ys, seq))
    return out


def orders(errors, floor):
    """q_k = log(e_{k+1}/e_k) / log(e_k/e_{k-1}) while errors stay above round-off."""
    e = [x for x in errors if x > floor]
    return [math.log(e[i + 1] / e[i]) / math.log(e[i] / e[i - 1]) for i in range(1, len(e) - 1)]


@pytest.mark.parametrize("jacobian", ["newton", "dense"])
def test_prop3_newton_exact_in_one_iteration_on_affine(jacobian):
    # y' = A y + c(t) with RK4: every Φ_n is affine, Φ_n(x) = M_n x + c_n.
    system = linear_system(n=32)
    sol = pitsolve.solve(system, jacobian, tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(sol.ys, pitsolve.sequential(system).ys) < 1e-12
    # Identity, by contrast, is far from exact after one iteration on the same problem.
    ident = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(ident.ys, pitsolve.sequential(system).ys) > 1e-2


@pytest.mark.parametrize("jacobian", ["newton", "dense"])
def test_prop3_newton_converges_quadratically(jacobian, report):
    system = vdp_system(n=16, t_end=2.0)
    e = errors_per_iteration(system, jacobian, 6)
    floor = 1e-13
    big = [x for x in e if x > floor]
    assert len(big) >= 4, e  # enough iterations above round-off to measure
    ratios = [big[i + 1] / big[i] ** 2 for i in range(len(big) - 1)]
    q = orders(e, floor)
    report(f"Prop. 3, {jacobian} on Van der Pol: errors {['%.1e' % x for x in e]}, "
           f"e_(k+1)/e_k^2 {['%.2g' % r for r in ratios]}, orders {['%.2f' % x for x in q]}")
    assert max(ratios) < 1.0  # e_{k+1} <= C e_k^2 with a bounded C
    assert q[-1] > 1.8  # quadratic once in the basin


def test_prop4_identity_exact_in_one_iteration_on_translation():
    # Φ_n(x) = x + ∫ c(t) dt: a pure translation, J_n = I.
    drift = lambda t, y: torch.stack([torch.cos(3 * t), torch.exp(-t), t**2])  # noqa: E731
    system = pitsolve.ODESystem(drift, torch.zeros(3, dtype=DT), torch.linspace(0, 2, 41, dtype=DT), substeps=3)
    sol = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(sol.ys, pitsolve.sequential(system).ys) < 1e-13
    zero = pitsolve.solve(system, "zero", tol=0.0, max_iters=1, throw=False, guard=False)
    assert max_err(zero.ys, pitsolve.sequential(system).ys) > 1e-1


def test_prop4_identity_superlinear_near_identity(report):
    # y' = 1 + ε sin(y): J_n − I = O(ε h), small.
    eps = 0.3
    system = pitsolve.ODESystem(lambda t, y: 1.0 + eps * torch.sin(y), torch.tensor([0.1, 1.0, 2.0], dtype=DT),
                                torch.linspace(0, 2, 33, dtype=DT))
    e = errors_per_iteration(system, "identity", 12)
    big = [x for x in e if x > 1e-13]
    ratios = [big[i + 1] / big[i] for i in range(len(big) - 1)]
    q = orders(e, 1e-13)
    report(f"Prop. 4, identity near identity: errors {['%.1e' % x for x in e]}, "
           f"e_(k+1)/e_k {['%.3f' % r for r in ratios]}, orders {['%.2f' % x for x in q]}")
    # Superlinear: the contraction factor itself shrinks to zero ...
    assert all(b <= a * 1.05 for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[-1] < 0.5 * ratios[0]
    # ... but not quadratically: the measured order lies between 1 and 2.
    assert all(0.9 < x < 2.0 for x in q), q


def test_identity_error_recurrence():
    """One identity sweep obeys e^{k+1}_n = e^{k+1}_{n-1} + (Φ_{n-1}(X^k) − Φ_{n-1}(X*)) − e^k_{n-1}.

    The exact form of docs/design.md, "The banded system" fact 3 (its linearisation is
    ``e^{k+1}_n = e^{k+1}_{n-1} + (J − I) e^k_{n-1}``), checked to round-off.
    """
    system = vdp_system(n=10, t_end=2.0)
    star = pitsolve.sequential(system).ys
    one = pitsolve.solve(system, "identity", tol=0.0, max_iters=1, throw=False, guard=False).ys
    two = pitsolve.solve(system, "identity", tol=0.0, max_iters=2, throw=False, guard=False).ys
    # The iterate of iteration 1 beyond the accepted front is the window iterate; recompute Φ on it.
    idx = torch.arange(10)
    phi_k = system.propagate_flat(one[:-1], idx)
    phi_star = system.propagate_flat(star[:-1], idx)
    e1, e2 = one - star, two - star
    lhs = e2[2:]
    rhs = e2[1:-1] + (phi_k[1:] - phi_star[1:]) - e1[1:-1]
    assert float((lhs - rhs).abs().max()) < 1e-12
