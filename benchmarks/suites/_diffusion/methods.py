"""The parallel methods of the diffusion suite: a Jacobian strategy, an initialiser and a grid of settings each."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .models import Sampler


# -- methods ---------------------------------------------------------------------------------------------
# Grid values that depend on T are named functions; their docstring is how the report shows them.
def _T(T):
    """T"""
    return (T,)


def _sqrt_T(T):
    """round(√T)"""
    return (max(1, round(math.sqrt(T))),)


def _windows(T):
    """16, 32, 64, 128, and 96 for T ≥ 500 (capped at N)"""
    return (16, 32, 64, 96, 128) if T >= 500 else (16, 32, 64, 128)


def _T_half(T):
    """T, T/2"""
    return tuple(sorted({T, T // 2}))


def _windows_32_T(T):
    """32, 64, 128 (capped at N)"""
    return (32, 64, 128)


def _window_32(T):
    """32 (capped at N)"""
    return (32,)


def _windows_16_64(T):
    """16, 64 (capped at N)"""
    return (16, 64)


def _windows_16_T(T):
    """16, T (capped at N)"""
    return (16, T)


def _window_16(T):
    """16 (capped at N)"""
    return (16,)


def _affordable_jvp_sweep(sampler):
    """Newton's JVP sweep is sequential: p−1 JVPs per sweep, affordable for T ≤ 50."""
    return None if sampler.steps <= 50 else f"not affordable: p−1 sequential JVPs per sweep at T={sampler.steps}"


def _short_sampler(sampler):
    """The diagonal's Hutchinson JVP wave per sweep costs minutes per solve at T = 1000 on a 2-core CPU."""
    return None if sampler.steps <= 50 else f"not run at T={sampler.steps}: a JVP wave per sweep (CPU time budget)"


def _always(sampler):
    return None


@dataclass(frozen=True)
class Method:
    """A parallel method: a strategy, an initialiser and the settings searched.

    ``grid`` maps a knob to its values, or to a function of ``T`` giving them
    (its docstring describes it in the report); knobs: ``intervals`` (N),
    ``window`` (capped at N), ``M`` (preconditioning steps of the Eq. 17
    initialiser) and any keyword of the strategy's class (e.g. ``history``
    for Anderson).  ``quick_grid`` replaces it in quick mode.
    ``when(sampler)`` returns ``None`` if the method runs on that sampler, or
    the reason it is skipped.  ``pick``: ``"depth"`` (lowest depth, then NFE)
    or ``"wall"`` (fastest single run) among the grid points meeting the
    error target.
    """

    key: str
    label: str
    jacobian: str  # a name in pitsolve.jacobians.REGISTRY
    init: str  # "constant" (copy X_start forward), "posterior" (Eq. 17) or "coarse"
    grid: Mapping = field(default_factory=dict)
    quick_grid: Optional[Mapping] = None
    pick: str = "depth"
    when: Callable[[Sampler], Optional[str]] = _always


#: ``scale_floor``: the stopping rule's scale ``max(σ_{t_n}, c)`` (None: σ_{t_n}, Eq. 14); ``M = 0``: copy-forward.
_FLOORS = (None, 1.0)
_PARASOLVER_GRID = {"intervals": _T_half, "M": (1, 2), "window": _windows, "scale_floor": _FLOORS}
_PARASOLVER_QUICK = {"intervals": _T, "M": (1, 2), "window": _window_32}

