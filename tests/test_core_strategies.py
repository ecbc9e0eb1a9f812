"""Every strategy reproduces the sequential solve; finite termination; windows; N = 1; initialisers."""

from __future__ import annotations

import pytest
import torch

import pitsolve
from pitsolve.jacobians import Anderson, Diagonal, Parareal

from conftest import DT, STRATEGIES, SYSTEMS, max_err, vdp_system


@pytest.mark.parametrize("problem", sorted(SYSTEMS))
@pytest.mark.parametrize("jacobian", STRATEGIES)
@pytest.mark.parametrize("window", [None, 5])
def test_every_strategy_converges_to_sequential(problem, jacobian, window):
    system = SYSTEMS[problem]()
    seq = pitsolve.sequential(system)
    sol = pitsolve.solve(system, jacobian, window=window, tol=1e-12)
    assert sol.converged and sol.status is pitsolve.Status.CONVERGED
    assert max_err(sol.ys, seq.ys) < 1e-10
    assert torch.equal(sol.y, sol.ys[-1])
    # Finite termination bound, and the accounting of docs/design.md, "Measures".
    N, K = system.num_intervals, system.steps_per_interval
    assert 1 <= sol.iterations <= N
    assert sol.depth >= sol.iterations * K
    assert sol.nfe >= sol.depth
    assert len(sol.residuals) == len(sol.point_residuals) == sol.iterations
    assert sol.accepted[-1] == N and sol.accepted == sorted(sol.accepted)


@pytest.mark.parametrize("jacobian", STRATEGIES)
@pytest.mark.parametrize("window", [None, 3])
def test_finite_termination_first_k_points_exact(jacobian, window):
    """After k iterations X_1 … X_k are exact (docs/design.md, "The banded system", fact 1), whatever A_n is."""
    system = vdp_system(n=12, t_end=4.0)
    seq = pitsolve.sequential(system).ys
    for k in (1, 2, 4, 7):
        sol = pitsolve.solve(system, jacobian, window=window, tol=0.0, max_iters=k, throw=False)
        # Not converged after k sweeps, unless every point is already exact (Newton-like updates).
        assert sol.status is pitsolve.Status.MAX_ITERS or (sol.converged and sol.iterations == k)
        assert sol.iterations == k
        assert max_err(sol.ys[: k + 1], seq[: k + 1]) < 1e-12, k
        assert torch.isfinite(sol.ys).all()


def test_not_converged_raises_with_partial_solution():
    system = vdp_system(n=12)
    with pytest.raises(pitsolve.ConvergenceError, match="max_iters=2") as info:
        pitsolve.solve(system, "identity", tol=1e-12, max_iters=2)
    partial = info.value.solution
    assert partial.iterations == 2 and not partial.converged
    assert partial.ys.shape == (13, 2)


def test_single_interval_is_the_sequential_solve():
    system = pitsolve.ODESystem(
        lambda t, y: -y**3 + torch.sin(t), torch.tensor([1.0, 2.0], dtype=DT), torch.tensor([0.0, 1.5], dtype=DT),
        substeps=16,
    )
    seq = pitsolve.sequential(system)
    for jacobian in STRATEGIES:
        sol = pitsolve.solve(system, jacobian, tol=1e-12)
        assert sol.iterations == 1 and sol.depth == 16
        assert torch.equal(sol.ys, seq.ys)


def test_every_window_gives_the_same_answer():
    system = vdp_system(n=10, t_end=3.0)
    seq = pitsolve.sequential(system).ys
    for jacobian in ("identity", "anderson", "dense"):
        for window in range(1, 11):
            sol = pitsolve.solve(system, jacobian, window=window, tol=1e-12)
            assert max_err(sol.ys, seq) < 1e-10, (jacobian, window)
            if window == 1:  # a window of one point is the sequential solve
                assert sol.iterations == 10


@pytest.mark.parametrize("init", ["constant", "coarse"])
def test_initialisers(init):
    system = vdp_system(n=16, t_end=3.0)
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, "identity", init=init, window=6, tol=1e-12)
    assert max_err(sol.ys, seq) < 1e-10


def test_coarse_init_cuts_iterations():
    system = vdp_system(n=16, t_end=3.0)
    plain = pitsolve.solve(system, "identity", tol=1e-8)
    coarse = pitsolve.solve(system, "identity", tol=1e-8, init="coarse")
    assert coarse.iterations < plain.iterations


def test_warm_start_from_the_solution_converges_in_one_iteration():
    system = vdp_system(n=16)
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, "identity", init=seq.clone(), tol=1e-10)
    assert sol.iterations == 1 and max_err(sol.ys, seq) < 1e-12
    # A perturbed warm start still converges to the same answer.
    perturbed = seq + 1e-3 * torch.randn(seq.shape, generator=torch.Generator().manual_seed(0), dtype=DT)
    sol = pitsolve.solve(system, "identity", init=perturbed, tol=1e-12)
    assert max_err(sol.ys, seq) < 1e-10


def test_stochastic_diagonal_for_large_states():
    """Above ``exact_below`` the diagonal is a Hutchinson estimate: still the sequential answer."""
    A = -torch.eye(40, dtype=DT) + 0.05 * torch.randn(40, 40, generator=torch.Generator().manual_seed(1), dtype=DT)
    system = pitsolve.ODESystem(lambda t, y: torch.tanh(A @ y), torch.ones(40, dtype=DT),
                                torch.linspace(0, 2, 17, dtype=DT))
    seq = pitsolve.sequential(system).ys
    sol = pitsolve.solve(system, Diagonal(exact_below=8, probes=4, seed=3), tol=1e-12)
    assert max_err(sol.ys, seq) < 1e-10
    again = pitsolve.solve(system, Diagonal(exact_below=8, probes=4, seed=3), tol=1e-12)
    assert torch.equal(sol.ys, again.ys) and sol.iterations == again.iterations


def test_parareal_with_user_coarse_and_anderson_history():
    system = vdp_system(n=12, t_end=3.0)
    seq = pitsolve.sequential(system).ys

    def euler_coarse(states, indices):
        h = (system.t[indices + 1] - system.t[indices]).unsqueeze(-1)
        return states + h * torch.func.vmap(system.func)(system.t[indices], states)

    sol = pitsolve.solve(system, Parareal(coarse=euler_coarse), tol=1e-12)
    assert max_err(sol.ys, seq) < 1e-10
    for m in (1, 2, 8):
        assert max_err(pitsolve.solve(system, Anderson(history=m), tol=1e-12).ys, seq) < 1e-10


def test_progress_bar(capsys):
    system = vdp_system(n=8)
    pitsolve.solve(system, "identity", tol=1e-10, progress=True)
    err = capsys.readouterr().err
    assert "pitsolve[identity]" in err and "residual" in err


def test_strategy_instances_are_reusable():
    """A strategy object carries settings, not state from a previous solve."""
    system = vdp_system(n=12, t_end=3.0)
    strategy = Anderson(history=3)
    first = pitsolve.solve(system, strategy, tol=1e-10)
    second = pitsolve.solve(system, strategy, tol=1e-10)
    assert torch.equal(first.ys, second.ys) and first.iterations == second.iterations
