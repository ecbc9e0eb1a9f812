"""Parallel associative scan for the linear recurrence ``δ_{i+1} = A_i δ_i + b_i``.

Element ``(A_i, b_i)`` is the affine map ``x ↦ A_i x + b_i``; composing an
earlier element ``(A_i, b_i)`` with a later ``(A_j, b_j)`` gives
``(A_j A_i, A_j b_i + b_j)`` (docs/design.md, "The banded system").  The Hillis–Steele inclusive scan
below needs ⌈log₂ p⌉ vectorised rounds, so its depth is O(log p).
"""

from __future__ import annotations

import torch

__all__ = ["linear_scan"]


def linear_scan(a: torch.Tensor, b: torch.Tensor, *, dense: bool) -> torch.Tensor:
    """Solve ``δ_0 = 0, δ_{i+1} = A_i δ_i + b_i`` for ``i = 0 … p−1``; return ``δ_1 … δ_p``.

    Args:
        a: ``[p, D]`` (elementwise ``A_i = diag(a_i)``) or ``[p, D, D]`` (``dense=True``).
        b: ``[p, D]``.
        dense: whether ``a`` holds full matrices.
    """
    a, b = a.clone(), b.clone()
    p = b.shape[0]
    step = 1
    while step < p:
        a_prev, b_prev = a[:-step], b[:-step]
        a_cur, b_cur = a[step:], b[step:]
        if dense:
            new_b = torch.einsum("pij,pj->pi", a_cur, b_prev) + b_cur
            new_a = a_cur @ a_prev
        else:
            new_b = a_cur * b_prev + b_cur
            new_a = a_cur * a_prev
        a = torch.cat([a[:step], new_a])
        b = torch.cat([b[:step], new_b])
        step *= 2
    return b
