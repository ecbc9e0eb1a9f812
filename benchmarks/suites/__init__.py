"""Benchmark suites for ``python -m benchmarks.run --suite NAME``: one module ``benchmarks/suites/<NAME>.py`` each.

Every benchmark of the repository is a suite (there are no stand-alone
scripts): ``python -m benchmarks.<NAME>`` is an alias of the runner with
``--suite NAME`` (:func:`benchmarks.run.alias`).  Modules and packages whose
name starts with ``_`` (``_diffusion``) are a suite's parts, not suites.

A suite module defines

* ``run(args) -> list[dict]`` (required): measures and returns the records,
  one JSON-serialisable ``dict`` per row.  It writes no file: the runner
  writes ``<suite>.json``, ``<suite>.md`` and the plots, each with the header
  (machine, device, versions, command).
* ``add_arguments(parser)`` (optional): the suite's own command-line options;
  name them ``--<suite>-…`` so suites never collide (every suite's options are
  on the one parser, since the ``gpu`` suite runs the others).
* ``sections(records, args) -> list[(title, markdown)]`` (optional): prose and
  extra Markdown after the tables (a title ``""`` goes before them).
* ``figures(records, args) -> dict[name, matplotlib Figure]`` (optional): saved
  as ``<suite>_<name>.png``.  Without it the runner draws a bar chart of
  ``depth`` and ``speedup`` per table where the records have them.
* ``HEADERS`` (optional): ``{record key: column header}`` for the Markdown;
  ``HIDDEN`` (optional): record keys kept out of the Markdown tables;
  ``TITLE`` (optional): the Markdown title; ``DEVICE`` (optional): the device
  the suite runs on whatever ``--device`` says (stated in the header);
  ``RECORD_TABLES = False`` (optional): the records go into the JSON only and
  the Markdown shows the suite's ``sections`` (for hundreds of raw runs).

``args`` holds ``quick`` (bool: small sizes for a smoke test), ``device``
(``"cpu"`` or ``"cuda"``), ``repeats`` (``None``: the suite's default),
``seed``, ``out`` and ``command``, plus the suites' own options.

Record conventions: ``"table"`` names the Markdown table a record goes into
(default ``"results"``); keys starting with ``_`` stay in the JSON and out of
the tables; ``"status"`` says whether a solve converged (``"CONVERGED"``,
``"MAX_ITERS"``, ``"NONFINITE"``, ``"ERROR: …"``, ``"skipped: …"``).

Measurement helpers shared by the suites are below: :func:`alternate` times a
baseline and its contenders in one process, interleaved, and
:func:`relative_rms` is the error measure of docs/design.md, "Measures".
"""

from __future__ import annotations

import importlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional

import torch

#: Suites the runner knows (listed first, in this order); any other ``benchmarks/suites/<name>.py`` is found too.
KNOWN = ("ode", "diffusion", "peers", "gpu", "memory", "defaults", "adjoint", "error_matrix", "oracle",
         "auto_window", "loop_overhead", "choosing", "bridge_overhead", "distributed")


def available() -> List[str]:
    """Names of the suite modules present (known ones first)."""
    here = Path(__file__).parent
    found = sorted(p.stem for p in here.glob("*.py") if not p.stem.startswith("_"))
    return [n for n in KNOWN if n in found] + [n for n in found if n not in KNOWN]


def load(name: str):
    """The suite module ``benchmarks.suites.<name>``."""
    return importlib.import_module(f"{__name__}.{name}")


# -- measurement -----------------------------------------------------------------------------------------
def relative_rms(a, b) -> float:
    """``RMS(a − b) / RMS(b)``: the error vs the sequential solve (docs/design.md, "Measures"); tuples are concatenated."""
    if isinstance(a, tuple):
        a = torch.cat([p.reshape(-1) for p in a])
        b = torch.cat([p.reshape(-1) for p in b])
    a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
    den = float(b.pow(2).mean().sqrt())
    num = float((a - b).pow(2).mean().sqrt())
    return num / den if den > 0 else num


def clock(device: str = "cpu") -> Callable[[], float]:
    """``time.perf_counter`` that first waits for queued CUDA work on a CUDA device."""
    if str(device).startswith("cuda"):
        def now():
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.perf_counter


@dataclass
class Timing:
    """Wall times of one contender and of the baseline runs beside it (seconds)."""

    times: List[float] = field(default_factory=list)
    baseline: List[float] = field(default_factory=list)  # per repeat: mean of the baseline runs before and after

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def speedup(self) -> float:
        """Median baseline time / median contender time."""
        return self.baseline_median / self.median

    @property
    def worst_speedup(self) -> float:
        """The smallest per-repeat ratio baseline / contender (below 1: slower at least once)."""
        return min(b / t for b, t in zip(self.baseline, self.times))


def alternate(baseline: Callable[[], object], contenders: Mapping[str, Callable[[], object]], repeats: int,
              device: str = "cpu") -> Dict[str, Timing]:
    """Time ``baseline`` and each contender in one process, interleaved.

    Each repeat runs ``baseline, c_1, baseline, c_2, …, c_k, baseline``; a
    contender's paired baseline time in that repeat is the mean of the
    baseline runs just before and just after it, so slow drifts of the
    machine's load hit both alike.  With one contender this is the plain
    ``seq, par, seq, par, …`` alternation.  Run everything once untimed
    before (a warm-up); the suites do, in their measuring runs.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    now = clock(device)

    def timed(fn):
        t0 = now()
        fn()
        return now() - t0

    out = {name: Timing() for name in contenders}
    for _ in range(repeats):
        before = timed(baseline)
        for name, fn in contenders.items():
            t = timed(fn)
            after = timed(baseline)
            out[name].times.append(t)
            out[name].baseline.append(0.5 * (before + after))
            before = after
    return out


def median_time(fn: Callable[[], object], repeats: int, device: str = "cpu", warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    now = clock(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = now()
        fn()
        times.append(now() - t0)
    return statistics.median(times)


def repeats(args, full: int, quick: int) -> int:
    """``args.repeats`` if given, else the suite's default for full or quick mode."""
    if getattr(args, "repeats", None):
        return int(args.repeats)
    return quick if getattr(args, "quick", False) else full


def error_text(err: BaseException) -> str:
    """``"ERROR: <type>: <first line>"`` for a status column."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"ERROR: {type(err).__name__}: {msg[:160]}"