#: The methods every sampler is solved with; append a Method to add a configuration.
METHODS: Tuple[Method, ...] = (
    Method("picard", "Picard (ParaDiGMS: identity, N=T, copy-forward)", "identity", "constant",
           grid={"intervals": _T, "window": _windows}, quick_grid={"intervals": _T, "window": _window_32}),
    Method("parasolver", "ParaSolver (identity, Eq. 17), lowest depth", "identity", "posterior",
           grid=_PARASOLVER_GRID, quick_grid=_PARASOLVER_QUICK),
    Method("parasolver-fastest", "ParaSolver (identity, Eq. 17), fastest", "identity", "posterior",
           grid=_PARASOLVER_GRID, quick_grid=_PARASOLVER_QUICK, pick="wall"),
    Method("taa", "Anderson / TAA (Eq. 17 or copy-forward start)", "anderson", "posterior",
           grid={"M": (0, 1), "history": (2, 4), "window": _windows_32_T, "scale_floor": _FLOORS},
           quick_grid={"M": (1,), "history": (4,), "window": _window_32}),
    Method("secant", "multi-secant Broyden (Eq. 17 or copy-forward start)", "secant", "posterior",
           grid={"M": (0, 1), "history": (1, 2), "window": _windows_32_T, "scale_floor": (None, 0.5, 1.0)},
           quick_grid={"M": (0,), "history": (2,), "window": _window_32, "scale_floor": (1.0,)}),
    Method("auto", "ParaSolver (identity, Eq. 17, M=1) with window='auto' (the device's batch-cost curve)",
           "identity", "posterior", grid={"M": (1,), "window": ("auto",), "scale_floor": _FLOORS},
           quick_grid={"M": (1,), "window": ("auto",)}, pick="wall"),
    Method("srds", "Parareal (SRDS: N=√T, coarse start)", "parareal", "coarse",
           grid={"intervals": _sqrt_T}, quick_grid={"intervals": _sqrt_T}),
    Method("diagonal", "diagonal / quasi-DEER (Hutchinson probes, Eq. 17, M=1)", "diagonal", "posterior",
           grid={"M": (1,), "window": _windows_16_64}, quick_grid={"M": (1,), "window": _window_16},
           when=_short_sampler),
    Method("newton", "Newton (exact JVPs, Eq. 17, M=1)", "newton", "posterior",
           grid={"M": (1,), "window": _windows_16_T}, quick_grid={"M": (1,), "window": _window_16},
           when=_affordable_jvp_sweep),
)

_SOLVE_KNOBS = ("intervals", "window", "M", "scale_floor")


def grid_points(method: Method, T: int, quick: bool) -> List[Dict]:
    """The method's settings to search on T steps, windows capped at N, duplicates dropped."""
    grid = method.quick_grid if (quick and method.quick_grid is not None) else method.grid
    points = [{}]
    for knob, values in grid.items():
        values = values(T) if callable(values) else values
        points = [{**p, knob: v} for p in points for v in values]
    out = []
    for p in points:
        p = dict(p)
        p.setdefault("intervals", T)
        if p.get("window") != "auto":
            p["window"] = min(p.get("window", p["intervals"]), p["intervals"])
        if method.init != "posterior":
            p.pop("M", None)
        if p not in out:
            out.append(p)
    return out


def config_text(point: Mapping) -> str:
    extra = [f"{k}={v}" for k, v in point.items() if k not in _SOLVE_KNOBS]
    m = f" / M={point['M']}" if "M" in point else ""
    c = f" / c={point['scale_floor']:g}" if point.get("scale_floor") is not None else ""
    return f"N={point['intervals']} / p={point['window']}{m}{c}" + (" / " + ", ".join(extra) if extra else "")


def solver_options(method: Method, point: Mapping, tol: float) -> Dict:
    """Keywords of ``parallel_sample`` for one grid point (fresh strategy and initialiser objects)."""
    import pitsolve
    from pitsolve.adapters.diffusion import PosteriorInit

    strategy_kw = {k: v for k, v in point.items() if k not in _SOLVE_KNOBS}
    jacobian = pitsolve.jacobians.REGISTRY[method.jacobian](**strategy_kw)
    init = PosteriorInit(point["M"]) if method.init == "posterior" else method.init
    return dict(jacobian=jacobian, init=init, intervals=point["intervals"], window=point["window"], tol=tol,
                scale_floor=point.get("scale_floor"))
