"""The ODE ``pitsolve solve`` solves: a built-in example by name (``--example``) or the user's ``f(t, y)`` (``--func``).

``--func`` names a function ``f(t, y) -> dy/dt`` as for ``torchdiffeq.odeint``
(scalar tensor ``t``, state tensor ``y``, a tensor of ``y``'s shape back) in
one of two forms:

* ``MODULE:FUNCTION`` — an importable module (the current folder is searched
  first), e.g. ``--func mymodels.ode:rhs``;
* ``path/to/file.py:FUNCTION`` — a Python file, run as a module of its own
  (its folder is searched for the modules it imports).

``FUNCTION`` may be dotted (``model:Lorenz.f`` for an attribute of an object
the module defines).  ``--y0`` is comma-separated numbers (a 1-D state) or a
``.pt``/``.npy`` file holding a tensor of any shape; it is cast to ``--dtype``
and moved to ``--device``.  Before any solve, ``f`` is called once at
``(t0, y0)`` (as torchsde's ``check_contract`` does) and its output must have
``y0``'s shape.  Each failure is a typed error naming the value and the fix.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from pitsolve import InputTypeError, InputValueError

__all__ = ["Example", "EXAMPLES", "Problem", "load_func", "parse_y0", "check_contract", "resolve", "y0_record"]

#: The suffixes ``--y0`` reads as files.
Y0_FILES = (".pt", ".pth", ".npy")
#: ``stats.json`` records ``y0`` as a list up to this many numbers (its shape always).
Y0_RECORDED = 1000


# ----------------------------------------------------------------------------- the built-in examples
MU = 1.0
ALPHA, BETA, GAMMA, DELTA = 1.5, 1.0, 3.0, 1.0


def van_der_pol(t, y):
    """``x' = v,  v' = μ (1 − x²) v − x`` with μ = :data:`MU`."""
    x, v = y[0], y[1]
    return torch.stack([v, MU * (1 - x**2) * v - x])


def lotka_volterra(t, y):
    """``u' = α u − β u v,  v' = δ u v − γ v`` (prey u, predators v)."""
    u, v = y[0], y[1]
    return torch.stack([ALPHA * u - BETA * u * v, DELTA * u * v - GAMMA * v])


@dataclass(frozen=True)
class Example:
    """A built-in ODE: its right-hand side, default ``y0`` and the parameters recorded in stats.json."""

    func: Callable
    y0: Tuple[float, ...]
    label: str
    record: Dict[str, Any] = field(default_factory=dict)


#: ``--example`` name → the ODE.  Every example runs on the default span [0, 2].
EXAMPLES: Dict[str, Example] = {
    "vanderpol": Example(van_der_pol, (2.0, 0.0), f"Van der Pol (mu={MU})", {"name": "van_der_pol", "mu": MU}),
    "lotka-volterra": Example(lotka_volterra, (1.0, 1.0),
                              f"Lotka-Volterra (alpha={ALPHA}, beta={BETA}, gamma={GAMMA}, delta={DELTA})",
                              {"name": "lotka_volterra", "alpha": ALPHA, "beta": BETA, "gamma": GAMMA,
                               "delta": DELTA}),
}


@dataclass(frozen=True)
class Problem:
    """What ``pitsolve solve`` integrates: ``dy/dt = func(t, y)``, ``y(t0) = y0``."""

    func: Callable
    y0: torch.Tensor
    label: str
    record: Dict[str, Any]

    def shown_y0(self) -> str:
        """``y0`` for a title line: its values when few, else its shape."""
        if self.y0.numel() <= 6:
            return str(tuple(round(v, 6) for v in self.y0.flatten().tolist()))
        return f"a state of shape {tuple(self.y0.shape)}"


# ----------------------------------------------------------------------------- --func
def load_func(spec: str) -> Callable:
    """The function ``--func spec`` names (``MODULE:FUNCTION`` or ``path/to/file.py:FUNCTION``)."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name:
        raise InputValueError(
            f"--func {spec!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION, e.g. --func mymodel:f "
            "or --func ./ode.py:f."
        )
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    module = _load_file(Path(where), spec) if is_file else _import(where, spec)
    obj: Any = module
    for i, part in enumerate(name.split(".")):
        if not hasattr(obj, part):
            owner = ".".join([module.__name__, *name.split(".")[:i]]) if i else f"module {where!r}"
            found = sorted(k for k, v in vars(obj).items() if callable(v) and not k.startswith("_")) \
                if hasattr(obj, "__dict__") else []
            raise InputValueError(
                f"--func {spec}: {owner} has no attribute {part!r}; pass one of its functions"
                + (f" ({', '.join(found[:12])})" if found else "") + "."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputTypeError(
            f"--func {spec}: {name} in {where} is a {type(obj).__name__}, not callable; pass a function f(t, y) that "
            "returns dy/dt."
        )
    return obj


@contextlib.contextmanager
def _searched_first(folder: Path) -> Iterator[None]:
    """``folder`` at the front of ``sys.path`` for one import (a console script does not search the cwd)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import(name: str, spec: str) -> ModuleType:
    try:
        with _searched_first(Path.cwd()):
            return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and (name == err.name or name.startswith(err.name + ".")):
            raise InputValueError(
                f"--func {spec}: no module named {err.name!r} on the Python path or in the current folder "
                f"{Path.cwd()}; pass an importable module, or a file as --func path/to/"
                f"{name.rsplit('.', 1)[-1]}.py:{spec.rpartition(':')[2]}."
            ) from None
        raise _failed(spec, name, err) from None
    except Exception as err:  # the module's own code failed
        raise _failed(spec, name, err) from None


def _load_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise InputValueError(
            f"--func {spec}: there is no file {path}" + (f" (from {Path.cwd()})" if not path.is_absolute() else "")
            + "; pass an existing Python file, e.g. --func path/to/ode.py:f."
        )
    if path.suffix != ".py":
        raise InputValueError(f"--func {spec}: {path} is not a .py file; pass a Python file or MODULE:FUNCTION.")
    name = f"_pitsolve_func_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look the module up
    try:
        with _searched_first(path.resolve().parent):
            loader_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise _failed(spec, str(path), err) from None
    return module


def _failed(spec: str, where: str, err: BaseException) -> InputValueError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return InputValueError(
        f"--func {spec}: importing {where} raised {type(err).__name__}" + (f": {reason}" if reason else "")
        + "; fix that module (or install what it imports)."
    )


# ----------------------------------------------------------------------------- --y0
def parse_y0(text: str, dtype: torch.dtype, device: str) -> torch.Tensor:
    """``--y0``: comma-separated numbers (a 1-D state) or a ``.pt``/``.pth``/``.npy`` file holding a tensor."""
    if text.strip().lower().endswith(Y0_FILES):
        y0 = _read_y0(Path(text.strip()))
    else:
        numbers = [part.strip() for part in text.strip().strip("[]()").split(",")]
        values = []
        for part in numbers:
            try:
                values.append(float(part))
            except ValueError:
                raise InputValueError(
                    f"--y0 {text!r}: {part!r} is not a number; pass comma-separated numbers, e.g. --y0 2,0, "
                    f"or a {'/'.join(Y0_FILES)} file holding the tensor."
                ) from None
        y0 = torch.tensor(values, dtype=torch.float64)
    if y0.is_complex() or not (y0.is_floating_point() or y0.dtype in (torch.int32, torch.int64, torch.int16)):
        raise InputTypeError(f"--y0 {text}: a tensor of dtype {y0.dtype}; pass real numbers.")
    if y0.numel() == 0:
        raise InputValueError(f"--y0 {text!r}: an empty state; pass at least one number, e.g. --y0 1.")
    if not torch.isfinite(y0).all():
        raise InputValueError(f"--y0 {text!r}: not every value is finite; pass finite numbers.")
    return y0.to(dtype=dtype, device=device)


def _read_y0(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise InputValueError(f"--y0 {path}: there is no such file; pass an existing {'/'.join(Y0_FILES)} file "
                              "or comma-separated numbers, e.g. --y0 2,0.")
    try:
        if path.suffix.lower() == ".npy":
            value = np.load(path, allow_pickle=False)
        else:
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputValueError(f"--y0 {path}: the file could not be read ({type(err).__name__}: {reason}); "
                              "write it with torch.save(y0, path) or numpy.save(path, y0).") from None
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            raise InputTypeError(f"--y0 {path}: an array of dtype {value.dtype}; save real numbers.")
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(f"--y0 {path}: the file holds a {type(value).__name__}, not a tensor; "
                             "save the initial state itself, e.g. torch.save(y0, path).")
    return value


# ----------------------------------------------------------------------------- the contract
def check_contract(func: Callable, y0: torch.Tensor, t0: float, source: str) -> None:
    """Call ``func(t0, y0)`` once: it must run and return a tensor of ``y0``'s shape.

    ``source`` names the function in the messages, e.g. ``--func model:f`` or ``--example vanderpol``.
    """
    t = torch.tensor(t0, dtype=y0.dtype, device=y0.device)
    try:
        with torch.no_grad():
            out = func(t, y0.clone())
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputValueError(
            f"{source}: f(t0, y0) with y0 of shape {tuple(y0.shape)} raised {type(err).__name__}"
            + (f": {reason}" if reason else "") + "; f must take (t, y) with y shaped like --y0, as for "
            "torchdiffeq.odeint, so pass a --y0 of the shape f expects or fix f."
        ) from None
    if not isinstance(out, torch.Tensor):
        raise InputTypeError(f"{source}: f(t, y) returned a {type(out).__name__}, not a tensor; "
                             "return dy/dt as a tensor shaped like y.")
    if out.shape != y0.shape:
        raise InputValueError(
            f"{source}: f(t, y) returned shape {tuple(out.shape)} for --y0 of shape {tuple(y0.shape)}; "
            "pass a --y0 of the shape f works on, or make f return dy/dt shaped like y."
        )


def resolve(example: str, func: Optional[str], y0: Optional[str], t0: float, dtype: torch.dtype,
            device: str) -> Problem:
    """The problem of ``--example``/``--func`` with ``--y0``, its contract checked at ``t0``."""
    if func is None:
        chosen = EXAMPLES[example]
        state = (torch.tensor(chosen.y0, dtype=dtype, device=device) if y0 is None
                 else parse_y0(y0, dtype, device))
        if y0 is not None:
            check_contract(chosen.func, state, t0, f"--example {example}")
        return Problem(chosen.func, state, chosen.label, dict(chosen.record))
    if y0 is None:
        raise InputValueError(f"--func {func} needs --y0, its initial state; pass e.g. --y0 1,0 or --y0 y0.pt.")
    rhs = load_func(func)
    state = parse_y0(y0, dtype, device)
    check_contract(rhs, state, t0, f"--func {func}")
    return Problem(rhs, state, f"f = {func}", {"name": "func", "func": func})


def y0_record(y0: torch.Tensor) -> Dict[str, Any]:
    """``y0`` for stats.json: its shape, and its values up to :data:`Y0_RECORDED` numbers (else ``null``)."""
    return {"y0": y0.cpu().tolist() if y0.numel() <= Y0_RECORDED else None, "y0_shape": list(y0.shape)}
