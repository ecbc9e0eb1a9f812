"""The command line: both commands run end to end on small sizes; bad options end in one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from pitsolve.adapters.cli import main


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    folder = tmp_path_factory.mktemp("pipe")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpmsolver++"])
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
        main(["sample", "--scheduler", "euler"])
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
