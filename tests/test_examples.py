"""Smoke tests: every README and docs/*.md snippet and the example script run as shipped (STYLE.md item 11).

Every ```python block runs in a fresh namespace, in a temporary working directory.  A block whose
fence is directly preceded by the line ``<!-- continues the previous block -->`` is a continuation
(e.g. a function defined in one block and called in the next): it runs after the block(s) it
continues, in their namespace.
"""

from __future__ import annotations

import json
import re

import pytest

import pitsolve

from conftest import ROOT, load_example

README = ROOT / "README.md"
DOCS = ROOT / "docs"

# A point is accepted when RMS(ΔX_n / s_n) <= tol with s_n = 1 + |X_n| (ODESystem's defaults).
# On the demo's Van der Pol orbit |X| <= 2 entrywise, so s_n <= 3 and the last update of each of
# the D = 2 entries is below sqrt(2)·3·tol ≈ 4.2·tol; the error left after it is about that update
# times 1/(1 − ρ) for a method contracting by ρ per sweep.  ERROR_BOUND = 100·tol leaves room for
# ρ up to ~0.95 (measured errors are ~1e-8 or smaller, see README "Demo output").
DEMO_TOL = 1e-8
ERROR_BOUND = 100 * DEMO_TOL

#: The line that marks a ```python block as the continuation of the one before it.
CONTINUES = "<!-- continues the previous block -->"


def python_blocks(path):
    """``(code, continues)`` for every ```python block of a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        blocks.append((match.group(1), before.strip() == CONTINUES))
    return blocks


def readme_blocks():
    return [code for code, _ in python_blocks(README)]


def docs_blocks():
    """``(file name, block index)`` of every ```python block in docs/*.md (whatever pages exist)."""
    return [(page.name, i) for page in sorted(DOCS.glob("*.md")) for i in range(len(python_blocks(page)))]


def run_block(path, index):
    """Run block ``index`` of ``path`` in a fresh namespace, after the blocks it continues."""
    blocks = python_blocks(path)
    first = index
    while blocks[first][1]:
        assert first > 0, f"{path.name}: python block 0 cannot continue a previous block"
        first -= 1
    namespace = {"__name__": f"{path.stem}_block_{index}"}
    for i in range(first, index + 1):
        exec(compile(blocks[i][0], f"{path.name}[python block {i}]", "exec"), namespace)


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_block(README, index)


def test_docs_have_python_blocks():
    pages = {page for page, _ in docs_blocks()}
    assert {"index.md", "strategies.md", "api.md", "diffusers.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize("page, index", docs_blocks(), ids=[f"{p}-{i}" for p, i in docs_blocks()])
def test_docs_block_runs(page, index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_block(DOCS / page, index)


@pytest.mark.slow
def test_ode_demo_writes_plot_and_stats(tmp_path):
    out = tmp_path / "demo"
    argv = ["--output", str(out), "--intervals", "16", "--substeps", "1", "--tol", str(DEMO_TOL), "--repeats", "1"]
    returned = load_example("ode_demo").main(argv)

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


def test_neural_ode_spiral_losses_agree_with_torchdiffeq():
    """Tiny settings: both trainings see the same weights and batches; their losses differ by rk4's error."""
    summary = load_example("neural_ode_spiral").main(["--niters", "3", "--data-size", "200", "--batch-time", "8", "--batch-size", "4",
                           "--print-every", "1"])
    theirs, ours = summary["losses"]["torchdiffeq"], summary["losses"]["pitsolve"]
    assert len(theirs) == len(ours) == 3
    assert summary["largest_relative_loss_difference"] < 1e-6
    assert summary["backward_waves_median"] <= summary["N"] + 1
    assert summary["saved_bytes_first_step"]["pitsolve"] > 0
