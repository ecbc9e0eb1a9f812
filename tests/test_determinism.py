"""Determinism and reproducibility of every solve.

(a) The same inputs and seed give bit-identical results on the same device, run after run, whatever
    ran in between (no hidden global state): ODE and SDE systems, every Jacobian strategy (the
    diagonal one with Hutchinson probes too), the Gaussian-mixture denoiser and a tiny Diffusers
    UNet through ``parallel_sample``.
(b) Settings that only change how the work is organised — the window, the number N of intervals the
    fine steps are grouped into, the devices the sweeps are spread over — change the answer by no
    more than the stopping rule allows.
(c) The JSON the command line writes records the seed and every setting, and both the command it
    records and the command rebuilt from its settings reproduce the run bit for bit.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

import pitsolve
from pitsolve.adapters import plots
from pitsolve.adapters.cli import build_parser, main
from pitsolve.adapters.diffusers import parallel_sample, sequential_sample
from pitsolve.jacobians import Anderson, Diagonal

from conftest import DT, STRATEGIES, gen, ou_system, vdp_system
from diffusion_models import tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")


def flat(ys) -> torch.Tensor:
    parts = ys if isinstance(ys, tuple) else (ys,)
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


def assert_identical(a: pitsolve.Solution, b: pitsolve.Solution) -> None:
    """Same trajectory bit for bit, and the same path to it."""
    assert torch.equal(flat(a.ys), flat(b.ys))
    for name in ("status", "iterations", "nfe", "depth", "accepted", "window_starts", "residuals", "resets"):
        assert getattr(a, name) == getattr(b, name), name
    assert getattr(a, "fallbacks", []) == getattr(b, "fallbacks", [])


def relative_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def forced_ode(N: int = 8, substeps: int = 2) -> pitsolve.ODESystem:
    """``y' = −y + ½ sin(y) + cos(t)`` (3-vector) on [0, 2]: Lipschitz ℓ = 1.5."""
    return pitsolve.ODESystem(lambda t, y: -y + 0.5 * torch.sin(y) + torch.cos(t),
                              torch.tensor([1.0, -0.5, 2.0], dtype=DT), torch.linspace(0, 2, N + 1, dtype=DT),
                              substeps=substeps)


def wide_ode(N: int = 6) -> pitsolve.ODESystem:
    """A 24-dimensional ``y' = tanh(A y)``: larger than ``Diagonal(exact_below=8)``, so the diagonal is probed."""
    A = -torch.eye(24, dtype=DT) + 0.1 * torch.randn(24, 24, generator=gen(11), dtype=DT)
    return pitsolve.ODESystem(lambda t, y: torch.tanh(A @ y), torch.linspace(-1, 1, 24, dtype=DT),
                              torch.linspace(0, 2, N + 1, dtype=DT))


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


# -- (a) bit-identical repeats ----------------------------------------------------------------------

@pytest.mark.parametrize("jacobian", STRATEGIES)
@pytest.mark.parametrize("make", [forced_ode, ou_system], ids=["ode", "sde"])
def test_repeated_solves_are_bit_identical(make, jacobian):
    system = make()
    first = pitsolve.solve(system, jacobian, window=5, tol=1e-10, init="coarse")
    second = pitsolve.solve(make(), jacobian, window=5, tol=1e-10, init="coarse")  # a fresh, equal system
    assert_identical(first, second)
    assert_identical(first, pitsolve.solve(system, jacobian, window=5, tol=1e-10, init="coarse"))


def test_hutchinson_diagonal_is_reproducible_from_its_seed():
    system = wide_ode()
    strategy = Diagonal(exact_below=8, probes=3, seed=5)
    first = pitsolve.solve(system, strategy, tol=1e-10)
    assert_identical(first, pitsolve.solve(system, strategy, tol=1e-10))  # the same instance, reused
    assert_identical(first, pitsolve.solve(system, Diagonal(exact_below=8, probes=3, seed=5), tol=1e-10))
    # Another probe seed takes another path to the same answer.
    other = pitsolve.solve(system, Diagonal(exact_below=8, probes=3, seed=6), tol=1e-10)
    seq = pitsolve.sequential(system).ys
    assert float((other.ys - seq).abs().max()) < 1e-8 and float((first.ys - seq).abs().max()) < 1e-8


