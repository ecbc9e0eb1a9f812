"""The comparison table of ``pitsolve sample``."""

from __future__ import annotations

from typing import Dict, Sequence

from .record import guard_cell

__all__ = ["format_table"]


def format_table(rows: Sequence[Dict], steps: int) -> str:
    head = ("method", "wall [s]", "speed-up", "iters", "depth", "NFE", "NFE/T", "error vs seq", "Fréchet", "guard")
    lines = []
    for r in rows:
        lines.append((
            r["method"], f"{r['wall_time']:.2f}", f"{r['speedup']:.2f}x", str(r["iterations"]), str(r["depth"]),
            str(r["nfe"]), f"{r['nfe'] / steps:.2f}", f"{r['error']:.1e}",
            "n/a" if r["frechet"] is None else f"{r['frechet']:.2f}", guard_cell(r),
        ))
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *(fmt(l) for l in lines)])
