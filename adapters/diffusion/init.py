"""The paper's initialisation (Eq. 15–17): preconditioning steps, then the posterior rollout."""

from __future__ import annotations

import torch

from pitsolve import InputTypeError, InputValueError
from pitsolve.extend import as_integer
from pitsolve.initializers import Initializer

from .system import DiffusionSystem

__all__ = ["PosteriorInit"]


class PosteriorInit(Initializer):
    r"""Eq. 17: ``M`` sequential model steps, then ``q(x_{t_{i+1}} | x_{t_i}, x̂_0)`` at no model cost.

    At the start, the first ``M`` fine steps run with the model (their points
    are exact); the clean-sample prediction ``x̂_0`` of the last of them
    (Eq. 16) then drives the rule's posterior step over all later fine steps
    (Eq. 15), the pre-drawn noise included, so the guesses follow the
    sampler's own path given that prediction.  Points entering the window
    later are filled the same way from the anchor's carried prediction —
    the newest one, made at the last window point in the latest sweep
    (Algorithm 1, lines 8–9).  With ``M = 0`` the start is copy-forward.

    Depth and NFE count the ``M`` model steps; the rollout is free.

    A rule without a posterior (``rule.has_posterior`` false: the generic
    bridge on a scheduler whose parametrisation it cannot read) gets the
    copy-forward start instead of the rollout: the ``M`` model steps as
    above, then every later point starts at the newest exact state.
    """

    name = "posterior"

    def __init__(self, preconditioning_steps: int = 1):
        m = as_integer(preconditioning_steps)
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise InputValueError(f"preconditioning_steps={m!r} must be an int >= 0.")
        self.preconditioning_steps = m

    def reset(self, system) -> None:
        if not isinstance(system, DiffusionSystem):
            raise InputTypeError(
                f"PosteriorInit needs a DiffusionSystem, got {type(system).__name__}; "
                "use init='constant' or 'coarse' for other systems."
            )
        T = system.rule.num_steps
        if self.preconditioning_steps > T:
            raise InputValueError(
                f"preconditioning_steps={self.preconditioning_steps} is larger than the number of "
                f"sampling steps T={T}; pass 0 <= preconditioning_steps <= {T}."
            )

    def initialize(self, system, anchor, anchor_index, count, cost):
        bounds = system.boundaries
        targets = bounds[anchor_index + 1 : anchor_index + 1 + count].tolist()
        rows = system.latents.shape[0]
        parts = system.rows(anchor.unsqueeze(0))
        step = int(bounds[anchor_index])
        if anchor_index == 0:
            if self.preconditioning_steps == 0:
                return anchor.unsqueeze(0).expand(count, -1).clone()
            stop = min(self.preconditioning_steps, targets[-1])
            out = []
            while step < stop:
                parts = system.fine_step(parts, torch.full((rows,), step, dtype=torch.long))
                step += 1
                if step in targets:
                    out.append(self._flat(system, parts))
            cost.nfe += stop
            cost.depth += stop
        else:
            out = []
        if not getattr(system.rule, "has_posterior", True):  # copy the newest state forward
            flat = self._flat(system, parts)
            return torch.stack(out + [flat] * (count - len(out)))
        x0 = parts[1]
        while step < targets[-1]:
            parts = system.fine_step(parts, torch.full((rows,), step, dtype=torch.long), x0=x0)
            step += 1
            if step in targets:
                out.append(self._flat(system, parts))
        return torch.stack(out)

    @staticmethod
    def _flat(system, parts):
        batch = system.latents.shape[0]
        return system.spec.flatten_batch(tuple(p.reshape(1, batch, *p.shape[1:]) for p in parts))[0]

    def __repr__(self) -> str:
        return f"PosteriorInit(preconditioning_steps={self.preconditioning_steps})"
