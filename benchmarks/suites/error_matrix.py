"""Suite ``error_matrix``: does ``tol`` bound the error?  Both acceptance rules against the sequential result,
on ODEs and diffusion samplers.

    python -m benchmarks.run --suite error_matrix          # the full matrix (alias: python -m benchmarks.error_matrix)
    python -m benchmarks.run --suite error_matrix --quick  # smoke-test sizes, into benchmarks/results/quick/

``pitsolve.solve(system, strategy, tol=tol, stopping=rule, throw=False)``
with the default guard and window, for ``rule`` in ``("error", "eq14")``
(:mod:`pitsolve._acceptance`), against ``pitsolve.sequential(system)``:

* **ODE part** (float64): every strategy of ``pitsolve.jacobians.REGISTRY``
  × tol ∈ {1e-2, 1e-4, 1e-6, 1e-8} on a slow decay, Van der Pol μ = 10 and
  μ = 1, Lorenz-63 on [0, 20] (and on [0, 10] for the strategies too slow
  for N = 1000), a stiff non-normal linear system and two problems of the
  ``ode`` suite.  Metrics: the relative RMS error over the whole trajectory
  ``‖ys − ref‖_F / ‖ref‖_F`` and the solver's own measure
  ``max_n system.error_ratio(ys[n], ref[n])`` (the quantity the ``"error"``
  rule promises to keep ≤ tol).
* **Diffusion part**: the bundled digits DDPM (``pitsolve.adapters.digits``)
  with DDPM-100, DDIM-50 and DPM-Solver++-25, one image per seed, N = T,
  the Eq. 17 start with M = 1 (as ``parallel_sample``), jacobian
  ``identity`` (and ``zero`` on DDPM), tol ∈ {1e-1, 3e-2, 1e-2, 1e-3}.
  ``parallel_sample`` takes no ``stopping=``, so the system is built with
  ``build_system`` and solved by ``pitsolve.solve`` as ``parallel_sample``
  does.  Metric: the relative RMS error of the final sample against the
  sequential sample with the same noise; the solver's measure over the
  trajectory is recorded too.

A run taking longer than the cap is stopped (a callback raises) and recorded
as skipped; tighter tolerances of the same (problem, strategy, rule) are then
skipped without running.  Exceptions raised by pitsolve are recorded with
their traceback (status ``ERROR``).  Subnormal floats are flushed to zero
(``torch.set_flush_denormal(True)``) and torch runs on one thread (the flush
acts on the calling thread only): without them some sweeps of the digits
UNet on DDPM run 10–100× slower on a 2-core CPU.

``error_matrix.json`` holds every run (a crash with its ``_traceback``);
``error_matrix.md`` the summaries only (``RECORD_TABLES = False``).
"""

from __future__ import annotations

import json
import math
import statistics
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import _record
from .ode import AllenCahn, lorenz  # the ode suite's problems

TITLE = "Does `tol` bound the error? Acceptance rules `error` and `eq14` against the sequential result"
RECORD_TABLES = False  # hundreds of runs: the Markdown holds the summaries of sections(), the JSON every run
DT = torch.float64
RULES = ("error", "eq14")
ODE_TOLS = (1e-2, 1e-4, 1e-6, 1e-8)
DIFF_TOLS = (1e-1, 3e-2, 1e-2, 1e-3)
TARGETS = (1e-2, 1e-4)
CAP = 20.0  # seconds a run may take before it is stopped and recorded as skipped
QUICK_CAP = 5.0
SEEDS = 8
QUICK_SEEDS = 2
LOOSE = 3.0  # "CONVERGED runs with error ≤ LOOSE × tol"


# -- ODE problems ----------------------------------------------------------------------------------------
def van_der_pol(mu: float):
    def f(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])

    return f


class Linear:
    """``y' = A y``."""

    def __init__(self, A: torch.Tensor):
        self.A = A

    def __call__(self, t, y):
        return self.A.to(y) @ y


def _grid(t_end: float, N: int) -> torch.Tensor:
    return torch.linspace(0.0, t_end, N + 1, dtype=DT)


