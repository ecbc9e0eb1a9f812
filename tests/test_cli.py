"""The command line: both commands run end to end on small sizes; bad options end in one line, exit 2;
one flag vocabulary across the commands; ``pitsolve solve`` on the user's own ODE; no import side effects."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torchdiffeq
from diffusers import DDPMPipeline, DDPMScheduler

import pitsolve
from pitsolve.adapters.cli import build_parser, main, ode, options, sample
from pitsolve.adapters.cli import sample as cli_sample
from pitsolve.adapters.cli.ode import build_system
from pitsolve.adapters.cli.models import weights_digest
from pitsolve.adapters.diffusion.rules.registry import sampler as sampler_entry

from diffusion_models import tiny_plain_unet as tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")

#: The fields both commands' stats.json start with (docs/cli.md, "The header").
HEADER = ("command", "versions", "threads", "device", "seed", "settings", "machine")


@pytest.fixture(scope="module")
def user_ode(tmp_path_factory):
    """A user's file: ``f`` is the linear ODE y' = A y (a damped rotation), ``half`` returns the wrong shape."""
    path = tmp_path_factory.mktemp("user") / "user_ode.py"
    path.write_text(textwrap.dedent("""\
        import torch

        A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)

        def f(t, y):
            return A.to(y) @ y

        def half(t, y):
            return y[:1]
        """))
    return path


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++", "euler"])
def test_sample_end_to_end(tiny_pipeline, tmp_path, capsys, scheduler):
    out = tmp_path / "out"
    code = main(["sample", "--model", str(tiny_pipeline), "--scheduler", scheduler, "--steps", "8",
                 "--intervals", "4", "--window", "3", "--num-images", "2", "--tol", "1e-4", "--seed", "3",
                 "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    default = sampler_entry(scheduler).defaults  # no --jacobian/-M: the sampler's measured defaults
    assert "speed-up" in printed and "sequential" in printed and f"parallel ({default.jacobian})" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["seed"] == 3 and stats["settings"]["intervals"] == 4
    assert stats["settings"]["jacobian"] == default.jacobian
    assert stats["settings"]["preconditioning_steps"] == default.preconditioning_steps
    assert stats["solve_settings"]["jacobian"] == f"{default.jacobian!r} (default of {scheduler})"
    assert stats["solve_settings"]["window"] == "3 (given)" and stats["solve_settings"]["window_chosen"] == "3"
    seq, par = stats["rows"]
    assert seq["nfe"] == 8 and seq["depth"] == 8 and seq["iterations"] == 4
    assert par["iterations"] <= 4 and par["converged"]
    assert par["error"] < 1e-2
    for name in ("grid.png", "grid_sequential.png", "residuals.png", "x0_strip.png"):
        assert (out / name).stat().st_size > 0


def test_sample_is_reproducible(tiny_pipeline, tmp_path):
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        assert main(["sample", "--model", str(tiny_pipeline), "--scheduler", "ddim", "--steps", "6",
                     "--num-images", "2", "--output", str(out), "--no-progress"]) == 0
        runs.append(json.loads((out / "stats.json").read_text())["rows"][1])
    assert runs[0]["error"] == runs[1]["error"] and runs[0]["iterations"] == runs[1]["iterations"]


def test_sample_window_auto(tiny_pipeline, tmp_path, capsys):
    """``--window auto`` measures the batch-cost curve, reports the window it chose, and still reproduces the
    sequential sample; a window that is neither an int nor ``auto`` is refused by the parser."""
    out = tmp_path / "auto"
    assert main(["sample", "--model", str(tiny_pipeline), "--scheduler", "ddim", "--steps", "8",
                 "--window", "auto", "--num-images", "1", "--tol", "1e-4", "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    chosen = stats["window_chosen"]
    assert stats["settings"]["window"] == "auto" and chosen == stats["tuning"]["window"]
    assert chosen in [p for p, _ in stats["tuning"]["curve_ms"]]
    assert f"window=auto chose {chosen}" in printed
    assert "--window auto" in stats["command"]
    par = stats["rows"][1]
    assert par["converged"] and par["error"] < 1e-2
    with pytest.raises(SystemExit) as info:
        main(["sample", "--window", "wide"])
    assert info.value.code == 2 and "'wide' is neither an int" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "--steps", "0"], "--steps=0"),
        (["sample", "--tol", "-1"], "--tol=-1.0"),
        (["sample", "--window", "-2"], "--window=-2"),
        (["sample", "--eta", "0.5"], "--eta=0.5"),
        (["sample", "--device", "nonsense"], "--device nonsense"),
        (["sample", "--model", "/nonexistent/folder"], "/nonexistent/folder"),
        (["sample", "--model", "MODEL", "--steps", "4", "--intervals", "9"], "--intervals=9"),
        (["solve", "--window", "-1"], "--window=-1"),
        (["solve", "--intervals", "0"], "--intervals=0"),
        (["solve", "--func", "no_such_module_xyz:f", "--y0", "1"], "no module named 'no_such_module_xyz'"),
        (["solve", "--func", "ODE:g", "--y0", "1,0"], "has no attribute 'g'"),
        (["solve", "--func", "ODE:f", "--y0", "1,zero"], "'zero' is not a number"),
        (["solve", "--func", "ODE:half", "--y0", "1,0"], "returned shape (1,) for --y0 of shape (2,)"),
        (["solve", "--example", "vanderpol", "--y0", "1,0,0"], "--example vanderpol: f(t, y) returned shape (2,)"),
    ],
)
def test_bad_options_one_line(tiny_pipeline, user_ode, capsys, argv, message):
    argv = [str(tiny_pipeline) if a == "MODEL" else a.replace("ODE:", f"{user_ode}:") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_argparse_errors_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sample", "--scheduler", "eulr"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["sample", "--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--scheduler", "--intervals", "--window", "--tol", "--preconditioning-steps", "--jacobian",
                   "--num-images", "--seed", "--device", "--output", "--model"):
        assert option in help_text
    assert main([]) == 2


def test_solve_command(tmp_path, capsys):
    assert main(["solve", "--intervals", "8", "--repeats", "1", "--output", str(tmp_path)]) == 0
    assert "anderson" in capsys.readouterr().out
    assert (tmp_path / "convergence.png").exists() and (tmp_path / "stats.json").exists()


# -- the JSON header: enough to reproduce the run ------------------------------------------------------

def small_sample(model, out, *extra):
    return ["sample", "--model", str(model), "--scheduler", "ddim", "--steps", "4", "--num-images", "1",
            "--output", str(out), "--no-progress", *extra]


def test_both_jsons_carry_the_header(tiny_pipeline, tmp_path):
    """A space in the output path survives the recorded command; both commands write the same header."""
    runs = {"sample": (small_sample(tiny_pipeline, tmp_path / "sample out"), tmp_path / "sample out"),
            "solve": (["solve", "-N", "4", "--repeats", "1", "-o", str(tmp_path / "solve out")],
                      tmp_path / "solve out")}
    for cmd, (argv, out) in runs.items():
        assert main(argv) == 0
        stats = json.loads((out / "stats.json").read_text())
        assert list(stats)[:len(HEADER)] == list(HEADER), cmd
        command = shlex.split(stats["command"])
        assert command[:2] == ["pitsolve", cmd] and command[command.index("--output") + 1] == str(out)
        assert vars(build_parser().parse_args(command[1:])) == vars(build_parser().parse_args(argv))
        assert set(stats["versions"]) == {"python", "torch", "diffusers", "pitsolve"}
        assert stats["versions"]["torch"] == torch.__version__
        assert stats["versions"]["pitsolve"] == pitsolve.__version__
        assert stats["threads"] == 1 and stats["device"] == "cpu"
        assert stats["settings"]["guard"] == repr(pitsolve.Guard())
        for row in stats["rows"]:
            assert row["fallbacks"] == [] and isinstance(row["budget_sweeps"], int)
    assert stats["seed"] is None  # solve: nothing random


def test_sample_json_identifies_the_model(tmp_path):
    """The model is recorded as a path --model accepts, its label apart, and by content: a folder changed
    at the same path changes the digest or the scheduler config; the same weights saved as .bin do not."""
    folder, out = tmp_path / "model", tmp_path / "out"
    DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler()).save_pretrained(folder)
    assert main(small_sample(folder, out)) == 0
    first = json.loads((out / "stats.json").read_text())
    assert first["settings"]["model"] == str(folder) and first["model"]["label"] == str(folder)
    assert first["model"]["weights_sha256"] == weights_digest(tiny_unet(0))
    assert first["model"]["scheduler_config"]["_class_name"] == "DDPMScheduler"
    assert first["model"]["unet_config"]["block_out_channels"] == [8, 16]

    DDPMPipeline(unet=tiny_unet(0), scheduler=DDPMScheduler()).save_pretrained(folder, safe_serialization=False)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(small_sample(folder, out)) == 0
    same = json.loads((out / "stats.json").read_text())["model"]
    assert same == first["model"]

    DDPMPipeline(unet=tiny_unet(1), scheduler=DDPMScheduler(beta_end=0.03)).save_pretrained(folder)
    assert main(small_sample(folder, out)) == 0
    changed = json.loads((out / "stats.json").read_text())["model"]
    assert changed["weights_sha256"] != first["model"]["weights_sha256"]
    assert changed["scheduler_config"]["beta_end"] == 0.03 != first["model"]["scheduler_config"]["beta_end"]


def test_sample_passes_no_guard_through(tiny_pipeline, tmp_path, monkeypatch):
    seen = []
    solve = pitsolve.solve

    def spy(*args, **kwargs):
        seen.append(kwargs.get("guard", True))
        return solve(*args, **kwargs)

    monkeypatch.setattr(pitsolve, "solve", spy)
    for k, extra in enumerate(([], ["--no-guard"])):
        assert main(small_sample(tiny_pipeline, tmp_path / str(k), *extra)) == 0
        stats = json.loads((tmp_path / str(k) / "stats.json").read_text())
        assert ("--no-guard" in shlex.split(stats["command"])) == bool(extra)
        assert stats["settings"]["guard"] == (False if extra else repr(pitsolve.Guard()))
    assert seen == [pitsolve.Guard(), False]


def test_solve_records_what_the_guard_did(tmp_path):
    """On Van der Pol over [0, 8] with N = 6 the guard acts (budget sweeps for the strategies with extra
    depth); the JSON holds each solve's moves and budget sweeps as pitsolve.solve reports them, and
    none with --no-guard."""
    argv = ["solve", "--intervals", "6", "--t-end", "8", "--repeats", "1"]
    assert main([*argv, "--output", str(tmp_path / "on")]) == 0
    assert main([*argv, "--no-guard", "--output", str(tmp_path / "off")]) == 0
    on, off = (json.loads((tmp_path / k / "stats.json").read_text()) for k in ("on", "off"))
    assert off["settings"]["guard"] is False and "--no-guard" in shlex.split(off["command"])
    system = build_system(6, 2, torch.float64, 8.0)
    for row in on["rows"][1:]:
        sol = pitsolve.solve(system, row["strategy"], tol=1e-8, throw=False)
        assert row["fallbacks"] == [vars(f) for f in sol.fallbacks], row["strategy"]
        assert row["budget_sweeps"] == sol.budget_sweeps
    assert any(row["fallbacks"] or row["budget_sweeps"] for row in on["rows"])
    assert all(row["fallbacks"] == [] and row["budget_sweeps"] == 0 for row in off["rows"])


# -- one vocabulary, --version, deprecated spellings ---------------------------------------------------

def command_options(add_arguments):
    """``dest`` → the flags and help of each option (old spellings apart) that ``add_arguments`` defines."""
    parser = add_arguments(argparse.ArgumentParser(add_help=False))
    return {a.dest: a for a in parser._actions if a.option_strings and not isinstance(a, options.DeprecatedAlias)}


def test_one_vocabulary_across_commands():
    """A concept shared by the commands has one spelling and one help text (the default aside) in both, and
    no command spells a concept of the vocabulary another way."""
    commands = {"sample": command_options(sample.add_arguments), "solve": command_options(ode.add_arguments)}
    spelled = {name: concept for concept, flag in options.VOCABULARY.items() for name in flag.names}
    shared = 0
    for concept, flag in options.VOCABULARY.items():
        dest = flag.settings.get("dest", flag.names[0].lstrip("-").replace("-", "_"))
        seen = [opts[dest] for opts in commands.values() if dest in opts]
        for action in seen:
            assert tuple(action.option_strings) == flag.names, (concept, action.option_strings)
            assert action.help.split("(default:")[0] == flag.help.split("(default:")[0], concept
        shared += len(seen) == 2
    assert shared >= 8  # output, intervals, window, tol, stopping, jacobian, guard, device
    for name, opts in commands.items():
        for action in opts.values():
            for flag in action.option_strings:
                assert flag not in spelled or action.dest in ("guard", "no_progress") or \
                    action.option_strings == list(options.VOCABULARY[spelled[flag]].names), (name, flag)


def test_sample_defaults_are_kept():
    """The sampler's solve defaults come from sample.DEFAULTS (None: the sampler's registry default)."""
    args = build_parser().parse_args(["sample"])
    for key, value in sample.DEFAULTS.items():
        assert getattr(args, key) == value, key
    assert (args.output, args.intervals, args.seed, args.device) == (Path("outputs/sample"), None, 0, "cpu")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"pitsolve {pitsolve.__version__} (torch {torch.__version__})\n"


def test_old_spellings_still_work_and_warn(capsys, tmp_path):
    """``--out`` and ``--n-intervals`` parse as ``--output`` and ``--intervals``, each with one deprecation line;
    they are hidden from ``-h`` and the recorded command line uses the new spelling."""
    old = build_parser().parse_args(["solve", "--out", str(tmp_path), "--n-intervals", "5"])
    err = capsys.readouterr().err.splitlines()
    assert vars(old) == vars(build_parser().parse_args(["solve", "--output", str(tmp_path), "--intervals", "5"]))
    assert err == ["pitsolve solve: warning: --out is deprecated and will be removed; use --output (-o)",
                   "pitsolve solve: warning: --n-intervals is deprecated and will be removed; use --intervals (-N)"]
    assert vars(build_parser().parse_args(["sample", "--out", "x"]))["output"] == Path("x")
    with pytest.raises(SystemExit):
        main(["solve", "--help"])
    help_text = capsys.readouterr().out
    assert "--output" in help_text and "--out " not in help_text and "--n-intervals" not in help_text
    command = shlex.split(ode.record.command("solve", old, ode.add_arguments))
    assert "--output" in command and "--intervals" in command and "--out" not in command


# -- pitsolve solve on the user's ODE --------------------------------------------------------------------

def spy_solutions(monkeypatch):
    """Record every Solution of pitsolve.sequential and pitsolve.solve that the CLI computes."""
    seen = {"sequential": [], "solve": []}
    for name in seen:
        real = getattr(pitsolve, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            sol = _real(*args, **kwargs)
            seen[_name].append(sol)
            return sol

        monkeypatch.setattr(pitsolve, name, spy)
    return seen


def converged(solutions):
    """The last converged solve (the CLI also re-runs each strategy with max_iters=k for the error curve)."""
    return [sol for sol in solutions if sol.converged][-1]


def test_solve_user_file_matches_torchdiffeq(user_ode, tmp_path, monkeypatch):
    """``--func file.py:f --y0 ... --method midpoint --substeps 3`` reaches the solver: the sequential solve is
    torchdiffeq's midpoint rule on the refined grid (to round-off: the same arithmetic, 1e-12 in float64), every
    parallel row matches it to tol (1e-8 relative to 1 + |X|, here |X| <= 1.2), and the command line and
    settings record the file by its absolute path."""
    seen = spy_solutions(monkeypatch)
    out = tmp_path / "out"
    argv = ["solve", "--func", f"{user_ode}:f", "--y0", "1, 0.5", "--t0", "0.5", "--t-end", "2", "--method",
            "midpoint", "--substeps", "3", "-N", "6", "--jacobian", "identity", "--repeats", "1", "-o", str(out)]
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["problem"]["name"] == "func" and stats["problem"]["y0"] == [1.0, 0.5]
    assert stats["settings"]["func"] == f"{user_ode}:f" and stats["settings"]["method"] == "midpoint"
    assert [r["strategy"] for r in stats["rows"]] == ["sequential", "identity"]
    assert all(r["converged"] for r in stats["rows"]) and stats["rows"][1]["max_abs_error"] < 1e-7

    A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    t_fine = torch.linspace(0.5, 2.0, 6 * 3 + 1, dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    ref = torchdiffeq.odeint(lambda t, y: A @ y, y0, t_fine, method="midpoint")[::3]
    torch.testing.assert_close(seen["sequential"][-1].ys, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(converged(seen["solve"]).ys, ref, atol=1e-7, rtol=0)
    command = shlex.split(stats["command"])
    assert command[command.index("--func") + 1] == f"{user_ode}:f"
    assert vars(build_parser().parse_args(command[1:])) == vars(build_parser().parse_args(argv))


def test_solve_user_module_with_y0_file(user_ode, tmp_path, monkeypatch):
    """``--func module:function`` finds the module in the current folder; ``--y0`` reads a .npy file (float32,
    cast to --dtype float64); an adaptive --method integrates each interval with its own step control."""
    seen = spy_solutions(monkeypatch)
    monkeypatch.chdir(user_ode.parent)
    np.save(tmp_path / "y0.npy", np.array([0.0, 1.0], dtype=np.float32))
    out = tmp_path / "out"
    assert main(["solve", "--func", "user_ode:f", "--y0", str(tmp_path / "y0.npy"), "--method", "bosh3", "-N", "4",
                 "--jacobian", "secant", "--repeats", "1", "-o", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["y0"] == str(tmp_path / "y0.npy") and stats["settings"]["substeps"] == 1
    assert stats["problem"]["y0"] == [0.0, 1.0] and stats["problem"]["method"] == "bosh3"
    seq, par = seen["sequential"][-1], converged(seen["solve"])
    assert seq.ys.dtype == torch.float64
    A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
    y0, t = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.linspace(0, 2, 5, dtype=torch.float64)
    exact = torch.stack([torch.linalg.matrix_exp(A * s) @ y0 for s in t])
    ref = torchdiffeq.odeint(lambda t, y: A @ y, y0, t, method="bosh3", rtol=1e-7, atol=1e-9)
    # Step control per interval is not torchdiffeq's over the whole span, so the two differ by their errors:
    # measured 1.6e-7 (per interval) and 2.0e-5 (torchdiffeq) against the closed form exp(A t) y0.
    torch.testing.assert_close(seq.ys, exact, atol=1e-6, rtol=0)
    torch.testing.assert_close(seq.ys, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(par.ys, seq.ys, atol=1e-7, rtol=0)


def test_solve_builtin_examples_by_name(tmp_path):
    """``--example lotka-volterra`` is selectable by name; every strategy reproduces its sequential solve."""
    out = tmp_path / "lv"
    assert main(["solve", "--example", "lotka-volterra", "-N", "4", "--substeps", "1", "--repeats", "1",
                 "--jacobian", "newton", "-o", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["problem"]["name"] == "lotka_volterra" and stats["settings"]["example"] == "lotka-volterra"
    assert stats["problem"]["y0"] == [1.0, 1.0] and stats["rows"][1]["converged"]


# -- imports have no side effects --------------------------------------------------------------------------

def test_imports_leave_the_matplotlib_backend_alone(tmp_path):
    """Importing the plots and every CLI module, and writing a figure with them, keeps the backend a user (or a
    notebook) chose: run in a fresh interpreter whose backend MPLBACKEND sets to svg."""
    script = textwrap.dedent(f"""\
        import matplotlib
        before = matplotlib.get_backend()
        import pitsolve.adapters.plots, pitsolve.adapters.cli
        from pitsolve.adapters.cli import checks, models, ode, options, problems, record, sample, table
        ode.plot([{{"strategy": "s", "error_per_iteration": [1.0, 1e-3]}}], 1e-17, {str(tmp_path / 'c.png')!r}, "t")
        print(before, matplotlib.get_backend())
        """)
    env = {**os.environ, "MPLBACKEND": "svg"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "svg"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_takes_the_largest_generator_seed(tmp_path):
    parser = cli_sample.add_arguments(argparse.ArgumentParser())
    cli_sample._check(parser.parse_args(["--seed", str(2**64 - 1), "--output", str(tmp_path / "out")]))
    torch.Generator().manual_seed(2**64 - 1)  # what the check promises torch takes
