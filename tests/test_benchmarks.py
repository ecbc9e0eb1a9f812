"""The benchmark runner: a tiny ode suite into a temporary folder, its files, header and columns."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib")
# benchmarks/ is a folder of the repository, not of the installed package: tests/conftest.py puts the
# repository on sys.path.

from benchmarks import run as runner  # noqa: E402
from benchmarks import suites  # noqa: E402

TINY = ["--suite", "ode", "--quick", "--repeats", "1", "--ode-problems", "vdp", "sde",
        "--ode-strategies", "identity", "zero", "--ode-intervals", "4", "8", "--ode-fine-steps", "16",
        "--ode-guard", "on"]
COLUMNS = ("problem", "strategy", "guard", "N", "K", "window", "status", "iterations", "depth", "ideal_speedup",
           "nfe_over_seq", "error", "wall_s", "seq_wall_s", "speedup", "worst_speedup")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    paths = runner.main([*TINY, "--out", str(out)])
    return out, paths


def test_files_are_written(written):
    out, paths = written
    names = {p.name for p in paths}
    assert {"ode.json", "ode.md"} <= names
    assert any(n.startswith("ode_") and n.endswith(".png") for n in names)
    for p in paths:
        assert p.parent == out and p.stat().st_size > 0


def test_json_header_states_machine_device_versions_command(written):
    out, _ = written
    data = json.loads((out / "ode.json").read_text())
    h = data["header"]
    assert h["suite"] == "ode" and h["quick"] is True
    assert h["command"].startswith("python -m benchmarks.run --suite ode --quick")
    assert {"platform", "cpu_count", "torch_threads"} <= set(h["machine"])
    assert h["device"]["name"] == "cpu"
    assert {"python", "torch", "diffusers", "pitsolve", "git_commit"} <= set(h["versions"])


def test_records_have_the_columns(written):
    out, _ = written
    records = json.loads((out / "ode.json").read_text())["records"]
    assert len(records) == 2 * 2 * 2  # problems × N × strategies (one guard setting, window = N)
    for r in records:
        assert set(COLUMNS) <= set(r), sorted(set(COLUMNS) - set(r))
        assert r["status"] == "CONVERGED"
        assert r["error"] < 1e-6  # the parallel solve reproduces the sequential one (tol 1e-8)
        assert r["depth"] <= r["N"] * r["K"] and r["speedup"] > 0
    assert {r["strategy"] for r in records} == {"identity", "zero"}


def test_markdown_has_header_and_tables(written):
    out, _ = written
    md = (out / "ode.md").read_text()
    assert "python -m benchmarks.run --suite ode --quick" in md
    assert "logical cores" in md and "torch threads" in md and "device: cpu" in md
    assert "torch" in md and "diffusers" in md and "pitsolve" in md and "git " in md
    assert "## Van der Pol" in md and "## double-well SDE" in md
    assert "| strategy | guard | N |" in md


def test_alternate_interleaves_baseline_and_contenders():
    calls = []
    timings = suites.alternate(lambda: calls.append("seq"), {"a": lambda: calls.append("a"),
                                                            "b": lambda: calls.append("b")}, repeats=2)
    assert calls == ["seq", "a", "seq", "b", "seq"] * 2
    assert len(timings["a"].times) == len(timings["a"].baseline) == 2
    assert timings["a"].speedup > 0


def test_relative_rms():
    import torch

    b = torch.ones(4)
    assert suites.relative_rms(b, b) == 0.0
    assert suites.relative_rms(b * 1.01, b) == pytest.approx(0.01)


@pytest.mark.parametrize("passing_from", range(0, 9))
def test_loosest_passing_bisects_to_the_loosest_tol_meeting_the_target(passing_from):
    """tols loosest first; runs at index >= passing_from meet the error target (error falls as tol tightens)."""
    from benchmarks.suites import diffusion

    tols = diffusion.TOLS
    calls = []

    def measure(tol):
        calls.append(tol)
        ok = tols.index(tol) >= passing_from
        return {"status": "CONVERGED", "error": 1e-3 if ok else 1.0}

    tol, run = diffusion.loosest_passing(measure, tols)
    if passing_from < len(tols):
        assert tol == tols[passing_from] and diffusion.meets(run)
    else:
        assert tol == tols[-1] and not diffusion.meets(run)
    assert len(calls) <= 4  # ⌈log₂ 9⌉ for 8 tolerances


@pytest.mark.slow
def test_loop_overhead_ratios_are_against_the_unet_only_loop():
    from benchmarks.suites import loop_overhead

    result = loop_overhead.measure(steps=3, rounds=1)
    rows = {r["loop"]: r for r in result["rows"]}
    assert set(rows) == {"unet only", "diffusers", "pitsolve"}
    floor = rows["unet only"]["seconds"]
    assert rows["unet only"]["ratio_to_unet_only"] == 1.0
    for r in rows.values():
        assert r["seconds"] > 0 and r["ratio_to_unet_only"] == pytest.approx(r["seconds"] / floor)
        assert r["ms_per_step"] == pytest.approx(1e3 * r["seconds"] / 3)


@pytest.mark.slow
def test_auto_window_report_records_the_pick_it_would_make(monkeypatch):
    from benchmarks.suites import auto_window
    from pitsolve._tuning import best_window

    monkeypatch.setattr(auto_window, "SAMPLERS", (("DDIM-4", "ddim", 4),))
    rows = auto_window.measure(tunings=1)
    assert len(rows) == 1
    curve = [(p, ms / 1e3) for p, ms in rows[0]["curve_ms"]]
    assert [p for p, _ in curve][:3] == [1, 2, 4][: len(curve)] and curve[-1][0] <= 4
    assert rows[0]["window"] == best_window(curve, 4, rows[0]["latency_sweeps"])


def test_oracle_curve_reaches_the_sequential_sample():
    """With tol 0 the error falls sweep by sweep, and by sweep T (exact in T sweeps) the final sample is the
    sequential one to float32 rounding, where the solve stops: every point has stopped changing."""
    from diffusers import DDIMScheduler

    import pitsolve
    from benchmarks.suites import oracle
    from pitsolve.adapters.digits import load_pipeline

    pipe = load_pipeline()
    errors = oracle.curve(pipe.unet.eval(), DDIMScheduler.from_config(pipe.scheduler.config), 4,
                          lambda: pitsolve.jacobians.Identity())
    assert len(errors) == 4 and errors[0] > 1e-2 and errors[-1] < 1e-5


def test_adjoint_benchmark_records_waves_memory_and_gradients(tmp_path):
    runner.main(["--suite", "adjoint", "--adjoint-intervals", "16", "--adjoint-windows", "0", "4",
                 "--adjoint-strategies", "dense", "identity", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "adjoint.json").read_text())["records"]
    methods = [r["method"] for r in rows]
    assert methods[:3] == ["backprop sequential", "torchdiffeq adjoint", "backprop solve"]
    assert methods.count("pitsolve adjoint") == 4  # 2 windows × 2 strategies
    for r in rows:
        assert r["grad_error"] < 1e-8 or r["method"] == "torchdiffeq adjoint"
    ours = {(r["strategy"], r["window"]): r for r in rows if r["method"] == "pitsolve adjoint"}
    assert ours["dense", 16]["waves"] == 3  # two sweeps and one parameter call
    assert ours["identity", 4]["saved_KiB"] < ours["identity", 16]["saved_KiB"]
    assert (tmp_path / "adjoint.json").exists() and "backward waves" in (tmp_path / "adjoint.md").read_text()


def test_new_cases_merge_into_an_existing_record(written, tmp_path):
    """``--ode-merge``: an adaptive problem and the backward passes added beside the rows of an earlier run."""
    import shutil

    out, _ = written
    shutil.copy(out / "ode.json", tmp_path / "ode.json")
    before = json.loads((tmp_path / "ode.json").read_text())
    runner.main(["--suite", "ode", "--quick", "--repeats", "1", "--ode-problems", "vdp_dopri5", "adjoint",
                 "--ode-strategies", "identity", "--ode-intervals", "4", "--ode-guard", "on", "--ode-time-cap", "60",
                 "--ode-merge", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "ode.json").read_text())
    kept = [r for r in data["records"] if r["problem"] in ("vdp", "sde")]
    assert kept == before["records"]  # unchanged, with the run that measured them
    assert all(r["_run"]["command"] == before["header"]["command"] for r in kept)
    adaptive = [r for r in data["records"] if r["problem"] == "vdp_dopri5"]
    assert len(adaptive) == 1 and adaptive[0]["status"] == "CONVERGED" and adaptive[0]["K"] is None
    methods = {r["method"] for r in data["records"] if r["problem"] == "adjoint"}
    assert {"backprop sequential", "torchdiffeq adjoint", "torchsde adjoint", "pitsolve adjoint"} <= methods
    md = (tmp_path / "ode.md").read_text()
    assert "## Runs" in md and "## backward pass: double-well SDE" in md and "backward waves" in md


def test_every_benchmark_is_a_suite_with_its_own_option_prefix():
    """One protocol: each suite has ``run``; its options are named ``--<suite>-…``; every other module of
    benchmarks/ is the runner, the record writer or an alias ``python -m benchmarks.<suite>``."""
    import argparse
    from pathlib import Path

    names = suites.available()
    assert set(suites.KNOWN) <= set(names)
    for name in names:
        module = suites.load(name)
        assert callable(module.run), name
        if hasattr(module, "add_arguments"):
            parser = argparse.ArgumentParser()
            module.add_arguments(parser)
            flags = [f for a in parser._actions for f in a.option_strings if f not in ("-h", "--help")]
            assert all(f.startswith(f"--{name.replace('_', '-')}-") for f in flags), (name, flags)
    folder = Path(runner.__file__).parent
    for path in folder.glob("*.py"):
        if path.stem not in ("__init__", "run", "_record"):
            assert path.stem in names and f'alias("{path.stem}", __name__)' in path.read_text(), path.name
