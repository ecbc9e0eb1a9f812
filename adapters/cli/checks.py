"""Checks of command-line values that need more than argparse's ``type=``: each fails with one line."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from pitsolve import InputValueError

__all__ = ["output_folder", "tolerance", "device"]


def output_folder(path: Path, flag: str) -> None:
    """Raise unless ``path`` is, or can be created as, a writable folder (checked before any work, nothing created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputValueError(f"{flag} {path}: a file is in the way; pass a folder to write the results to.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputValueError(
            f"{flag} {path}: {existing} is a file, so the folder cannot be created; pass another folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputValueError(f"{flag} {path}: {existing} is not writable; pass a folder you can write to.")


def tolerance(value: float, flag: str = "--tol") -> None:
    """Raise unless ``value`` is a finite number >= 0 (argparse's ``float`` also accepts 'nan' and 'inf')."""
    if not math.isfinite(value) or value < 0:
        raise InputValueError(f"{flag}={value} must be a finite number >= 0, e.g. {flag} 1e-3.")


def device(name: str) -> None:
    """Raise unless ``name`` is a torch device this process can allocate on."""
    try:
        kind = torch.device(name).type
        if kind == "meta":
            raise InputValueError(f"--device {name}: the meta device holds no values; use cpu or cuda:K.")
        torch.empty(0, device=name)
    except InputValueError:
        raise
    except (RuntimeError, ValueError, AssertionError) as err:  # AssertionError: torch built without CUDA
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputValueError(f"--device {name}: {reason}; use cpu or an available cuda:K.") from None
