"""The header both commands' ``stats.json`` start with: enough to reproduce the run.

``command`` is the command line with every option spelled out (defaults
included) and shell-quoted, so ``shlex.split`` gives it back; then the
versions, torch's intra-op thread count, the device, the seed and the
settings.  Each solve's row adds what the divergence guard did
(``fallbacks``, ``budget_sweeps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import platform
import shlex
from typing import Any, Callable, Dict, Optional, Union

import torch

import pitsolve

from .options import DeprecatedAlias

__all__ = ["command", "header", "guard", "guard_setting", "guard_fields"]


def command(cmd: str, args: argparse.Namespace, add_arguments: Callable, **values: Any) -> str:
    """``pitsolve <cmd> …`` with every option that ``add_arguments`` defines, at its value in ``args``.

    ``values`` overrides a value by its ``dest`` (e.g. the model path made absolute).  Flags without a
    value (``--no-progress``, ``--no-guard``) appear when set; options whose value is ``None`` (their
    default meaning "none" or "all") are left out, and so are the deprecated spellings.
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    argv = ["pitsolve", cmd]
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        if not action.option_strings or isinstance(action, DeprecatedAlias):  # old spellings are not recorded
            continue
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        value = values.get(action.dest, getattr(args, action.dest, action.default))
        if action.nargs == 0:  # store_true / store_false: the flag is its value
            if value == action.const and value != action.default:
                argv.append(flag)
        elif value is not None:
            argv += [flag, str(value)]
    return shlex.join(argv)


def versions() -> Dict[str, Optional[str]]:
    try:
        diffusers = importlib.metadata.version("diffusers")
    except importlib.metadata.PackageNotFoundError:
        diffusers = None
    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers,
            "pitsolve": pitsolve.__version__}


def header(command: str, *, device: str, seed: Optional[int], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The fields both commands' ``stats.json`` start with (docs/cli.md, "The header")."""
    return {
        "command": command,
        "versions": versions(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "seed": seed,
        "settings": settings,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
    }


def guard(args: argparse.Namespace) -> Union[bool, pitsolve.Guard]:
    """The ``guard=`` of the solves: the default :class:`pitsolve.Guard`, or ``False`` for ``--no-guard``."""
    return pitsolve.Guard() if args.guard else False


def guard_setting(value: Union[bool, pitsolve.Guard]) -> Union[bool, str]:
    """``settings.guard``: the Guard's repr (its every setting), or ``false``."""
    return repr(value) if isinstance(value, pitsolve.Guard) else False


def guard_fields(sol: pitsolve.Solution) -> Dict[str, Any]:
    """What the guard did in one solve: its moves down the ladder and its depth-budget sweeps."""
    return {"fallbacks": [dataclasses.asdict(f) for f in sol.fallbacks], "budget_sweeps": sol.budget_sweeps,
            "status": sol.status.name, "error_estimate": sol.error_estimate}


def guard_cell(row: Dict[str, Any]) -> str:
    """The guard's column of a table: ``-``, or the rungs entered (``>damped>sequential``) and budget sweeps."""
    parts = []
    if row.get("fallbacks"):
        parts.append("".join(">" + f["target"] for f in row["fallbacks"]))
    if row.get("budget_sweeps"):
        parts.append(f"{row['budget_sweeps']} budget")
    return ", ".join(parts) or "-"