def test_sde_path_is_a_function_of_the_seed():
    a, b, c = ou_system(seed=4), ou_system(seed=4), ou_system(seed=5)
    assert torch.equal(pitsolve.sequential(a).ys, pitsolve.sequential(b).ys)
    assert_identical(pitsolve.solve(a, "diagonal", tol=1e-10), pitsolve.solve(b, "diagonal", tol=1e-10))
    assert not torch.allclose(pitsolve.sequential(a).ys, pitsolve.sequential(c).ys)


@pytest.mark.parametrize("scheduler", [DDPMScheduler(clip_sample=False), DDIMScheduler(clip_sample=False),
                                       DPMSolverMultistepScheduler()], ids=["ddpm", "ddim", "dpm++"])
def test_gmm_samples_are_bit_identical(gmm, scheduler):
    kw = dict(num_inference_steps=20, shape=(16, 2), intervals=10, window=6, tol=1e-4, throw=False)
    x, sol = parallel_sample(gmm, scheduler, generator=gen(3), **kw)
    y, again = parallel_sample(gmm, scheduler, generator=gen(3), **kw)
    assert torch.equal(x, y)
    assert_identical(sol, again)
    z, _ = parallel_sample(gmm, scheduler, generator=gen(4), **kw)
    assert not torch.allclose(x, z)  # the seed reaches the sample


def test_diffusers_unet_samples_are_bit_identical(unet):
    kw = dict(num_inference_steps=8, shape=(1, 1, 8, 8), intervals=4, window=3, tol=1e-3)
    x, sol = parallel_sample(unet, DDPMScheduler(), generator=gen(7), **kw)
    y, again = parallel_sample(unet, DDPMScheduler(), generator=gen(7), **kw)
    assert torch.equal(x, y)
    assert_identical(sol, again)


def test_no_hidden_global_state(gmm):
    """Run A, unrelated solves and draws from the global RNG, run A again: bit-identical."""
    probe = Diagonal(exact_below=8, probes=2, seed=1)
    anderson = Anderson(history=3)

    def run_a():
        return (
            pitsolve.solve(wide_ode(), probe, window=5, tol=1e-10),
            pitsolve.solve(ou_system(seed=2), anderson, tol=1e-10),
            parallel_sample(gmm, DDPMScheduler(clip_sample=False), num_inference_steps=12, shape=(8, 2),
                            generator=gen(2), intervals=6, tol=1e-4)[0],
        )

    first = run_a()
    # Unrelated work with the same strategy objects, other seeds, other systems, and the global RNG.
    pitsolve.solve(wide_ode(N=4), probe, tol=1e-6)
    pitsolve.solve(vdp_system(n=6), anderson, tol=1e-6, window=2)
    pitsolve.solve(ou_system(seed=9), Diagonal(exact_below=0, probes=1, seed=3), tol=1e-6)
    parallel_sample(gmm, DDIMScheduler(clip_sample=False), num_inference_steps=10, shape=(4, 2), generator=gen(5))
    with torch.random.fork_rng():
        torch.manual_seed(12345)
        torch.randn(100)
        inside = run_a()  # another global seed does not reach the solves
    again = run_a()
    for a, b in ((first, inside), (first, again)):
        assert_identical(a[0], b[0])
        assert_identical(a[1], b[1])
        assert torch.equal(a[2], b[2])


# -- (b) window, N and devices change the answer only within the tolerance ----------------------------
#
# Each parallel answer is within the Eq. 14 bound of its own sequential solve (derived in
# test_properties.py, `error_bound`): max_n |X_n − X*_n| ≤ 10·N·Λ·(L + max(L, 2))·√D·tol·s_max, with
# L, Λ the Lipschitz constants of one interval and of the whole chain and s_max = 1 + max|X| the
# error scale (atol = rtol = 1).  Two answers differ by at most twice that.  Regrouping the same
# fine steps into other intervals changes the sequential answer only by round-off (the fine-step
# times t_n + s·h_n are the same to the last few ulp), and so does spreading a sweep's rows over
# devices (each row is computed alone), which adds nothing to the bound but round-off.

