"""Smoke tests: every README snippet and the example script run as shipped (STYLE.md item 11)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import pitsolve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO = ROOT / "examples" / "ode_demo.py"

# A point is accepted when RMS(ΔX_n / s_n) <= tol with s_n = 1 + |X_n| (ODESystem's defaults).
# On the demo's Van der Pol orbit |X| <= 2 entrywise, so s_n <= 3 and the last update of each of
# the D = 2 entries is below sqrt(2)·3·tol ≈ 4.2·tol; the error left after it is about that update
# times 1/(1 − ρ) for a method contracting by ρ per sweep.  ERROR_BOUND = 100·tol leaves room for
# ρ up to ~0.95 (measured errors are ~1e-8 or smaller, see README "Demo output").
DEMO_TOL = 1e-8
ERROR_BOUND = 100 * DEMO_TOL


def readme_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_blocks()[index]
    exec(compile(code, f"README.md[python block {index}]", "exec"), {"__name__": f"readme_block_{index}"})


def load_demo():
    spec = importlib.util.spec_from_file_location("pitsolve_example_ode_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ode_demo_writes_plot_and_stats(tmp_path):
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--n-intervals", "16", "--substeps", "1", "--tol", str(DEMO_TOL), "--repeats", "1"]
    returned = load_demo().main(argv)

    png = out / "convergence.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads((out / "stats.json").read_text())
    assert stats == json.loads(json.dumps(returned))
    assert stats["problem"]["n_intervals"] == 16 and stats["problem"]["tol"] == DEMO_TOL

    rows = {r["strategy"]: r for r in stats["rows"]}
    assert set(rows) == {"sequential", *pitsolve.jacobians.REGISTRY}
    assert rows["sequential"]["max_abs_error"] == 0.0
    for name in pitsolve.jacobians.REGISTRY:
        r = rows[name]
        assert r["converged"], (name, r["status"])
        assert r["max_abs_error"] < ERROR_BOUND, (name, r["max_abs_error"])
        # Finite termination: at most N sweeps; the curve has one point per sweep and ends at the table's error.
        assert 1 <= r["iterations"] <= 16
        assert len(r["error_per_iteration"]) == r["iterations"]
        assert r["error_per_iteration"][-1] == r["max_abs_error"]
