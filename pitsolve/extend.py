"""The public seam for code that extends pitsolve: adapters, custom systems and benchmarks.

A system that lives on devices, checks its arguments like the core, or
fingerprints its parts for a distributed solve uses these, never the private
modules behind them (docs/design.md, "Architecture"):

* argument checks that accept numpy scalars and 0-dim tensors and raise the
  core's typed errors: :func:`as_integer`, :func:`as_real`,
  :func:`check_positive_int`, :func:`check_nonnegative`, :func:`check_tolerance`;
* device moves for :meth:`BandedSystem.to <pitsolve.BandedSystem.to>`:
  :func:`to_device` (modules shared where they already live, copied
  elsewhere) and :func:`replica` (a shallow copy with named attributes moved);
* :func:`digest`, the short exact fingerprint used by
  :meth:`BandedSystem.fingerprint <pitsolve.BandedSystem.fingerprint>`;
* :func:`clear_tuning_cache`, which forgets the batch-cost curves that
  ``window="auto"`` measured in this process, and the tuner's parts for a
  benchmark that fits its own sweep model: :func:`batch_cost_curve`,
  :func:`predicted_cost`, :func:`best_window`.
"""

from __future__ import annotations

from . import _tuning
from ._tuning import batch_cost_curve, best_window, predicted_cost
from ._devices import digest, replica, to_device
from ._grid import as_integer, as_real, check_nonnegative, check_positive_int, check_tolerance

__all__ = [
    "as_integer",
    "as_real",
    "check_positive_int",
    "check_nonnegative",
    "check_tolerance",
    "to_device",
    "replica",
    "digest",
    "clear_tuning_cache",
    "batch_cost_curve",
    "predicted_cost",
    "best_window",
]


def clear_tuning_cache() -> None:
    """Forget every batch-cost curve ``window="auto"`` measured in this process (the next solve times anew)."""
    _tuning._CACHE.clear()
