"""Execution across devices and ranks: the same Solution as one process, and failures that never hang.

* ``solve(devices=[...])``: replicas per device, windows split unevenly, smaller than the device
  count, one device — bit-for-bit the single-process solve on the CPU.
* ``pitsolve.distributed`` on gloo with 2 and 3 spawned ranks on 127.0.0.1: every rank ends with
  the single-process Solution (states within 1e-12 in float64, same iterations) for an ODE, an
  SDE and diffusion sampling with a tiny UNet.
* Safety: mismatched ranks, a rank's own exception, non-convergence, a dead rank and a hung
  rank all end in the same error on every surviving rank within a bounded time.
"""

from __future__ import annotations

import time

import pytest
import torch

import pitsolve
import pitsolve.distributed
from pitsolve._devices import module_to
from pitsolve._execution import split_sizes

import distributed_workers as workers
from conftest import ou_system, vdp_system

STATE_TOL = 1e-12


def max_diff(a, b) -> float:
    if isinstance(a, tuple):
        return max(max_diff(x, y) for x, y in zip(a, b))
    return float((a.cpu() - b.cpu()).abs().max())


def test_split_sizes_are_contiguous_and_uneven():
    assert split_sizes(5, 3) == [2, 2, 1]
    assert split_sizes(2, 3) == [1, 1, 0]
    assert split_sizes(6, 2) == [3, 3]
    assert sum(split_sizes(17, 4)) == 17


# -- several devices in one process ------------------------------------------------------------------
DEVICE_CASES = [  # (problem, jacobian, devices, window): uneven splits, window < devices, one device
    *[(p, j, d, w) for p in ("ode", "sde") for j in ("identity", "parareal")
      for d, w in ((["cpu", "cpu"], 7), (["cpu"] * 3, 5), (["cpu"] * 3, 2), (["cpu"], None))],
    ("ode", "anderson", ["cpu"] * 3, 5),
    ("sde", "dense", ["cpu", "cpu"], 7),  # batched JVPs routed over the devices
    ("ode", "diagonal", ["cpu"] * 3, 4),
]


@pytest.mark.parametrize("problem, jacobian, devices, window", DEVICE_CASES)
def test_devices_give_the_single_process_solution(problem, jacobian, devices, window):
    system = vdp_system(n=16) if problem == "ode" else ou_system()
    ref = pitsolve.solve(system, jacobian, tol=1e-10, window=window)
    executor = pitsolve.MultiDeviceExecutor(devices)
    sol = pitsolve.solve(system, jacobian, tol=1e-10, window=window, executor=executor)
    assert max_diff(sol.ys, ref.ys) <= STATE_TOL
    assert (sol.iterations, sol.nfe, sol.depth, sol.status) == (ref.iterations, ref.nfe, ref.depth, ref.status)
    assert executor.stats.calls >= sol.iterations and executor.stats.rows > 0


def test_devices_diffusion_sampling_with_a_tiny_unet():
    from diffusers import DDIMScheduler

    from pitsolve.adapters.diffusers import build_system, parallel_sample, sequential_sample

    from diffusion_models import tiny_unet

    unet = tiny_unet()
    kw = dict(num_inference_steps=8, shape=(2, 1, 8, 8), intervals=8, tol=1e-8, window=5)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    ref, ref_sol = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(1), **kw)
    out, sol = parallel_sample(unet, scheduler, generator=torch.Generator().manual_seed(1), devices=["cpu"] * 2, **kw)
    assert max_diff(sol.ys, ref_sol.ys) <= STATE_TOL and sol.iterations == ref_sol.iterations
    seq, _ = sequential_sample(unet, scheduler, generator=torch.Generator().manual_seed(1), devices=["cpu"], **kw)
    assert float((seq - out).abs().max()) < 1e-6
    system = build_system(unet, DDIMScheduler(num_train_timesteps=1000), num_inference_steps=8, shape=(2, 1, 8, 8),
                          devices=["cpu"])
    assert system.model.unet is unet  # already on the device: shared, not copied


