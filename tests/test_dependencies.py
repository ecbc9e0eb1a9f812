"""The core installs and runs without the extras; the adapters name the extra they miss.

``pitsolve`` needs torch, torchdiffeq, torchsde, numpy and tqdm (pyproject.toml, ``dependencies``);
Diffusers, safetensors, Pillow, scikit-learn, SciPy and matplotlib belong to the extras
``pitsolve[diffusers]`` and ``pitsolve[plots]``.  A clean virtual environment cannot be built here
(torch comes from a local build), so the checks hide the optional libraries from a fresh
interpreter instead: before anything is imported, the path finder of ``sys.meta_path`` is replaced
by one that does not see them.  SciPy is installed with torchdiffeq and torchsde themselves (their
``Requires-Dist``), so it is refused to every importer but those two.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("diffusers", "safetensors", "PIL", "sklearn", "matplotlib", "transformers", "scipy")
# scipy may be imported by these (and by itself), never by pitsolve
SCIPY_USERS = ("torchdiffeq", "torchsde", "scipy")
# the children import this checkout's pitsolve, whatever the working directory
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))

# Runs first in the child: sys.meta_path's path finder is replaced by one that does not see the
# optional libraries, so they look uninstalled to ``import`` and to ``importlib.util.find_spec`` alike.
HIDE = f"""
import sys
from importlib.machinery import PathFinder

OPTIONAL = {OPTIONAL!r}
SCIPY_USERS = {SCIPY_USERS!r}


def _importer():
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")):
            return name
        frame = frame.f_back
    return ""


class HidingPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in OPTIONAL and not (top == "scipy" and _importer().startswith(SCIPY_USERS)):
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
assert HidingPathFinder in sys.meta_path
"""


def run_hidden(code: str) -> dict:
    """Run ``code`` in a fresh interpreter with the optional libraries hidden; return its JSON line."""
    out = subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hidden():
    """One child with the optional libraries hidden: a solve, then the imports of the adapters."""
    return run_hidden(
        f"""
import importlib, json
import torch
import pitsolve
import pitsolve.adapters.diffusion  # the model-library-free diffusion mathematics
import torchdiffeq

f = lambda t, y: -y + torch.sin(t)
t = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
y0 = torch.ones(2, dtype=torch.float64)
system = pitsolve.ODESystem(f, y0, t, method="rk4")
sol = pitsolve.solve(system, "newton", tol=1e-10)
reference = torchdiffeq.odeint(f, y0, t, method="rk4")  # the same grid
solved = [sol.converged, float((sol.ys - reference).abs().max())]
loaded = sorted({{m.partition(".")[0] for m in sys.modules}} & set({OPTIONAL!r}))

errors = {{}}
for name in ("pitsolve.adapters.diffusers", "pitsolve.adapters.digits", "pitsolve.adapters.plots"):
    try:
        importlib.import_module(name)
        errors[name] = None
    except ImportError as err:
        errors[name] = str(err)
print(json.dumps(dict(solved=solved, loaded=loaded, errors=errors)))
"""
    )


def test_core_imports_and_solves_without_the_extras(hidden):
    converged, err = hidden["solved"]
    # one RK4 step per interval, as torchdiffeq's rk4 on the same grid: equal up to round-off
    assert converged and err < 1e-10, hidden["solved"]
    # only SciPy, and only through torchdiffeq / torchsde
    assert set(hidden["loaded"]) <= {"scipy"}, hidden["loaded"]


def test_adapters_name_the_missing_extra(hidden):
    errors = hidden["errors"]
    assert errors["pitsolve.adapters.diffusers"].endswith('pip install "pitsolve[diffusers]"'), errors
    assert errors["pitsolve.adapters.digits"].endswith('pip install "pitsolve[diffusers]"'), errors
    assert errors["pitsolve.adapters.plots"].endswith('pip install "pitsolve[plots]"'), errors
    assert "needs diffusers" in errors["pitsolve.adapters.diffusers"]
    assert "needs matplotlib, PIL" in errors["pitsolve.adapters.plots"]


def test_plots_import_keeps_the_pyplot_backend():
    code = """
import json, sys
import matplotlib
matplotlib.use("svg")
from pitsolve.adapters import plots
print(json.dumps([matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == ["svg", False]


def test_core_source_imports_no_optional_library():
    """Every import statement under pitsolve/, also those inside functions (which a run may not reach)."""
    found = []
    for path in sorted((ROOT / "pitsolve").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.partition(".")[0] in OPTIONAL]
    assert found == []


def _wheel_tools_missing() -> str:
    """Why this interpreter cannot build a wheel offline (no build isolation), or ''."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return f"setuptools {setuptools.__version__} builds wheels only with the package wheel installed"
    return ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_wheel_tools_missing()), reason=_wheel_tools_missing() or "-")
def test_wheel_holds_every_subpackage_the_weights_and_only_the_core_requirements(tmp_path):
    """setup.py maps adapters/ to pitsolve.adapters with every subpackage found, none listed by hand."""
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for folder in ("pitsolve", "adapters"):
        shutil.copytree(ROOT / folder, src / folder, ignore=skip, symlinks=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "--wheel-dir", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pitsolve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        meta = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))

    def installed_as(path: Path) -> str:
        rel = path.relative_to(ROOT).as_posix()
        return "pitsolve/" + rel if rel.startswith("adapters/") else rel  # the mapping under test

    sources = [p for folder in ("pitsolve", "adapters") for p in (ROOT / folder).rglob("*.py")
               if "__pycache__" not in p.parts and not (ROOT / "pitsolve" / "adapters") in p.parents]
    weights = [p for name in ("weights", "weights_flow") for p in (ROOT / "adapters" / "digits" / name).rglob("*")
               if p.is_file()]
    assert len(weights) >= 10 and any(p.suffix == ".safetensors" for p in weights)
    missing = sorted({installed_as(p) for p in sources + weights} - names)
    assert missing == []
    packages = {installed_as(p.parent) for p in sources if p.name == "__init__.py"}
    assert {"pitsolve/adapters/diffusion/rules", "pitsolve/adapters/cli", "pitsolve/jacobians"} <= packages

    core = sorted(line.split()[1].split(">")[0].split("=")[0].split("<")[0] for line in meta.splitlines()
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert core == ["numpy", "torch", "torchdiffeq", "torchsde", "tqdm"]
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert extras == {"diffusers", "plots", "all", "test"}
