"""The command line ``pitsolve``: ``pitsolve sample`` (diffusion) and ``pitsolve solve`` (an ODE, built-in or yours).

Both commands spell a shared concept the same way (:mod:`.options`); ``pitsolve --version``
prints the versions.  Bad options end in one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

import pitsolve
from pitsolve import PitsolveError

from . import ode, sample

__all__ = ["main", "build_parser", "version"]

DESCRIPTION = """\
pitsolve: solve ODEs, SDEs and diffusion samplers parallel in time.

A sequential sampler X_{n+1} = Φ_n(X_n) is solved as a banded nonlinear system
by sweeps in which all Φ_n run in one batched call; the result is the
sequential sample (same noise), in fewer sequential model-call waves.
"""

EPILOG = """\
commands:
  pitsolve sample          sample the bundled digits model sequentially and in parallel, compare
  pitsolve solve           every Jacobian strategy on an ODE (Van der Pol, or yours: --func), beside sequential
  pitsolve <command> -h    the options of a command
  pitsolve --version       the versions of pitsolve and torch
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block), exit status 2; subcommand parsers inherit it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def version() -> str:
    """``pitsolve --version``: ``pitsolve <version> (torch <version>)``."""
    return f"pitsolve {pitsolve.__version__} (torch {torch.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pitsolve", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="cmd", metavar="{sample,solve}")
    sample.add_parser(sub)
    solve = sub.add_parser("solve", help="every Jacobian strategy on an ODE, built-in or yours, beside sequential",
                           description=ode.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ode.add_arguments(solve)
    solve.set_defaults(command=ode.run)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "command", None) is None:
        parser.print_help()
        return 2
    try:
        args.command(args)
    except (PitsolveError, FileNotFoundError) as err:
        print(f"pitsolve {args.cmd}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pitsolve: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
