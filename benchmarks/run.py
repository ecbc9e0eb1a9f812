"""Run benchmark suites and write their records: ``<suite>.json``, ``<suite>.md``, ``<suite>_*.png``.

    python -m benchmarks.run --suite ode                   # every Jacobian strategy on nonlinear ODEs and an SDE
    python -m benchmarks.run --suite diffusion             # digits DDPM and GMM: samplers x parallel methods
    python -m benchmarks.run --suite peers                 # the peers' samplers beside pitsolve
    python -m benchmarks.run --suite gpu                   # diffusion + peers on CUDA, SD2-sized UNet batch cost
    python -m benchmarks.run --suite ode diffusion --quick # smoke-test sizes (into benchmarks/results/quick)
    python -m benchmarks.run --suite adjoint error_matrix oracle auto_window loop_overhead choosing \
        bridge_overhead distributed memory defaults         # the single-purpose suites

Each suite is a module ``benchmarks/suites/<name>.py`` with ``run(args) ->
list[dict]`` (see :mod:`benchmarks.suites` for the protocol); this runner sets
the torch threads to the CPU count, runs it and writes the files, each stating
the machine, the device, the versions and this exact command.  A suite's own
options are named ``--<name>-…`` (``--help`` lists them all);
``python -m benchmarks.<name> [options]`` is an alias (:func:`alias`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from . import _record, suites

DEFAULT_OUT = Path("benchmarks") / "results"


def build_parser(names: List[str]):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", nargs="+", required=True, choices=names, metavar="SUITE",
                        help=f"suites to run, in order: {', '.join(names)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke test (< 1 min for ode); written under <out>/quick unless --out")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the models run (default cpu; the gpu suite always uses cuda)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats of each seq/par alternation (default: the suite's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and initial states (default 0)")
    skipped = {}
    for name in names:
        try:
            module = suites.load(name)
        except Exception as err:  # a suite that does not import is reported when it is asked for
            skipped[name] = err
            continue
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    return parser, skipped


def command_line(argv: List[str]) -> str:
    return "python -m benchmarks.run " + shlex.join(argv)


def run_suite(name: str, args) -> List[Path]:
    module = suites.load(name)
    started = time.perf_counter()
    device = getattr(module, "DEVICE", args.device)  # a suite may run on one device whatever --device says
    h = _record.header(name, args.command, device, args.quick,
                       {k: v for k, v in vars(args).items() if k not in ("command", "suite")})
    records = module.run(args)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TypeError(f"suite {name}: run(args) returned {type(records).__name__}; it must return a list of dicts")
    h["elapsed_s"] = round(time.perf_counter() - started, 1)
    sections = list(module.sections(records, args)) if hasattr(module, "sections") else []
    if hasattr(module, "figures"):
        figures = module.figures(records, args)
    else:
        figures = _record.default_figures(records)
    title = (module.TITLE if hasattr(module, "TITLE") else f"Benchmark suite `{name}`")
    tabled = records if getattr(module, "RECORD_TABLES", True) else []
    paths = _record.write(args.out, name, h, records, sections, figures, getattr(module, "HEADERS", None), title,
                          getattr(module, "HIDDEN", ()), tabled)
    print(f"[{name}] {len(records)} records in {h['elapsed_s']:.0f} s -> " + ", ".join(str(p) for p in paths),
          flush=True)
    return paths


def main(argv: Optional[List[str]] = None) -> List[Path]:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = suites.available()
    for known in suites.KNOWN:  # listed even before its module exists, so the error says so
        if known not in names:
            names.append(known)
    parser, skipped = build_parser(names)
    args = parser.parse_args(argv)
    args.command = command_line(argv)
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False on this machine")
    torch.set_num_threads(os.cpu_count() or 1)
    paths = []
    for name in args.suite:
        if name in skipped:
            err = skipped[name]
            raise SystemExit(f"suite {name!r} cannot be imported ({type(err).__name__}: {err}); "
                             f"expected a module benchmarks/suites/{name}.py with run(args) -> list[dict]")
        paths += run_suite(name, args)
    return paths


def alias(name: str, module: str) -> None:
    """``python -m benchmarks.<name> [options]``: run ``--suite <name> [options]`` when ``module`` is ``__main__``.

    The stand-alone entry points (``benchmarks/adjoint.py``, ``benchmarks/oracle.py``, …) are these aliases, so
    the commands recorded in older result files still reproduce them.
    """
    if module == "__main__":
        main(["--suite", name, *sys.argv[1:]])


if __name__ == "__main__":
    main()
