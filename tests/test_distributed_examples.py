"""The torchrun examples run as shipped (STYLE.md item 11): 2 gloo ranks on this machine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.distributed
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(script: str, *args: str) -> str:
    if not TORCHRUN.exists():
        pytest.skip(f"no torchrun next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(ROOT / "examples" / script), "--backend", "gloo",
         *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_distributed_ode_example():
    out = torchrun("distributed_ode.py", "--n-intervals", "24", "--substeps", "2", "--timeout", "60")
    assert "2 ranks (gloo): Solution(status=CONVERGED" in out, out
    error = float(re.search(r"max \|parallel - sequential\| = (\S+)", out).group(1))
    assert error < 1e-6


def test_distributed_diffusion_example():
    out = torchrun("distributed_diffusion.py", "--steps", "10", "--tol", "1e-6", "--timeout", "60")
    assert "2 ranks (gloo): Solution(status=CONVERGED" in out, out
    error = float(re.search(r"same noise\): (\S+)", out).group(1))
    assert error < 1e-4