def test_replicas_leave_the_users_objects_alone():
    system = workers.sde_system()
    rep = system.to("cpu")
    assert rep is not system and rep.sde is system.sde and rep.spec.device.type == "cpu"
    # A module elsewhere is copied to the device, parameters written there directly.
    lin = torch.nn.Linear(3, 3)
    moved = module_to(lin, torch.device("meta"))
    assert moved is not lin and moved.weight.device.type == "meta" and lin.weight.device.type == "cpu"
    assert module_to(lin, torch.device("cpu")) is lin
    # Copies are reused while the weights are unchanged, and made afresh once they change.
    assert module_to(lin, torch.device("meta")) is moved
    with torch.no_grad():
        lin.weight.add_(1.0)
    assert module_to(lin, torch.device("meta")) is not moved


def test_devices_bad_input():
    system = vdp_system()
    with pytest.raises(pitsolve.InputValueError, match="not both"):
        pitsolve.solve(system, devices=["cpu"], executor=pitsolve.LocalExecutor())
    with pytest.raises(pitsolve.InputValueError, match="empty"):
        pitsolve.solve(system, devices=[])
    with pytest.raises(pitsolve.InputValueError, match="not a device"):
        pitsolve.solve(system, devices=["gpu7"])
    if not torch.cuda.is_available():
        with pytest.raises(pitsolve.InputValueError, match="not available"):
            pitsolve.solve(system, devices=["cuda:0"])
    with pytest.raises(pitsolve.InputTypeError, match="executor"):
        pitsolve.solve(system, executor="gloo")

    class Unmovable(pitsolve.BandedSystem):
        initial_state = torch.zeros(2, dtype=torch.float64)
        num_intervals = 4

        def propagate(self, states, indices):
            return states + 1

    with pytest.raises(pitsolve.InputTypeError, match=r"Unmovable.to\(device\)"):
        pitsolve.solve(Unmovable(), devices=["cpu", "cpu"])
    with pytest.raises(pitsolve.InputValueError, match="init_process_group"):
        pitsolve.distributed.solve(system)


# -- torch.distributed ranks (gloo, forked processes on 127.0.0.1) ---------------------------------------
# Two runs: 2 ranks (equivalence, mismatches, a rank's own error, non-convergence, then a hung rank)
# and 3 ranks (equivalence, then a dead rank).  Each ends with its failure scenario, which breaks its group.
@pytest.fixture(scope="module")
def reference():
    return workers.single_process_results()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_ranks")
    results, codes = workers.run_ranks("equivalence", 2, out, expect=["result0", "result1", "failure0"],
                                       extras=True, fault="hang", timeout=3)
    return out, results, codes


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("three_ranks")
    expect = ["result0", "result1", "result2", "failure0", "failure1"]
    results, codes = workers.run_ranks("equivalence", 3, out, expect=expect, fault="exit", timeout=30)
    return out, results, codes


def check_equivalence(results, world, reference):
    crashes = [v for k, v in results.items() if k.startswith("crash")]
    assert not crashes, crashes
    for rank in range(world):
        got = results[f"result{rank}"]["solutions"]
        for case, (ys, iterations, status) in reference.items():
            got_ys, got_iterations, got_status = got[case]
            assert max_diff(got_ys, ys) <= STATE_TOL, (rank, case, max_diff(got_ys, ys))
            assert (got_iterations, got_status) == (iterations, status), (rank, case)
            assert max_diff(got_ys, results["result0"]["solutions"][case][0]) == 0.0  # every rank: the same Solution


@pytest.mark.distributed
def test_gloo_two_ranks_give_the_single_process_solution(two_ranks, reference, report):
    _, results, _ = two_ranks
    check_equivalence(results, 2, reference)
    calls, rows = results["result1"]["stats"][("ode", "identity")]
    report(f"distributed, 2 gloo ranks: ODE identity used {calls} exchanges, rank 1 evaluated {rows} rows")


@pytest.mark.distributed
def test_gloo_three_ranks_give_the_single_process_solution(three_ranks, reference):
    _, results, _ = three_ranks
    check_equivalence(results, 3, reference)