def _slow(quick):
    import pitsolve

    N = 200 if quick else 1000
    return pitsolve.ODESystem(lambda t, y: -0.001 * y, torch.ones(1, dtype=DT), _grid(N / 10, N))


def _vdp10(quick):
    import pitsolve

    return pitsolve.ODESystem(van_der_pol(10.0), torch.tensor([2.0, 0.0], dtype=DT),
                              _grid(10.0 if quick else 30.0, 100 if quick else 300), method="rk4", substeps=4)


def _lorenz(t_end, N):
    def build(quick):
        import pitsolve

        return pitsolve.ODESystem(lorenz, torch.tensor([1.0, 1.0, 1.0], dtype=DT),
                                  _grid(t_end / 4 if quick else t_end, N // 4 if quick else N), method="rk4")

    return build


def _stiff(quick):
    import pitsolve

    A = torch.tensor([[-1.0, 50.0], [0.0, -2.0]], dtype=DT)
    return pitsolve.ODESystem(Linear(A), torch.tensor([0.0, 1.0], dtype=DT), _grid(10.0, 50 if quick else 200),
                              method="rk4", substeps=2)


def _vdp1(quick):
    import pitsolve

    return pitsolve.ODESystem(van_der_pol(1.0), torch.tensor([2.0, 0.0], dtype=DT), _grid(10.0, 50 if quick else 200),
                              method="rk4")


def _suite_lorenz(quick):
    import pitsolve

    return pitsolve.ODESystem(lorenz, torch.tensor([-8.0, 8.0, 27.0], dtype=DT), _grid(1.0, 32), method="rk4",
                              substeps=8)


def _allen_cahn(quick):
    import pitsolve

    x = torch.arange(32, dtype=DT) / 32
    u0 = 0.5 * torch.sin(2 * math.pi * x) + 0.3 * torch.cos(6 * math.pi * x)
    return pitsolve.ODESystem(AllenCahn(), u0, _grid(4.0, 32), method="rk4", substeps=8)


@dataclass(frozen=True)
class Problem:
    key: str
    label: str
    build: Callable[[bool], object]
    only: Optional[Tuple[str, ...]] = None  # strategies run on it (None: all)
    skip: Optional[Tuple[Tuple[str, ...], str]] = None  # (strategies, reason) recorded as skipped


_SLOW_ON_LONG = ("newton", "dense", "parareal")

#: Cheap problems first, so the cap's skips fall on the expensive ones.
PROBLEMS: Tuple[Problem, ...] = (
    Problem("vdp1", "Van der Pol mu=1, t in [0, 10], N=200, rk4 K=1 (benign)", _vdp1),
    Problem("stiff", "non-normal linear y'=Ay, A=[[-1,50],[0,-2]], y0=(0,1), t in [0, 10], N=200, rk4 K=2", _stiff),
    Problem("suite_lorenz", "ode suite: Lorenz-63 from (-8,8,27), t in [0, 1], N=32, rk4 K=8", _suite_lorenz),
    Problem("suite_allen_cahn", "ode suite: Allen-Cahn, 32 points, t in [0, 4], N=32, rk4 K=8", _allen_cahn),
    Problem("slow", "slow decay y'=-0.001y, t in [0, 100], N=1000, rk4 K=1", _slow),
    Problem("vdp10", "Van der Pol mu=10, t in [0, 30], N=300, rk4 K=4", _vdp10),
    Problem("lorenz20", "Lorenz-63 from (1,1,1), t in [0, 20], N=1000, rk4 K=1", _lorenz(20.0, 1000),
            skip=(_SLOW_ON_LONG, "run on lorenz10 (N=1000 too slow for these on a 2-core CPU)")),
    Problem("lorenz10", "Lorenz-63 from (1,1,1), t in [0, 10], N=500, rk4 K=1", _lorenz(10.0, 500),
            only=("identity",) + _SLOW_ON_LONG),
)


# -- measuring -------------------------------------------------------------------------------------------
class _Deadline(Exception):
    pass


def _flat(system, ys) -> torch.Tensor:
    return system.spec.flatten_batch(ys).detach()


def _metrics(system, ys, ref_ys) -> Tuple[float, float]:
    """(relative Frobenius error over the trajectory, max_n system.error_ratio(ys[n], ref[n]))."""
    a, b = _flat(system, ys).double(), _flat(system, ref_ys).double()
    rel = float((a - b).norm() / b.norm()) if float(b.norm()) > 0 else float((a - b).norm())
    idx = torch.arange(a.shape[0], device=a.device)
    with torch.no_grad():
        ratio = system.error_ratio(_flat(system, ys), _flat(system, ref_ys), idx)
    return rel, float(ratio.double().max())


def _solve(system, jacobian, tol, rule, cap, init=None):
    import pitsolve

    started = time.perf_counter()

    def deadline(_):
        if time.perf_counter() - started > cap:
            raise _Deadline

    with torch.no_grad():
        sol = pitsolve.solve(system, jacobian, tol=tol, stopping=rule, throw=False, callback=deadline,
                             **({"init": init} if init is not None else {}))
    return sol, time.perf_counter() - started


def _solution_fields(sol) -> Dict:
    return {
        "status": sol.status.name,
        "converged": bool(sol.converged),
        "iterations": sol.iterations,
        "depth": sol.depth,
        "nfe": sol.nfe,
        "error_estimate": sol.error_estimate,
        "fallbacks": ">".join(f.target for f in sol.fallbacks) or None,
        "budget_sweeps": sol.budget_sweeps,
    }


class Matrix:
    """Runs, with the cascade skip: a (case, strategy, rule) that hit the cap skips its tighter tolerances."""

    def __init__(self, cap: float):
        self.cap = cap
        self.records: List[Dict] = []
        self.crashes: List[Dict] = []
        self._capped = set()

    def run(self, base: Dict, group: Tuple, call: Callable[[], Dict]) -> Dict:
        row = dict(base)
        if group in self._capped:
            row["status"] = "skipped: a looser tol of this case ran over the cap"
        else:
            try:
                row.update(call())
            except _Deadline:
                row["status"] = f"skipped: over the {self.cap:g} s cap"
                self._capped.add(group)
            except Exception as err:  # a crash of pitsolve: recorded with its traceback
                tb = traceback.format_exc()
                row["status"] = f"ERROR: {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
                row["_traceback"] = tb
                self.crashes.append({**base, "traceback": tb})
        self.records.append(row)
        print(_line(row), flush=True)
        return row


def _line(r: Dict) -> str:
    head = (f"{r['part']:4} {r['case']:>16} {r['strategy']:>9} tol {r['tol']:.0e} {r['rule']:5}"
            + (f" seed {r['seed']}" if "seed" in r else ""))
    if "depth" not in r:
        return f"{head}  {r['status']}"
    est = r.get("error_estimate")
    return (f"{head}  {r['status']:>11} it {r['iterations']:4d} depth {r['depth']:5d} "
            f"est {est if est is None else f'{est:.1e}'} err {r['error']:.1e} measure {r['measure']:.1e} "
            f"{r['wall_s']:.2f}s")


def ode_part(matrix: Matrix, quick: bool, strategies: Sequence[str]) -> None:
    import pitsolve

    for problem in PROBLEMS:
        system = problem.build(quick)
        with torch.no_grad():
            ref = pitsolve.sequential(system)
        seq_depth = system.num_intervals * system.steps_per_interval
        for name in strategies:
            base = {"part": "ode", "case": problem.key, "strategy": name, "N": system.num_intervals,
                    "seq_depth": seq_depth}
            if problem.only is not None and name not in problem.only:
                continue
            if problem.skip is not None and name in problem.skip[0]:
                for tol in ODE_TOLS:
                    for rule in RULES:
                        row = {**base, "tol": tol, "rule": rule, "status": f"skipped: {problem.skip[1]}"}
                        matrix.records.append(row)
                continue
            for rule in RULES:
                for tol in ODE_TOLS:  # loosest first, for the cascade skip
                    def call(tol=tol, rule=rule, name=name):
                        sol, wall = _solve(system, name, tol, rule, matrix.cap)
                        if sol.status is pitsolve.Status.NONFINITE:
                            err = measure = float("nan")
                        else:
                            err, measure = _metrics(system, sol.ys, ref.ys)
                        return {**_solution_fields(sol), "error": err, "measure": measure, "wall_s": wall}

                    matrix.run({**base, "tol": tol, "rule": rule}, ("ode", problem.key, name, rule), call)


# -- diffusion -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampler:
    key: str
    kind: str
    steps: int
    strategies: Tuple[str, ...]

    def scheduler(self, config):
        """The Diffusers scheduler of this kind (the diffusion suite's sampler table)."""
        from benchmarks.suites.diffusion import Sampler as SuiteSampler

        return SuiteSampler(self.key, self.kind, self.steps).scheduler(config)


SAMPLERS = (Sampler("DDPM-100", "ddpm", 100, ("identity", "zero")), Sampler("DDIM-50", "ddim", 50, ("identity",)),
            Sampler("DPM++-25", "dpm++", 25, ("identity",)))
QUICK_SAMPLERS = (Sampler("DDPM-50", "ddpm", 50, ("identity", "zero")), Sampler("DDIM-25", "ddim", 25, ("identity",)),
                  Sampler("DPM++-25", "dpm++", 25, ("identity",)))


def diffusion_part(matrix: Matrix, quick: bool, seeds: int) -> None:
    import pitsolve
    from pitsolve.adapters.diffusers import build_system
    from pitsolve.adapters.diffusion import PosteriorInit
    from pitsolve.adapters.digits import load_pipeline

    pipe = load_pipeline("cpu")
    unet, config = pipe.unet.eval(), dict(pipe.scheduler.config)
    for sampler in (QUICK_SAMPLERS if quick else SAMPLERS):
        scheduler = sampler.scheduler(config)

        def build(seed):
            return build_system(unet, scheduler, num_inference_steps=sampler.steps,
                                generator=torch.Generator().manual_seed(seed), shape=(1, 1, 16, 16))

        for seed in range(seeds):
            system = build(seed)
            with torch.no_grad():
                ref = pitsolve.sequential(system)
            ref_sample = ref.y[0]
            for name in sampler.strategies:
                base = {"part": "diff", "case": sampler.key, "strategy": name, "seed": seed, "N": sampler.steps,
                        "seq_depth": sampler.steps}
                for rule in RULES:
                    for tol in DIFF_TOLS:
                        def call(tol=tol, rule=rule, name=name):
                            sys_ = build(seed)  # fresh, as parallel_sample builds it
                            sol, wall = _solve(sys_, name, tol, rule, matrix.cap, init=PosteriorInit(1))
                            if sol.status is pitsolve.Status.NONFINITE:
                                err = traj = measure = float("nan")
                            else:
                                sample = sol.y[0]
                                err = float((sample - ref_sample).double().norm() / ref_sample.double().norm())
                                traj, measure = _metrics(sys_, sol.ys, ref.ys)
                            return {**_solution_fields(sol), "error": err, "trajectory_error": traj,
                                    "measure": measure, "wall_s": wall}

                        matrix.run({**base, "tol": tol, "rule": rule}, ("diff", sampler.key, name, rule, seed), call)


# -- summaries -------------------------------------------------------------------------------------------
def _done(r: Dict) -> bool:
    return "depth" in r and r.get("error") is not None and not math.isnan(r["error"])


def _frac(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.0f}%)" if n else "—"


def rule_summary(records: Sequence[Dict], title: str, listed: bool = True) -> List[str]:
    lines = [f"### {title}", "",
             "| rule | runs | error ≤ tol | solver measure ≤ tol | CONVERGED | CONVERGED with error ≤ 3·tol | "
             "CONVERGED with measure ≤ 3·tol | statuses |", "|---|---|---|---|---|---|---|---|"]
    outliers = {}
    for rule in RULES:
        rows = [r for r in records if r["rule"] == rule]
        done = [r for r in rows if _done(r)]
        conv = [r for r in done if r["status"] == "CONVERGED"]
        within = sum(r["error"] <= r["tol"] for r in done)
        within_m = sum(r["measure"] <= r["tol"] for r in done if not math.isnan(r["measure"]))
        loose = sum(r["error"] <= LOOSE * r["tol"] for r in conv)
        loose_m = sum(r["measure"] <= LOOSE * r["tol"] for r in conv)
        counts: Dict[str, int] = {}
        for r in rows:
            s = r["status"].split(":")[0] if r["status"].startswith(("skipped", "ERROR")) else r["status"]
            counts[s] = counts.get(s, 0) + 1
        lines.append(f"| {rule} | {len(done)} | {_frac(within, len(done))} | {_frac(within_m, len(done))} | "
                     f"{len(conv)} | {_frac(loose, len(conv))} | {_frac(loose_m, len(conv))} | "
                     + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + " |")
        outliers[rule] = [r for r in conv if r["error"] > LOOSE * r["tol"] or r["measure"] > LOOSE * r["tol"]]
    lines.append("")
    for rule in RULES:
        out = outliers[rule]
        lines.append(f"CONVERGED runs of rule `{rule}` with error or solver measure > 3·tol: {len(out)}"
                     + ("" if listed or not out else " (listed per part above)"))
        if out and listed:
            lines += ["", "| case | strategy | tol | seed | iterations | depth | error estimate | error | error/tol | "
                      "measure | measure/tol | fallbacks |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in sorted(out, key=lambda r: -max(r["error"], r["measure"]) / r["tol"]):
                lines.append(f"| {r['case']} | {r['strategy']} | {r['tol']:g} | {r.get('seed', '—')} | "
                             f"{r['iterations']} | {r['depth']} | {_record.fmt(r['error_estimate'])} | "
                             f"{r['error']:.2e} | {r['error'] / r['tol']:.3g} | {r['measure']:.2e} | "
                             f"{r['measure'] / r['tol']:.3g} | {r.get('fallbacks') or ''} |")
        lines.append("")
    return lines


def depth_table(records: Sequence[Dict], part: str) -> List[str]:
    """Per (case, strategy): the least depth over the tol grid whose run(s) reach each error target, per rule.

    Diffusion: a tol qualifies when every seed's error is ≤ the target; its depth is the mean over the seeds.
    A trailing ``*``: the qualifying run (or a seed of it) was not CONVERGED.
    """
    lines = ["| case | strategy | seq depth | "
             + " | ".join(f"e ≤ {e:g}, rule error | e ≤ {e:g}, rule eq14" for e in TARGETS) + " |",
             "|---|---|---|" + "---|---|" * len(TARGETS)]
    rows = [r for r in records if r["part"] == part]
    for case, strategy in dict.fromkeys((r["case"], r["strategy"]) for r in rows):
        mine = [r for r in rows if r["case"] == case and r["strategy"] == strategy]
        cells = []
        for e in TARGETS:
            for rule in RULES:
                best = None
                for tol in dict.fromkeys(r["tol"] for r in mine):
                    runs = [r for r in mine if r["rule"] == rule and r["tol"] == tol]
                    if not runs or not all(_done(r) and r["error"] <= e for r in runs):
                        continue
                    depth = statistics.mean(r["depth"] for r in runs)
                    flag = "" if all(r["status"] == "CONVERGED" for r in runs) else "*"
                    if best is None or depth < best[0]:
                        best = (depth, tol, flag)
                cells.append("—" if best is None else f"{best[0]:.0f}{best[2]} (tol {best[1]:g})")
        lines.append(f"| {case} | {strategy} | {mine[0]['seq_depth']} | " + " | ".join(cells) + " |")
    return lines


def ode_table(records: Sequence[Dict]) -> List[str]:
    """Every ODE run, the two rules side by side."""
    rows = [r for r in records if r["part"] == "ode"]
    lines = ["| problem | strategy | tol | error: status | depth | estimate | error | measure | wall [s] | "
             "eq14: status | depth | error | measure | wall [s] |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, strategy, tol in dict.fromkeys((r["case"], r["strategy"], r["tol"]) for r in rows):
        cells = []
        for rule in RULES:
            r = next((x for x in rows if (x["case"], x["strategy"], x["tol"], x["rule"]) == (case, strategy, tol, rule)),
                     None)
            status = "—" if r is None else ("skipped" if r["status"].startswith("skipped") else r["status"])
            if r is None or "depth" not in r:
                cells += [status] + ["—"] * (5 if rule == "error" else 4)
                continue
            cells += [status + (f" ({r['fallbacks']})" if r.get("fallbacks") else ""), str(r["depth"])]
            if rule == "error":
                cells.append(_record.fmt(r["error_estimate"]))
            cells += [f"{r['error']:.1e}", f"{r['measure']:.1e}", f"{r['wall_s']:.2f}"]
        lines.append(f"| {case} | {strategy} | {tol:g} | " + " | ".join(cells) + " |")
    return lines


def diffusion_table(records: Sequence[Dict]) -> List[str]:
    """Per (sampler, strategy, tol, rule), over the seeds."""
    rows = [r for r in records if r["part"] == "diff"]
    lines = ["| sampler | strategy | tol | rule | seeds | statuses | mean depth | mean estimate | median error | "
             "max error | max error/tol | max measure | mean wall [s] |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case, strategy, tol, rule in dict.fromkeys((r["case"], r["strategy"], r["tol"], r["rule"]) for r in rows):
        mine = [r for r in rows if (r["case"], r["strategy"], r["tol"], r["rule"]) == (case, strategy, tol, rule)]
        done = [r for r in mine if _done(r)]
        counts: Dict[str, int] = {}
        for r in mine:
            s = "skipped" if r["status"].startswith("skipped") else r["status"].split(":")[0]
            counts[s] = counts.get(s, 0) + 1
        status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        if not done:
            lines.append(f"| {case} | {strategy} | {tol:g} | {rule} | {len(mine)} | {status} |" + " — |" * 7)
            continue
        est = [r["error_estimate"] for r in done if r["error_estimate"] is not None]
        errs = [r["error"] for r in done]
        lines.append(
            f"| {case} | {strategy} | {tol:g} | {rule} | {len(mine)} | {status} | "
            f"{statistics.mean(r['depth'] for r in done):.1f} | {_record.fmt(statistics.mean(est)) if est else '—'} | "
            f"{statistics.median(errs):.2e} | {max(errs):.2e} | {max(errs) / tol:.3g} | "
            f"{max(r['measure'] for r in done):.2e} | {statistics.mean(r['wall_s'] for r in done):.2f} |")
    return lines


def report(records: Sequence[Dict], crashes: Sequence[Dict]) -> List[str]:
    """The Markdown below the header: metrics, headline, depth to a target, exceptions, the aggregated runs."""
    ode = [r for r in records if r["part"] == "ode"]
    diff = [r for r in records if r["part"] == "diff"]
    lines = [__doc__.split("\n\n", 2)[2].split("\n``error_matrix.json``")[0].strip(), "",
             "**Metrics.** *error*: ODE — `‖ys − ref‖_F / ‖ref‖_F` over the whole trajectory; diffusion — the "
             "relative RMS error of the final sample. *measure*: `max_n system.error_ratio(ys[n], ref[n])` over the "
             "trajectory, the solver's own measure (ODE: RMS of the difference over `1 + |X_n|`; diffusion: RMS "
             "over `max(σ_n, 1)`, i.e. the absolute RMS of the latent). *estimate*: `Solution.error_estimate` "
             "(rule `error` only). *depth*: fine steps on the critical path.", ""]
    lines += ["## Headline: fraction of runs within tol", ""]
    for title, recs, listed in (("ODE part", ode, True), ("Diffusion part", diff, True),
                                ("Both parts", ode + diff, False)):
        if recs:
            lines += rule_summary(recs, title, listed)
    lines += ["## Depth needed to reach an error target", "",
              "For each error target e: the least depth over the tol grid among runs whose actual *error* ≤ e "
              "(diffusion: every seed ≤ e; depth averaged over the seeds), rule `error` beside rule `eq14`, with "
              "the tol that achieved it. `*`: that run (or one of its seeds) was not CONVERGED. `—`: no tol of the "
              "grid reached the target.", ""]
    if ode:
        lines += ["### ODE", "", *depth_table(records, "ode"), ""]
    if diff:
        lines += ["### Diffusion (digits DDPM)", "", *depth_table(records, "diff"), ""]
    lines += _crash_lines(crashes)
    if diff:
        lines += ["## Diffusion runs (aggregated over seeds)", "", *diffusion_table(records), ""]
    if ode:
        lines += ["## ODE runs", "", *ode_table(records), ""]
    return lines + _skipped_lines(records)


def _crash_lines(crashes: Sequence[Dict]) -> List[str]:
    if not crashes:
        return []
    lines = ["## Exceptions raised by pitsolve", ""]
    for c in crashes:
        lines += [f"- {c['part']} {c['case']} {c['strategy']} tol={c['tol']:g} stopping={c['rule']!r}"
                  + (f" seed={c['seed']}" if 'seed' in c else ""), "", "```", c["traceback"].rstrip(), "```", ""]
    return lines


def _skipped_lines(records: Sequence[Dict]) -> List[str]:
    skipped = [r for r in records if r["status"].startswith("skipped")]
    if not skipped:
        return []
    lines = ["## Skipped", ""]
    for case, strategy, status in dict.fromkeys((r["case"], r["strategy"], r["status"]) for r in skipped):
        which = [r for r in skipped if (r["case"], r["strategy"], r["status"]) == (case, strategy, status)]
        tols = ", ".join(f"{r['tol']:g}/{r['rule']}" for r in which if "seed" not in r or r["seed"] == which[0].get("seed"))
        lines.append(f"- {case}, {strategy}: {status} ({tols})")
    return lines + [""]


# -- the suite -----------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    group = parser.add_argument_group("suite error_matrix")
    group.add_argument("--error-matrix-part", choices=("ode", "diffusion", "both"), default="both",
                       help="which part to run (default both)")
    group.add_argument("--error-matrix-seeds", type=int, default=None, metavar="n",
                       help=f"diffusion seeds (default {SEEDS}, quick {QUICK_SEEDS})")
    group.add_argument("--error-matrix-cap", type=float, default=None, metavar="S",
                       help=f"seconds per run (default {CAP:g}, quick {QUICK_CAP:g})")
    group.add_argument("--error-matrix-strategies", nargs="+", default=None,
                       help="ODE strategies (default: the whole REGISTRY)")


def run(args) -> List[dict]:
    import pitsolve

    # One thread: torch.set_flush_denormal acts on the calling thread only, and the digits UNet meets subnormal
    # floats on some iterates (DDPM-50, identity, eq14, tol 0.1: 22 s on 2 threads, 3.5 s with the flush, 0.4 s
    # with the flush on one thread, measured on the 2-core CPU of the first run).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    quick, part = bool(args.quick), args.error_matrix_part
    matrix = Matrix(args.error_matrix_cap or (QUICK_CAP if quick else CAP))
    timings = {}
    try:
        if part in ("ode", "both"):
            t = time.perf_counter()
            ode_part(matrix, quick, args.error_matrix_strategies or sorted(pitsolve.jacobians.REGISTRY))
            timings["ode"] = round(time.perf_counter() - t, 1)
        if part in ("diffusion", "both"):
            t = time.perf_counter()
            diffusion_part(matrix, quick, args.error_matrix_seeds or (QUICK_SEEDS if quick else SEEDS))
            timings["diffusion"] = round(time.perf_counter() - t, 1)
    finally:
        torch.set_num_threads(threads)
    args.error_matrix_part_seconds = timings  # for sections(): the header is written before the run
    print(f"[error_matrix] {len(matrix.records)} records, {len(matrix.crashes)} exceptions", flush=True)
    return matrix.records


def sections(records: List[dict], args) -> List[tuple]:
    crashes = [{**r, "traceback": r["_traceback"]} for r in records if "_traceback" in r]
    quick = bool(args.quick)
    options = {"part": args.error_matrix_part, "cap_s": args.error_matrix_cap or (QUICK_CAP if quick else CAP),
               "seeds": args.error_matrix_seeds or (QUICK_SEEDS if quick else SEEDS),
               "ode_tols": ODE_TOLS, "diffusion_tols": DIFF_TOLS, "flush_denormal": True}
    parts = getattr(args, "error_matrix_part_seconds", {})
    lead = (f"Options: {json.dumps(options)}; time per part: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in parts.items()))
    return [("", lead + "\n\n" + "\n".join(report(records, crashes)))]


def figures(records: List[dict], args) -> Dict[str, object]:
    return {}  # the summaries are the record
