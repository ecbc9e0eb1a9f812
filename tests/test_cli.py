"""The command line: both commands run end to end on small sizes; bad options end in one line, exit 2."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

import pitsolve
from pitsolve.adapters.cli import build_parser, main
from pitsolve.adapters.cli import sample as cli_sample
from pitsolve.adapters.cli.ode import build_system
from pitsolve.adapters.cli.models import weights_digest

from diffusion_models import tiny_plain_unet as tiny_unet

pytestmark = pytest.mark.usefixtures("one_thread")

#: The fields both commands' stats.json start with (docs/cli.md, "The header").
HEADER = ("command", "versions", "threads", "device", "seed", "settings", "machine")


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++", "euler"])
def test_sample_end_to_end(tiny_pipeline, tmp_path, capsys, scheduler):
    out = tmp_path / "out"
    code = main(["sample", "--model", str(tiny_pipeline), "--scheduler", scheduler, "--steps", "8",
                 "--intervals", "4", "--window", "3", "--num-images", "2", "--tol", "1e-4", "--seed", "3",
                 "--output", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "sequential" in printed and "parallel (identity)" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["settings"]["seed"] == 3 and stats["settings"]["intervals"] == 4
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
        (["solve", "--window", "0"], "--window=0"),
        (["solve", "--n-intervals", "0"], "--n-intervals=0"),
    ],
)
def test_bad_options_one_line(tiny_pipeline, capsys, argv, message):
    argv = [str(tiny_pipeline) if a == "MODEL" else a for a in argv]
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
    assert main(["solve", "--n-intervals", "8", "--repeats", "1", "--out", str(tmp_path)]) == 0
    assert "anderson" in capsys.readouterr().out
    assert (tmp_path / "convergence.png").exists() and (tmp_path / "stats.json").exists()


# -- the JSON header: enough to reproduce the run ------------------------------------------------------

def small_sample(model, out, *extra):
    return ["sample", "--model", str(model), "--scheduler", "ddim", "--steps", "4", "--num-images", "1",
            "--output", str(out), "--no-progress", *extra]


def test_both_jsons_carry_the_header(tiny_pipeline, tmp_path):
    """A space in the output path survives the recorded command; both commands write the same header."""
    runs = {"sample": (small_sample(tiny_pipeline, tmp_path / "sample out"), tmp_path / "sample out", "--output"),
            "solve": (["solve", "--n-intervals", "4", "--repeats", "1", "--out", str(tmp_path / "solve out")],
                      tmp_path / "solve out", "--out")}
    for cmd, (argv, out, flag) in runs.items():
        assert main(argv) == 0
        stats = json.loads((out / "stats.json").read_text())
        assert list(stats)[:len(HEADER)] == list(HEADER), cmd
        command = shlex.split(stats["command"])
        assert command[:2] == ["pitsolve", cmd] and command[command.index(flag) + 1] == str(out)
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
    argv = ["solve", "--n-intervals", "6", "--t-end", "8", "--repeats", "1"]
    assert main([*argv, "--out", str(tmp_path / "on")]) == 0
    assert main([*argv, "--no-guard", "--out", str(tmp_path / "off")]) == 0
    on, off = (json.loads((tmp_path / k / "stats.json").read_text()) for k in ("on", "off"))
    assert off["settings"]["guard"] is False and "--no-guard" in shlex.split(off["command"])
    system = build_system(6, 2, torch.float64, 8.0)
    for row in on["rows"][1:]:
        sol = pitsolve.solve(system, row["strategy"], tol=1e-8, throw=False)
        assert row["fallbacks"] == [vars(f) for f in sol.fallbacks], row["strategy"]
        assert row["budget_sweeps"] == sol.budget_sweeps
    assert any(row["fallbacks"] or row["budget_sweeps"] for row in on["rows"])
    assert all(row["fallbacks"] == [] and row["budget_sweeps"] == 0 for row in off["rows"])


def test_cli_takes_the_largest_generator_seed(tmp_path):
    parser = cli_sample.add_arguments(argparse.ArgumentParser())
    cli_sample._check(parser.parse_args(["--seed", str(2**64 - 1), "--output", str(tmp_path / "out")]))
    torch.Generator().manual_seed(2**64 - 1)  # what the check promises torch takes