@pytest.mark.distributed
def test_mismatched_ranks_raise_the_same_error_on_every_rank(two_ranks):
    _, results, _ = two_ranks
    for case, field in (("mismatch_tol", "tol"), ("mismatch_state", "initial_state")):
        found = [results[f"result{r}"][case] for r in range(2)]
        assert {f["type"] for f in found} == {"RankMismatchError"}, found
        assert found[0]["message"] == found[1]["message"]
        assert f"  {field}: rank 0: " in found[0]["message"] and "rank 1: " in found[0]["message"]
        assert found[0]["ranks"] == (1,)
        assert max(f["seconds"] for f in found) < 30  # found at the start, no timeout involved


@pytest.mark.distributed
def test_a_ranks_own_error_is_raised_on_every_rank(two_ranks):
    _, results, _ = two_ranks
    found = [results[f"result{r}"]["remote_error"] for r in range(2)]
    assert {f["type"] for f in found} == {"NonFiniteError"}
    assert found[0]["message"] == found[1]["message"]
    assert found[0]["message"].startswith("rank 1 raised NonFiniteError in Φ of sweep 2: the model returned NaN")
    assert found[1]["cause"] == "NonFiniteError"  # the failing rank chains its own exception


@pytest.mark.distributed
def test_non_convergence_reports_the_same_status_on_every_rank(two_ranks):
    _, results, _ = two_ranks
    partial = [results[f"result{r}"]["not_converged"]["value"] for r in range(2)]
    assert partial[0][0] == partial[1][0] == "MAX_ITERS"
    assert partial[0][1:3] == partial[1][1:3] and max_diff(partial[0][3], partial[1][3]) == 0.0
    thrown = [results[f"result{r}"]["not_converged_throw"] for r in range(2)]
    assert {t["type"] for t in thrown} == {"ConvergenceError"} and thrown[0]["message"] == thrown[1]["message"]
    # The group stays usable after these errors: a following solve converges on both ranks.
    assert all(results[f"result{r}"]["after_errors"]["value"][0] == "CONVERGED" for r in range(2))


@pytest.mark.distributed
def test_roundoff_split_ends_with_rank_0s_trajectory(two_ranks, reference):
    _, results, _ = two_ranks
    for r in range(2):
        warned, ys = results[f"result{r}"]["roundoff"]["value"]
        assert any("rank 0's trajectory" in w for w in warned), warned
        assert max_diff(ys, results["result0"]["roundoff"]["value"][1]) == 0.0


@pytest.mark.distributed
def test_a_group_of_one_rank_in_this_process(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        system = vdp_system(n=12)
        ref = pitsolve.solve(system, "identity", tol=1e-10)
        executor = pitsolve.distributed.DistributedExecutor(timeout=30)
        sol = pitsolve.solve(system, "identity", tol=1e-10, executor=executor)
        assert max_diff(sol.ys, ref.ys) == 0.0 and sol.iterations == ref.iterations
        assert executor.stats.calls == sol.iterations and executor.leader
        with pytest.raises(pitsolve.InputValueError, match="takes no devices"):
            pitsolve.distributed.solve(system, devices=["cpu"])
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_a_dead_rank_fails_the_others_naming_it(three_ranks, report):
    out, results, codes = three_ranks
    assert codes[2] == 7, codes  # the rank that died
    died = float((out / "fault_time").read_text())
    for rank in (0, 1):
        found = results[f"failure{rank}"]
        assert found["type"] == "DistributedError", found
        assert found["ranks"] == (2,), found["message"]
        assert "rank 2 stopped" in found["message"] and "died or froze" in found["message"]
        assert found["time"] - died < 30, found["time"] - died
    delays = ", ".join(f"{results[f'failure{r}']['time'] - died:.1f} s" for r in (0, 1))
    report(f"distributed, 3 gloo ranks: rank 2 died; ranks 0 and 1 named it after {delays}")


@pytest.mark.distributed
def test_a_hung_rank_fails_the_others_within_the_timeout(two_ranks, report):
    out, results, _ = two_ranks
    found = results["failure0"]
    assert found["type"] == "DistributedError", found
    assert found["ranks"] == (1,)
    assert "rank 1 is alive but has not reached this exchange" in found["message"]
    delay = found["time"] - float((out / "fault_time").read_text())
    assert delay < 3 + 5, delay  # the timeout, then 2.5 heartbeats (0.75 s) to name the rank
    report(f"distributed, 2 gloo ranks: a hung rank (timeout=3 s) was named {delay:.1f} s after it stopped answering")