def ode_bound(system: pitsolve.ODESystem, tol: float, ell: float, x_max: float) -> float:
    N, D = system.num_intervals, system.spec.size
    h = float((system.t[1:] - system.t[:-1]).abs().max())
    L, chain = math.exp(ell * h), math.exp(ell * float((system.t[-1] - system.t[0]).abs()))
    return 10 * N * chain * (L + max(L, 2.0)) * math.sqrt(D) * (tol * (1 + x_max) + 1e-14 * x_max)


@pytest.mark.parametrize("jacobian", ["identity", "newton", "anderson", "parareal"])
def test_window_and_grouping_change_the_ode_answer_within_tolerance(jacobian):
    tol, fine = 1e-12, 24
    reference = pitsolve.sequential(forced_ode(N=fine, substeps=1))
    x_max = float(reference.ys.abs().max())
    answers = []
    for N in (24, 12, 6, 3, 1):  # the same 24 RK4 steps, grouped into N intervals of 24/N steps
        system = forced_ode(N=N, substeps=fine // N)
        bound = ode_bound(system, tol, 1.5, x_max)
        seq = pitsolve.sequential(system)
        assert float((seq.y - reference.y).abs().max()) < 1e-13  # regrouping alone: round-off
        for window in sorted({None, 1, max(1, N // 3), N}, key=str):
            sol = pitsolve.solve(system, jacobian, window=window, tol=tol)
            assert sol.converged and sol.iterations <= N
            assert float((sol.ys - seq.ys).abs().max()) <= bound, (N, window)
            answers.append((sol.y, bound))
    y0, b0 = answers[0]
    for y, b in answers:
        assert float((y - y0).abs().max()) <= b + b0


@pytest.mark.parametrize("jacobian", STRATEGIES)
def test_two_devices_agree_with_one(jacobian):
    for system, ell in ((forced_ode(N=10), 1.5), (ou_system(n=10), None)):
        one = pitsolve.solve(system, jacobian, window=4, tol=1e-11)
        two = pitsolve.solve(system, jacobian, window=4, tol=1e-11, devices=["cpu", "cpu"])
        assert two.converged and two.iterations <= system.num_intervals
        seq = pitsolve.sequential(system).ys
        x_max = float(seq.abs().max())
        # The OU SDE is linear with drift Lipschitz θ = 0.7 and additive noise: ℓ = 0.7.
        bound = ode_bound(system, 1e-11, ell or 0.7, x_max)
        for sol in (one, two):
            assert float((sol.ys - seq).abs().max()) <= bound
        assert float((one.ys - two.ys).abs().max()) <= 2 * bound


# The diffusion stopping rule accepts a point when the RMS change of every image is at most
# tol·σ_{t_n} ≤ tol (σ ≤ 1: the latents have unit scale).  The sampler's steps do not amplify a
# perturbation of an accepted point by more than a small factor here (measured for these models:
# final error ≤ 0.05·tol relative to the data RMS), so "within tolerance" is relative RMS error
# ≤ tol against the sequential sample, and ≤ 2·tol between two parallel ones.  With tol = 0 only
# exact points are accepted and the answer is the sequential one up to the round-off of batched
# model calls (≤ 1e-12 relative in float64).

@pytest.mark.parametrize("scheduler", [DDPMScheduler(clip_sample=False), DDIMScheduler(clip_sample=False),
                                       DPMSolverMultistepScheduler()], ids=["ddpm", "ddim", "dpm++"])
def test_gmm_intervals_windows_and_devices_within_tolerance(gmm, scheduler):
    T, shape = 20, (16, 2)
    reference, _ = sequential_sample(gmm, scheduler, num_inference_steps=T, shape=shape, generator=gen(1))
    samples = []
    for N in (T, T // 2, T // 5):
        seq, _ = sequential_sample(gmm, scheduler, num_inference_steps=T, intervals=N, shape=shape, generator=gen(1))
        assert relative_rms(seq, reference) <= 1e-12  # grouping the steps does not change the sampler
        runs = [(0.0, None, None), (1e-3, None, None), (1e-3, 3, None), (1e-3, None, ["cpu", "cpu"])]
        for tol, window, devices in runs:
            x, sol = parallel_sample(gmm, scheduler, num_inference_steps=T, intervals=N, shape=shape,
                                     generator=gen(1), tol=tol, window=window, devices=devices, throw=False)
            assert sol.iterations <= N
            if sol.converged:  # the error bound certified tol
                assert relative_rms(x, reference) <= max(tol, 1e-12), (tol, N, window, devices)
            else:  # or it said it could not, with an estimate above tol
                assert sol.status is pitsolve.Status.UNCERTIFIED and sol.error_estimate > tol, (tol, N, sol)
            if tol:
                samples.append(x)
    for x in samples:
        assert relative_rms(x, samples[0]) <= 2e-3


def test_unet_intervals_and_devices_within_tolerance(unet):
    T, shape, tol = 10, (1, 1, 8, 8), 1e-3
    scheduler = DDIMScheduler()
    reference, _ = sequential_sample(unet, scheduler, num_inference_steps=T, shape=shape, generator=gen(2))
    for N, devices in ((T, None), (T // 2, None), (T // 5, None), (T // 2, ["cpu", "cpu"])):
        x, sol = parallel_sample(unet, scheduler, num_inference_steps=T, intervals=N, shape=shape, generator=gen(2),
                                 tol=tol, devices=devices)
        assert sol.converged and sol.iterations <= N
        assert relative_rms(x, reference) <= tol, (N, devices)


# -- (c) the command line's JSON reproduces the run ----------------------------------------------------

#: Options that say where results go or how they are shown, not what is computed.
PRESENTATION = {"output", "no_progress", "command", "cmd"}
#: The fields both commands' stats.json start with (docs/cli.md, "The header").
HEADER = ("command", "versions", "threads", "device", "seed", "settings", "machine")


def run_sample(argv, monkeypatch):
    """``pitsolve sample`` in this process: its stats.json and the two samples it drew."""
    grids = {}
    save = plots.save_image_grid

    def capture(images, path, *args, **kwargs):
        grids[Path(path).stem] = images.detach().clone()
        return save(images, path, *args, **kwargs)

    monkeypatch.setattr(plots, "save_image_grid", capture)
    assert main(argv) == 0
    out = Path(argv[argv.index("--output") + 1])
    return json.loads((out / "stats.json").read_text()), grids


def with_output(argv, folder, flag="--output"):
    argv = list(argv)
    argv[argv.index(flag) + 1] = str(folder)
    return argv


def with_output_command(command, folder, flag="--output"):
    return shlex.join(with_output(shlex.split(command), folder, flag))


def recorded(stats, cmd):
    """The argv of the recorded command line, without the leading ``pitsolve``."""
    try:
        command = shlex.split(stats["command"])
        build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"the recorded command does not parse: {stats['command']}")
    assert command[:2] == ["pitsolve", cmd]
    return command[1:]


def same_rows(a, b):
    timing = {"wall_time", "speedup"}
    return [{k: v for k, v in r.items() if k not in timing} for r in a] == \
        [{k: v for k, v in r.items() if k not in timing} for r in b]


def computed_options(argv):
    """The parsed options of a command line that decide what it computes."""
    return {k: v for k, v in vars(build_parser().parse_args(argv)).items() if k not in PRESENTATION}


def test_sample_json_records_every_setting(tiny_pipeline, tmp_path, monkeypatch):
    argv = ["sample", "--model", str(tiny_pipeline), "--scheduler", "ddpm", "--steps", "4", "--intervals", "2",
            "--window", "2", "--num-images", "1", "--tol", "1e-3", "--seed", "11", "--jacobian", "anderson",
            "--output", str(tmp_path / "a"), "--no-progress"]
    stats, grids = run_sample(argv, monkeypatch)
    assert list(stats)[:len(HEADER)] == list(HEADER)
    options = set(vars(build_parser().parse_args(["sample"]))) - PRESENTATION
    assert options <= set(stats["settings"]), sorted(options - set(stats["settings"]))
    assert stats["seed"] == stats["settings"]["seed"] == 11
    assert stats["settings"]["guard"] == repr(pitsolve.Guard())

    # The command rebuilt from the recorded settings, run again, draws the very same samples.
    rebuilt = ["sample", "--output", str(tmp_path / "b"), "--no-progress"]
    for key, value in stats["settings"].items():
        if key == "window" and value is None:
            value = 0  # all N
        if key == "guard":
            rebuilt += [] if value else ["--no-guard"]
        elif value is not None:
            rebuilt += ["--" + key.replace("_", "-"), str(value)]
    again, grids_again = run_sample(rebuilt, monkeypatch)
    for name in ("grid", "grid_sequential"):
        assert torch.equal(grids[name], grids_again[name]), name
    assert same_rows(stats["rows"], again["rows"]) and again["settings"] == stats["settings"]
    assert again["model"] == stats["model"]

    # The recorded command line asks for the same computation, and run again draws the very same samples.
    command = recorded(stats, "sample")
    assert computed_options(command) == computed_options(argv)
    # The rebuilt command names the sampler defaults argv left unset (here M) by their resolved values.
    resolved = {k: (stats["settings"][k] if v is None and stats["settings"].get(k) is not None else v)
                for k, v in computed_options(argv).items()}
    assert computed_options(rebuilt) == resolved
    third, grids_third = run_sample(with_output(command, tmp_path / "c"), monkeypatch)
    for name in ("grid", "grid_sequential"):
        assert torch.equal(grids[name], grids_third[name]), name
    assert same_rows(stats["rows"], third["rows"]) and third["settings"] == stats["settings"]
    assert third["command"] == with_output_command(stats["command"], tmp_path / "c")


def test_sample_command_survives_paths_with_spaces(tiny_pipeline, tmp_path, monkeypatch):
    spaced = tmp_path / "my model"
    spaced.symlink_to(tiny_pipeline, target_is_directory=True)
    argv = ["sample", "--model", str(spaced), "--scheduler", "ddim", "--steps", "2", "--num-images", "1",
            "--no-guard", "--output", str(tmp_path / "my out"), "--no-progress"]
    stats, _ = run_sample(argv, monkeypatch)
    command = recorded(stats, "sample")
    assert computed_options(command) == computed_options(argv)
    assert command[command.index("--output") + 1] == str(tmp_path / "my out")
    assert stats["settings"]["model"] == str(spaced) and stats["settings"]["guard"] is False


def test_solve_json_records_every_setting(tmp_path):
    argv = ["solve", "--intervals", "4", "--substeps", "2", "--window", "3", "--t-end", "1.5", "--tol", "1e-9",
            "--dtype", "float64", "--repeats", "1", "--output", str(tmp_path / "a")]
    assert main(argv) == 0
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert list(stats)[:len(HEADER)] == list(HEADER)
    settings = stats["settings"]
    options = set(vars(build_parser().parse_args(["solve"]))) - PRESENTATION
    assert options <= set(settings), sorted(options - set(settings))
    assert settings["guard"] == repr(pitsolve.Guard()) and stats["seed"] is None

    rebuilt = ["solve", "--output", str(tmp_path / "b")]
    for key in sorted(options):
        if key == "guard":
            rebuilt += [] if settings[key] else ["--no-guard"]
        elif settings[key] is not None:
            rebuilt += ["--" + key.replace("_", "-"), str(settings[key])]
    assert main(rebuilt) == 0
    again = json.loads((tmp_path / "b" / "stats.json").read_text())
    assert again["settings"] == settings and again["problem"] == stats["problem"]
    timing = {"wall_time_s", "wall_time_ratio"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    # Every error, per strategy and per iteration, is reproduced to the last bit.
    assert strip(again["rows"]) == strip(stats["rows"])

    # So does the recorded command line, run as it stands (but for where it writes).
    command = recorded(stats, "solve")
    assert computed_options(command) == computed_options(argv) == computed_options(rebuilt)
    assert main(with_output(command, tmp_path / "c")) == 0
    third = json.loads((tmp_path / "c" / "stats.json").read_text())
    assert third["settings"] == settings and strip(third["rows"]) == strip(stats["rows"])
    assert third["command"] == with_output_command(stats["command"], tmp_path / "c")
