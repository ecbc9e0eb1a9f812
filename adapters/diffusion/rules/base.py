"""The abstract fine-step rule: one sampler step, batched over different step indices."""

from __future__ import annotations

import abc
from typing import Dict, Optional, Sequence, Tuple

import torch

from pitsolve import InputTypeError, InputValueError

from ..predictions import PREDICTION_TYPES, SampleClipping

__all__ = ["StepRule", "History", "check_train_timesteps"]

History = Tuple[torch.Tensor, ...]


def _as_timesteps(timesteps) -> torch.Tensor:
    """``[T]`` model timesteps: integers (DDPM grids) as ``long``, floats (Karras σ, flow-matching t) as float64."""
    ts = torch.as_tensor(timesteps)
    if ts.ndim != 1 or ts.numel() == 0 or ts.is_complex() or ts.dtype == torch.bool:
        raise InputValueError(
            f"timesteps must be a non-empty 1-D integer or float tensor in sampling order, got shape "
            f"{tuple(ts.shape)} and dtype {ts.dtype}."
        )
    if ts.is_floating_point():
        if not bool(torch.isfinite(ts).all()):
            raise InputValueError(f"timesteps must be finite, got {ts.tolist()}.")
        return ts.detach().to("cpu", torch.float64).clone()
    return ts.detach().to("cpu", torch.long).clone()


def check_train_timesteps(timesteps: torch.Tensor, num_train_timesteps: int) -> None:
    """Raise unless ``timesteps`` are integers strictly decreasing inside ``[0, num_train_timesteps)``."""
    if timesteps.is_floating_point():
        raise InputValueError(
            f"timesteps must be integer training timesteps (they index alphas_cumprod), got floats "
            f"{timesteps[:4].tolist()}…; pass an integer grid, or a rule for continuous timesteps."
        )
    lo, hi = int(timesteps.min()), int(timesteps.max())
    if lo < 0 or hi >= num_train_timesteps:
        raise InputValueError(
            f"timesteps must lie in [0, {num_train_timesteps - 1}] (the training timesteps of alphas_cumprod), "
            f"got {lo} … {hi}; check steps_offset and num_inference_steps."
        )
    if timesteps.numel() > 1 and not bool((timesteps[1:] < timesteps[:-1]).all()):
        raise InputValueError(f"timesteps must strictly decrease (sampling order), got {timesteps.tolist()}.")


