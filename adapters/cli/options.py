"""The flag vocabulary of the ``pitsolve`` commands: one spelling and one help text per concept.

Every command adds the options it shares with another through :func:`add`,
so a concept is spelled, typed and described the same way everywhere; only
the default differs between commands, and each command passes its own.

* ``--output``, ``-o``: the folder written to;
* ``--intervals``, ``-N``: N, the intervals of the time grid (the unknowns);
* ``--window``: points iterated at once, an int >= 0 (0 = all N) or ``auto``;
* ``--tol`` and ``--stopping``: the stopping rule's tolerance and kind;
* ``--jacobian``: a strategy of :data:`pitsolve.jacobians.REGISTRY`;
* ``--no-guard``: run the strategy without :class:`pitsolve.Guard`;
* ``--device``, ``--dtype``: where and in which precision the state lives;
* ``--seed``: the seed of the noise; ``--no-progress``: hide the progress bars.

Old spellings (``--out``, ``--n-intervals``) still parse, as hidden aliases
that print one deprecation line on stderr (:class:`DeprecatedAlias`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

import pitsolve

__all__ = ["Flag", "VOCABULARY", "DTYPES", "DeprecatedAlias", "add", "window", "check_window", "resolve_window"]

#: ``--dtype`` name → torch dtype.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def window(text: str) -> Union[int, str]:
    """``--window``: an int, or ``auto`` (``pitsolve.solve(window="auto")``); the sign is checked later."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an int >= 0 (0 = all N) nor 'auto'") from None


def check_window(value: Union[int, str]) -> None:
    """Raise unless ``--window`` is ``auto`` or an int >= 0."""
    if value != "auto" and value < 0:
        raise pitsolve.InputValueError(f"--window={value} must be >= 0 (0 = all N), or 'auto'.")


def resolve_window(value: Union[int, str], N: int) -> Union[None, int, str]:
    """The ``window=`` of ``pitsolve.solve`` for ``--window value`` with N intervals: ``0`` → ``None`` (all N),
    an int capped at N, or ``"auto"``."""
    check_window(value)
    if value == "auto":
        return "auto"
    return None if value == 0 else min(value, N)


@dataclass(frozen=True)
class Flag:
    """One concept of the vocabulary: its flags (long name first), help text and argparse settings.

    ``help`` may hold ``{default}``, filled with the command's default (or the text it passes as ``shown``).
    ``deprecated`` are old spellings kept as hidden aliases.
    """

    names: Tuple[str, ...]
    help: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    deprecated: Tuple[str, ...] = ()


VOCABULARY: Dict[str, Flag] = {
    "output": Flag(("--output", "-o"), "folder for stats.json and the figures, created if missing (default: {default})",
                   dict(type=Path, metavar="DIR"), deprecated=("--out",)),
    "intervals": Flag(("--intervals", "-N"), "N, the intervals of the time grid, solved as unknowns "
                                             "(default: {default})",
                      dict(type=int, metavar="N"), deprecated=("--n-intervals",)),
    "window": Flag(("--window",), "points iterated at once, capped at N; 0 for all N; 'auto' times the batched "
                                  "call at widths 1, 2, 4, ... and picks the fastest predicted solve "
                                  "(default: {default})", dict(type=window, metavar="P")),
    "tol": Flag(("--tol",), "tolerance of the stopping rule: with --stopping error, the largest error of an accepted "
                            "point against the sequential solve, in the system's scale; with eq14, the bound on each "
                            "point's last change (default: {default})", dict(type=float, metavar="TOL")),
    "stopping": Flag(("--stopping",), "acceptance rule: 'error' bounds the error vs the sequential solve, 'eq14' is "
                                      "the paper's per-point change test (default: {default})",
                     dict(choices=("error", "eq14"))),
    "jacobian": Flag(("--jacobian",), "Jacobian strategy of the parallel solve (default: {default})",
                     dict(choices=tuple(sorted(pitsolve.jacobians.REGISTRY)))),
    "guard": Flag(("--no-guard",), "run the strategy bare, without pitsolve.Guard's fallbacks and depth budget "
                                   "(default: guarded)", dict(dest="guard", action="store_false")),
    "device": Flag(("--device",), "torch device, e.g. cpu or cuda:0 (default: {default})", dict(metavar="DEVICE")),
    "dtype": Flag(("--dtype",), "floating-point precision of the state (default: {default})",
                  dict(choices=tuple(DTYPES))),
    "seed": Flag(("--seed",), "seed of the noise generator (default: {default})", dict(type=int)),
    "progress": Flag(("--no-progress",), "hide the progress bars", dict(action="store_true")),
}


class DeprecatedAlias(argparse.Action):
    """An old spelling of a flag: stores into the new flag's ``dest`` and prints one deprecation line on stderr.

    It is hidden from ``-h`` and left out of the command line that stats.json records (:func:`.record.command`).
    """

    def __init__(self, option_strings, dest, *, replacement: str, nargs=None, const=None, **kwargs):
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated and will be removed; use {self.replacement}",
              file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def add(parser: argparse.ArgumentParser, concept: str, default: Any = None, *, shown: Optional[str] = None,
        **overrides: Any) -> argparse.Action:
    """Add the flag of ``concept`` (a key of :data:`VOCABULARY`) to ``parser`` with this command's ``default``.

    ``shown`` replaces the default in the help text (e.g. ``"T"``); ``overrides`` replace argparse settings
    (e.g. ``choices`` with an extra ``"all"``).  The concept's deprecated spellings are added as hidden
    :class:`DeprecatedAlias` actions.
    """
    flag = VOCABULARY[concept]
    settings = {**flag.settings, **overrides}
    text = flag.help.format(default=shown if shown is not None else default)
    if settings.get("action") in ("store_true", "store_false"):
        action = parser.add_argument(*flag.names, help=text, **settings)
    else:
        action = parser.add_argument(*flag.names, default=default, help=text, **settings)
    replacement = flag.names[0] + (f" ({', '.join(flag.names[1:])})" if len(flag.names) > 1 else "")
    for old in flag.deprecated:
        alias = {k: v for k, v in settings.items() if k in ("type", "choices", "metavar")}
        parser.add_argument(old, dest=action.dest, action=DeprecatedAlias, replacement=replacement,
                            nargs=action.nargs, const=action.const, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, **alias)
    return action
