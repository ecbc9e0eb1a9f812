"""A diffusion sampler as a banded system (paper Eq. 7–8; docs/design.md, "Diffusion samplers")."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from pitsolve import BandedSystem, InputTypeError, InputValueError
from pitsolve.extend import as_integer, check_positive_int, digest, replica

__all__ = ["DiffusionSystem", "interval_boundaries", "DEFAULT_SCALE_FLOOR"]

#: The default ``c`` of the measure ``s_n = max(σ_{t_n}, c)``: the data scale of images in ``[-1, 1]``,
#: so that ``tol`` is relative to the data (the final sample's relative error) rather than to ``σ``.
DEFAULT_SCALE_FLOOR = 1.0

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def interval_boundaries(num_steps: int, intervals: int) -> torch.Tensor:
    """Fine-step boundaries ``s_0 = 0 < s_1 < … < s_N = T`` of N near-equal subintervals.

    Any ``1 ≤ N ≤ T``; when N does not divide T the lengths differ by at most one.
    """
    intervals = as_integer(intervals)
    if isinstance(intervals, bool) or not isinstance(intervals, int):
        raise InputTypeError(f"intervals={intervals!r} is not an int; pass 1 <= intervals <= {num_steps}.")
    if not 1 <= intervals <= num_steps:
        raise InputValueError(
            f"intervals={intervals} is outside 1..{num_steps} (the number of sampling steps); "
            f"pass N between 1 (sequential) and {num_steps} (one step per interval)."
        )
    return torch.tensor([(n * num_steps) // intervals for n in range(intervals + 1)], dtype=torch.long)


class DiffusionSystem(BandedSystem):
    r"""The T fine steps of a sampler grouped into N subintervals ``Φ_n`` (Eq. 7).

    The state at boundary ``n`` is the tuple ``(x, x̂_0, h_1, …, h_m)``: the
    sample, the clean-sample prediction of the last fine step before it
    (Eq. 16; zeros at the start) and the multistep history of the rule
    (``m = rule.history_size``).  Carrying the history makes ``Φ_n`` a
    function of its input state alone, so the parallel solve reproduces the
    sequential multistep sampler exactly, and carrying ``x̂_0`` gives the
    Eq. 17 initialisation of points entering the window "the newest
    prediction" at no model cost (Algorithm 1, line 8).

    A batch of intervals is stepped together: fine step ``j`` of every
    interval in the batch is **one** model call on all (interval, image)
    rows, each with its own timestep.  When N does not divide T, intervals
    are one step shorter or longer and the shorter ones sit out their last
    step.  The stopping rule (Eq. 14) reads only ``x``:
    ``RMS_image(ΔX_n) ≤ tol · σ_{t_n}``, the worst image deciding.

    Args:
        model: ``model(x [R, *S], t LongTensor [R]) -> output [R, *S]`` in the
            rule's prediction type (see :mod:`pitsolve.adapters.diffusers` for
            UNets and guidance).
        rule: a :class:`~pitsolve.adapters.diffusion.rules.StepRule`.
        latents: the initial noise ``x_{t_0}``, ``[batch, *S]``.
        noise: ``[T, batch, *S]``, the standard-normal draw of every fine step
            that takes one (``rule.noise_steps``); ``None`` if none does.
        intervals: N (default T: one fine step per interval).
        scale_floor: ``c`` in the measure's scale ``s_n = max(σ_{t_n}, c)``
            (default ``1.0``, the data scale: ``tol`` is then relative to the
            data, and the error bound of :func:`~pitsolve.solve` bounds the
            final sample's error; ``None``: ``s_n = σ_{t_n}``, Eq. 14's scale).  ``σ_t`` falls to
            about 0 at the last steps of a deterministic sampler, where Eq. 14
            then asks for an absolute change far below what moves the
            sample; ``c = 1`` (the data scale of images in ``[-1, 1]``) stops
            those points at ``tol`` relative to the data instead.
    """

    def __init__(
        self,
        model: ModelFn,
        rule,
        latents: torch.Tensor,
        noise: Optional[torch.Tensor] = None,
        intervals: Optional[int] = None,
        scale_floor: Optional[float] = DEFAULT_SCALE_FLOOR,
    ):
        if not callable(model):
            raise InputTypeError(f"model is a {type(model).__name__}; pass model(x, t) -> output.")
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.dim() < 2:
            raise InputTypeError(
                f"latents must be a floating tensor [batch, *sample_shape], got "
                f"{type(latents).__name__}{tuple(latents.shape) if isinstance(latents, torch.Tensor) else ''}."
            )
        if not torch.isfinite(latents).all():
            raise InputValueError("latents contain NaN or Inf; pass finite initial noise.")
        T = rule.num_steps
        self.model, self.rule, self.latents = model, rule, latents
        # The batch cost depends on the network called (and whether guidance doubles its rows).
        net = getattr(model, "unet", model)
        self.tuning_key = (type(net).__qualname__, id(net), bool(getattr(model, "guidance", False)),
                           getattr(model, "max_batch", None))
        self.boundaries = interval_boundaries(T, T if intervals is None else intervals)
        lengths = self.boundaries[1:] - self.boundaries[:-1]
        self._lengths = lengths.to(latents.device)
        needs = bool(rule.noise_steps.any())
        if needs:
            if noise is None:
                raise InputValueError(
                    f"{type(rule).__name__} draws noise in {int(rule.noise_steps.sum())} steps but noise=None; "
                    "pass noise [T, batch, *S] (parallel_sample draws it from the generator)."
                )
            if tuple(noise.shape) != (T, *latents.shape):
                raise InputValueError(
                    f"noise has shape {tuple(noise.shape)}, expected {(T, *latents.shape)} (steps, batch, *S)."
                )
            noise = noise.to(dtype=latents.dtype, device=latents.device)
        self.noise = noise if needs else None
        self._timesteps = rule.timesteps.to(latents.device)
        sig = rule.sigma_boundary().to(torch.float64)
        floor = sig[sig > 0].min() if bool((sig > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
        if scale_floor is not None:
            if isinstance(scale_floor, bool) or not isinstance(scale_floor, (int, float)) or not (
                math.isfinite(scale_floor) and scale_floor > 0
            ):
                raise InputValueError(
                    f"scale_floor={scale_floor!r} must be a finite number > 0 (e.g. 1.0, the data scale) or None."
                )
            floor = floor.clamp_min(float(scale_floor))
        self.scale_floor = scale_floor
        self._scale = sig.clamp_min(floor)[self.boundaries].to(device=latents.device)
        self._parts = 2 + rule.history_size
        self._sample_size = latents.numel()
        self.monitored = slice(0, self._sample_size)
        self.passive = slice(self._sample_size, 2 * self._sample_size)  # the carried x̂_0: Φ reads only x and h
        self.certified = "final"  # tol bounds the sample's error; intermediate latents are not the result
        batch = latents.shape[0]
        per_image = torch.arange(batch, device=latents.device).repeat_interleave(latents[0].numel())
        self.parts = per_image.repeat(self._parts)  # the images are independent: one part each

    # -- BandedSystem -----------------------------------------------------------
    @property
    def initial_state(self) -> Tuple[torch.Tensor, ...]:
        zeros = torch.zeros_like(self.latents)
        return (self.latents,) + (zeros,) * (self._parts - 1)

    @property
    def num_intervals(self) -> int:
        return self.boundaries.numel() - 1

    @property
    def steps_per_interval(self) -> int:  # type: ignore[override]
        return int(self._lengths.max())

    def interval_cost(self, indices: torch.Tensor) -> int:
        return int(self._lengths[indices].sum())

    def propagate(self, states, indices):
        B, batch = indices.numel(), self.latents.shape[0]
        parts = [p.reshape(B * batch, *p.shape[2:]) for p in states]
        first = self.boundaries.to(indices.device)[indices]
        lengths = self._lengths[indices]
        for j in range(int(lengths.max())):
            active = lengths > j
            step = (first + j).repeat_interleave(batch)
            if bool(active.all()):
                parts = self.fine_step(parts, step)
            else:
                rows = active.repeat_interleave(batch)
                moved = self.fine_step([p[rows] for p in parts], step[rows])
                parts = [p.clone() for p in parts]
                for p, m in zip(parts, moved):
                    p[rows] = m
        return tuple(p.reshape(B, batch, *p.shape[1:]) for p in parts)

    def coarse_propagate(self, states, indices):
        """One model call per interval: ``x̂_0`` at its start, then the posterior rollout (SRDS's coarse step)."""
        B, batch = indices.numel(), self.latents.shape[0]
        parts = [p.reshape(B * batch, *p.shape[2:]) for p in states]
        first = self.boundaries.to(indices.device)[indices].repeat_interleave(batch)
        x = parts[0]
        x0 = self.rule.denoise(x, self._call_model(x, first), first)
        parts = [x, x0, *parts[2:]]
        lengths = self._lengths[indices]
        for j in range(int(lengths.max())):
            rows = (lengths > j).repeat_interleave(batch)
            moved = self.fine_step([p[rows] for p in parts], (first + j)[rows], x0=parts[1][rows])
            parts = [p.clone() for p in parts]
            for p, m in zip(parts, moved):
                p[rows] = m
        return tuple(p.reshape(B, batch, *p.shape[1:]) for p in parts)

    def jvp_flat(self, x, indices, tangents):
        """``J_n v`` with attention in PyTorch's math kernel (the fused CPU/flash kernels have no forward-mode rule)."""
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            return super().jvp_flat(x, indices, tangents)

    def to(self, device) -> "DiffusionSystem":
        """A replica on ``device`` for ``solve(..., devices=[...])``; ``self`` is not modified.

        Latents, noise and tables are moved; the model is moved with
        :func:`pitsolve.extend.to_device`: an ``nn.Module`` (or a wrapper such
        as :class:`~pitsolve.adapters.diffusers.UNetModel` with its own ``to``)
        is shared where it already lives and copied elsewhere.  The rule is
        pure and device-agnostic, so replicas share it.
        """
        return replica(self, device, ("latents", "noise", "_lengths", "_timesteps", "_scale", "model"))

    def fingerprint(self):
        rule = self.rule
        return {
            **super().fingerprint(),
            "rule": f"{rule!r} {digest(rule)}",
            "rule timesteps, sigmas": digest((rule.timesteps, rule.sigma_boundary())),
            "boundaries": digest(self.boundaries),
            "noise": digest(self.noise),
            "model": digest(self.model),
        }

    def error_parts(self, new, old, indices):
        """Per image: ``RMS(x − x') / max(σ_n, c)``, ``[B, batch]``."""
        B, batch = new.shape[0], self.latents.shape[0]
        diff = (new - old)[:, self.monitored].reshape(B, batch, -1)
        rms = diff.pow(2).mean(dim=2).sqrt()
        return rms / self._scale[indices].to(rms.dtype).unsqueeze(1)

    def error_ratio(self, new, old, indices):
        return self.error_parts(new, old, indices).amax(dim=1)

    # -- fine steps ---------------------------------------------------------------
    def fine_step(self, parts, step: torch.Tensor, x0: Optional[torch.Tensor] = None):
        """One fine step of rows ``(x, x̂_0, h…)`` ``[R, *S]`` at per-row step indices ``[R]``.

        With ``x0`` given, the posterior step from that clean-sample prediction
        (Eq. 15, no model call); otherwise one model call.
        """
        x, history = parts[0], tuple(parts[2:])
        noise = self._noise_rows(step)
        if x0 is None:
            out = self._call_model(x, step)
            x_next, history, x0 = self.rule.step_and_denoise(x, out, step, history, noise)
        else:
            x_next, history = self.rule.posterior_step(x, x0, step, history, noise)
        return [x_next, x0, *history]

    def _call_model(self, x: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        out = self.model(self.rule.scale_model_input(x, step), self._timesteps[step])
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise InputValueError(
                f"the model returned {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__} "
                f"for input {tuple(x.shape)}; it must return the input's shape."
            )
        # A non-finite output is not raised here: on iterates far ahead of the accepted
        # front it is the iteration's fault, and the solver re-initialises those points;
        # at the front (or in the sequential solve) it ends the solve with NonFiniteError.
        return out

    def _noise_rows(self, step: torch.Tensor) -> Optional[torch.Tensor]:
        if self.noise is None:
            return None
        batch = self.latents.shape[0]
        image = torch.arange(step.numel(), device=step.device) % batch
        return self.noise[step, image]

    def rows(self, state_flat: torch.Tensor):
        """Flat states ``[B, D]`` → parts ``[B·batch, *S]``."""
        parts = self.spec.unflatten_batch(state_flat)
        return [p.reshape(-1, *p.shape[2:]) for p in parts]