class StepRule(abc.ABC):
    """One fine step ``x_{t_i} → x_{t_{i+1}}`` of a sampler, batched over different step indices.

    A rule is pure: every quantity a step needs is either a per-step constant
    tabulated at construction (float64, indexed by the step number ``i``) or
    passed in (the sample, the model output, the multistep ``history``, the
    noise).  So the rows of one call may sit at any steps of the chain, which
    is what a parallel-in-time sweep needs; Diffusers' schedulers instead keep
    a step counter and the previous model outputs inside the scheduler.

    Arithmetic runs in the promotion of the input dtype with float32 (half
    inputs are upcast and the result is cast back), with coefficients
    computed in float64 and rounded once.
    """

    #: ``[T]`` model timesteps in sampling order (what the model is called with at step ``i``):
    #: ``long`` for integer grids, float64 for continuous ones (Karras σ, flow matching).
    timesteps: torch.Tensor
    #: ``T``.
    num_steps: int
    #: One of :attr:`prediction_types`.
    prediction_type: str
    #: The model output parametrisations this rule converts (default: ε, v and x̂_0 of a VP model,
    #: :data:`~pitsolve.adapters.diffusion.predictions.PREDICTION_TYPES`).
    prediction_types: Tuple[str, ...] = PREDICTION_TYPES
    #: Converted model outputs carried in the state (0 for one-step rules).
    history_size: int = 0
    #: ``[T]`` which steps consume one fresh standard-normal draw of the sample's shape.
    noise_steps: torch.Tensor
    #: Whether :meth:`posterior_step` exists (the Eq. 17 rollout of :class:`~pitsolve.adapters.diffusion.PosteriorInit`).
    has_posterior: bool = True

    def __init__(self, timesteps, prediction_type: str, clipping: Optional[SampleClipping]):
        self.timesteps = _as_timesteps(timesteps)
        self.num_steps = int(self.timesteps.numel())
        if prediction_type not in self.prediction_types:
            raise InputValueError(
                f"prediction_type={prediction_type!r} is not supported by {type(self).__name__}; choose one of "
                f"{', '.join(map(repr, self.prediction_types))}."
            )
        self.prediction_type = prediction_type
        if clipping is None:
            clipping = SampleClipping()
        if not isinstance(clipping, SampleClipping):
            raise InputTypeError(f"clipping must be a SampleClipping or None, got {type(clipping).__name__}.")
        self.clipping = clipping
        self._tables: Dict[str, torch.Tensor] = {}
        self._cache: Dict[tuple, torch.Tensor] = {}
        self._set_noise_steps(torch.zeros(self.num_steps, dtype=torch.bool))

    # ------------------------------------------------------------------ interface
    @abc.abstractmethod
    def sigma_boundary(self) -> torch.Tensor:
        """``[T+1]`` float64: the noise scale ``σ`` of the sample before step ``i`` (index ``T``: after the last).

        The ``s_n`` of the stopping rule (Eq. 14).
        """

    @abc.abstractmethod
    def step(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        step_index: torch.Tensor,
        history: Sequence[torch.Tensor] = (),
        noise: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, History]:
        """``(x_next [B, *S], new_history)`` for rows ``x[b]`` at steps ``step_index[b]``.

        ``history`` holds :attr:`history_size` tensors ``[B, *S]``, most recent
        first (converted outputs of steps ``i−1, i−2, …``); entries a row's
        step does not need are ignored.  ``noise [B, *S]`` is read only by rows
        whose step is in :attr:`noise_steps`.
        """

    @abc.abstractmethod
    def denoise(self, x: torch.Tensor, model_output: torch.Tensor, step_index: torch.Tensor) -> torch.Tensor:
        """``x̂_0`` (Eq. 16) with this rule's clipping/thresholding, as its step uses it."""

    @abc.abstractmethod
    def posterior_step(
        self,
        x: torch.Tensor,
        x0: torch.Tensor,
        step_index: torch.Tensor,
        history: Sequence[torch.Tensor] = (),
        noise: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, History]:
        """:meth:`step` with the clean-sample prediction replaced by ``x0`` (used as given, not clipped).

        The posterior ``q(x_{t_{i+1}} | x_{t_i}, x̂_0)`` of the paper's Eq. 15/17, at no model cost.
        """

    def step_and_denoise(
        self,
        x: torch.Tensor,
        model_output: torch.Tensor,
        step_index: torch.Tensor,
        history: Sequence[torch.Tensor] = (),
        noise: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, History, torch.Tensor]:
        """``(x_next, new_history, x̂_0)``: :meth:`step` and :meth:`denoise` of one model-driven fine step.

        A rule whose step computes ``x̂_0`` anyway (the generic bridge, from the
        scheduler's ``pred_original_sample``) overrides this to do the work once.
        """
        x0 = self.denoise(x, model_output, step_index)
        x_next, history = self.step(x, model_output, step_index, history, noise)
        return x_next, history, x0

    def scale_model_input(self, x: torch.Tensor, step_index: torch.Tensor) -> torch.Tensor:
        """The model's input for rows ``x`` at steps ``step_index`` (Diffusers' ``scale_model_input``).

        Identity by default; σ-parametrised samplers (Euler, Heun, LMS, …) divide by ``√(σ² + 1)``.
        """
        return x

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_steps={self.num_steps}, prediction_type={self.prediction_type!r})"

    def _set_noise_steps(self, flags: torch.Tensor) -> None:
        self.noise_steps = flags.to("cpu", torch.bool).clone()
        self._set_tables(noise=self.noise_steps)

    def _set_tables(self, **tables: torch.Tensor) -> None:
        """Register per-step tables ``[T]``: float ones as float64, boolean ones as masks."""
        for name, value in tables.items():
            self._tables[name] = value if value.dtype == torch.bool else value.to(torch.float64)
        self._cache.clear()

    def _rows(self, name: str, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``table[idx]`` on ``like``'s device (float tables in its dtype), shaped ``[B, 1, …, 1]``."""
        table = self._tables[name]
        dtype = table.dtype if table.dtype == torch.bool else like.dtype
        key = (name, like.device, dtype)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._cache[key] = table.to(device=like.device, dtype=dtype)
        return cached[idx].reshape(-1, *([1] * (like.ndim - 1)))

    @staticmethod
    def _compute_dtype(x: torch.Tensor) -> torch.dtype:
        if not x.is_floating_point():
            raise InputTypeError(f"the sample must be a floating-point tensor, got dtype {x.dtype}.")
        return torch.promote_types(x.dtype, torch.float32)

    def _check(
        self,
        x: torch.Tensor,
        other: torch.Tensor,
        other_name: str,
        step_index,
        history: Optional[Sequence[torch.Tensor]] = None,
        noise: Optional[torch.Tensor] = None,
        *,
        noise_check: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, History, Optional[torch.Tensor]]:
        """Validate one call; return ``(x, other, idx, history, noise)`` in the compute dtype on ``x``'s device."""
        if not isinstance(x, torch.Tensor) or not isinstance(other, torch.Tensor):
            raise InputTypeError(f"x and {other_name} must be tensors, got {type(x).__name__}, {type(other).__name__}.")
        if x.ndim < 2:
            raise InputValueError(f"x must have shape [B, *S] with a non-empty S, got shape {tuple(x.shape)}.")
        if other.shape != x.shape:
            raise InputValueError(f"{other_name} shape {tuple(other.shape)} differs from x shape {tuple(x.shape)}.")
        idx = torch.as_tensor(step_index)
        if idx.is_floating_point() or idx.dtype == torch.bool or idx.shape != (x.shape[0],):
            raise InputValueError(
                f"step_index must be an integer tensor of shape [B]=[{x.shape[0]}], got shape {tuple(idx.shape)} "
                f"and dtype {idx.dtype}."
            )
        lo, hi = (int(v) for v in torch.aminmax(idx)) if idx.numel() else (0, 0)
        if lo < 0 or hi >= self.num_steps:
            raise InputValueError(f"step_index must lie in [0, {self.num_steps - 1}], got values {lo} … {hi}.")
        idx = idx.to(device=x.device, dtype=torch.long)
        if history is None:  # a call that takes no history (denoise)
            history = ()
        elif len(history) != self.history_size:
            raise InputValueError(
                f"{type(self).__name__} carries history_size={self.history_size} converted outputs, "
                f"got a history of {len(history)}."
            )
        for j, h in enumerate(history):
            if not isinstance(h, torch.Tensor) or h.shape != x.shape:
                raise InputValueError(f"history[{j}] must be a tensor of shape {tuple(x.shape)}.")
        dt = self._compute_dtype(x)
        if noise is not None:
            if not isinstance(noise, torch.Tensor) or noise.shape != x.shape:
                raise InputValueError(f"noise must be a tensor of shape {tuple(x.shape)} (or None).")
            noise = noise.to(device=x.device, dtype=dt)
        elif noise_check and bool(self._rows("noise", idx, x).any()):
            first = int(idx[self._rows("noise", idx, x).reshape(-1)][0])
            raise InputValueError(
                f"step {first} of {type(self).__name__} consumes a standard-normal draw; pass noise of shape "
                f"{tuple(x.shape)}."
            )
        history = tuple(h.to(device=x.device, dtype=dt) for h in history)
        return x.to(dt), other.to(device=x.device, dtype=dt), idx, history, noise
