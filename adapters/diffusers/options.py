"""The sampling functions' options, defined once: :class:`SampleSetup`, :class:`Conditioning`, :class:`SolveOptions`.

:func:`~pitsolve.adapters.diffusers.parallel_sample`,
:func:`~pitsolve.adapters.diffusers.sequential_sample`,
:func:`~pitsolve.adapters.diffusers.build_system` and
:class:`~pitsolve.adapters.diffusers.ParallelDiffusionPipeline` take these
three groups, either as objects (``options=SolveOptions(window=16)``) or as
flat keyword arguments (``window=16``), which :func:`gather` routes to the
group that declares the field.  The fields, their defaults and their
documentation live here only, so the functions cannot drift apart.

Fields of :class:`SolveOptions` left at :data:`SAMPLER_DEFAULT` take the
sampler's measured default (:func:`resolve`; the registry entry of the
scheduler, :data:`~pitsolve.adapters.diffusion.rules.registry.SAMPLERS`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

import pitsolve
from pitsolve import InputTypeError

from ..diffusion.rules.registry import defaults_for
from ..diffusion.system import DEFAULT_SCALE_FLOOR

__all__ = ["SampleSetup", "Conditioning", "SolveOptions", "SAMPLER_DEFAULT", "DEFAULT_TOL", "gather", "resolve"]

#: The default ``tol``: the final sample's estimated distance from the sequential sample, relative to
#: the data scale (``RMS(Δx)/max(σ, scale_floor)`` with ``σ_0 = 0``), 1 %.
DEFAULT_TOL = 1e-2


class _SamplerDefault:
    """The value of a :class:`SolveOptions` field that the sampler's registry entry decides."""

    def __repr__(self) -> str:
        return "SAMPLER_DEFAULT"

    def __reduce__(self):
        return "SAMPLER_DEFAULT"


#: "The sampler's measured default" (see :func:`resolve`).
SAMPLER_DEFAULT = _SamplerDefault()

Generator = Union[None, torch.Generator, Sequence[torch.Generator]]


@dataclass(frozen=True)
class SampleSetup:
    """What is sampled: the noise, its shape, the grouping of steps and where the model runs.

    Attributes:
        latents: initial noise ``[batch, C, H, W]``; otherwise drawn from
            ``generator`` with ``shape`` (default: one image of the UNet's
            configured size).
        generator: a ``torch.Generator`` (or one per image) for the latents and
            every step's noise, drawn up front in the order of Diffusers' own loop.
        shape: ``(batch, C, H, W)`` when ``latents`` are not given.
        intervals: ``N``, the subintervals the ``T`` steps are grouped into (default ``T``).
        eta: DDIM's η, or the ``eta`` of a scheduler whose step takes one; ``None``: the scheduler's.
        max_batch: cap on the rows of one UNet call (calls are split; results do not change).
        dtype: the state's dtype (default: float64 for a float64 model, else float32).
        devices: spread each sweep over these devices (the UNet is replicated once per device);
            the samples come back on ``devices[0]``.
    """

    latents: Optional[torch.Tensor] = None
    generator: Generator = None
    shape: Optional[Sequence[int]] = None
    intervals: Optional[int] = None
    eta: Optional[float] = None
    max_batch: Optional[int] = None
    dtype: Optional[torch.dtype] = None
    devices: Optional[Sequence] = None


@dataclass(frozen=True)
class Conditioning:
    """What the UNet is conditioned on.

    Attributes:
        guidance_scale: classifier-free guidance weight; needs ``encoder_hidden_states`` and,
            above 1, ``negative_encoder_hidden_states`` (each call then has twice the rows).
        encoder_hidden_states: text-encoder states ``[batch, tokens, dim]``.
        negative_encoder_hidden_states: the unconditional (negative-prompt) states.
        class_labels: class indices ``[batch]`` for a class-conditional UNet.
    """

    guidance_scale: Optional[float] = None
    encoder_hidden_states: Optional[torch.Tensor] = None
    negative_encoder_hidden_states: Optional[torch.Tensor] = None
    class_labels: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class SolveOptions:
    """How the parallel solve runs: the fields of :class:`pitsolve.SolveOptions` (``devices`` is in
    :class:`SampleSetup`; a per-sweep ``callback`` needs :func:`pitsolve.solve` on :func:`build_system`'s
    system), with the sampler's defaults, plus the sampler's own ``scale_floor`` and ``preconditioning_steps``.

    :func:`~pitsolve.adapters.diffusers.sequential_sample` accepts and ignores
    them, so one set of keyword arguments drives both samplers.

    Attributes:
        jacobian: the strategy (a name of :data:`pitsolve.jacobians.REGISTRY` or an instance).
        window: points iterated at once: an int, ``None`` (all N), ``"auto"`` or a
            :class:`pitsolve.AutoWindow`.
        tol: bound on the final sample's estimated error against the sequential sample,
            in ``RMS(Δx)/max(σ, scale_floor)`` (:data:`DEFAULT_TOL`).
        stopping: ``"error"`` (the error bound) or ``"eq14"`` (the paper's change test).
        scale_floor: the floor of the error measure's scale (``1.0``: the data scale; ``None``: σ alone).
        preconditioning_steps: ``M``, the model steps of the Eq. 17 start.
        init: another initialiser instead of the Eq. 17 start.
        max_iters: stop after this many sweeps (``None``: N, which always suffices).
        progress: show a progress bar.
        throw: raise when the solve does not converge (else return the partial solution).
        executor: a :class:`pitsolve.Executor` instead of ``devices`` (e.g. under ``torchrun``).
        guard: the divergence guard (:class:`pitsolve.Guard`; ``False``: the bare strategy).
        trajectory: keep every boundary state in ``Solution.ys`` (``False``: first and last only).

    ``jacobian``, ``window`` and ``preconditioning_steps`` default to
    :data:`SAMPLER_DEFAULT`: the values the benchmarks measured best for the
    scheduler's family (:func:`resolve`).
    """

    jacobian: Any = SAMPLER_DEFAULT
    window: Any = SAMPLER_DEFAULT
    tol: float = DEFAULT_TOL
    stopping: str = "error"
    scale_floor: Optional[float] = DEFAULT_SCALE_FLOOR
    preconditioning_steps: Any = SAMPLER_DEFAULT
    init: Any = None
    max_iters: Optional[int] = None
    progress: bool = False
    throw: bool = True
    executor: Optional[pitsolve.Executor] = None
    guard: Any = True
    trajectory: bool = True


_GROUPS = (SampleSetup, Conditioning, SolveOptions)
_OWNER = {f.name: group for group in _GROUPS for f in fields(group)}


def gather(
    flat: Mapping[str, Any],
    setup: Optional[SampleSetup] = None,
    conditioning: Optional[Conditioning] = None,
    options: Optional[SolveOptions] = None,
    *,
    accept: Tuple[type, ...] = _GROUPS,
    where: str = "parallel_sample",
) -> Tuple[SampleSetup, Conditioning, SolveOptions]:
    """The three option groups from the objects given and the flat keyword arguments ``flat``.

    A flat name is routed to the group that declares it; a name no group in
    ``accept`` declares, a group object of the wrong type, or a field given
    both in an object and flat raises :class:`~pitsolve.InputTypeError`.
    """
    given = {SampleSetup: setup, Conditioning: conditioning, SolveOptions: options}
    for group, value in given.items():
        if value is not None and not isinstance(value, group):
            name = {SampleSetup: "setup", Conditioning: "conditioning", SolveOptions: "options"}[group]
            raise InputTypeError(f"{name} is a {type(value).__name__}; pass a {group.__name__}(...) or None.")
    updates: Dict[type, Dict[str, Any]] = {group: {} for group in _GROUPS}
    for name, value in flat.items():
        group = _OWNER.get(name)
        if group is None or group not in accept:
            known = ", ".join(f.name for g in accept for f in fields(g))
            raise InputTypeError(f"{where} got an unexpected option {name!r}; its options are: {known}.")
        if given[group] is not None:
            raise InputTypeError(
                f"{where} got {name}= and a {group.__name__} object; pass {name} in the object or flat, not both."
            )
        updates[group][name] = value
    return tuple(  # type: ignore[return-value]
        dataclasses.replace(given[g] if given[g] is not None else g(), **updates[g]) for g in _GROUPS
    )


def _tunable(executor) -> bool:
    """Whether ``window="auto"`` can time the model here (not across the ranks of a process group)."""
    return executor is None or isinstance(executor, (pitsolve.LocalExecutor, pitsolve.MultiDeviceExecutor))


def resolve(options: SolveOptions, scheduler) -> Tuple[SolveOptions, Dict[str, str]]:
    """``options`` with every :data:`SAMPLER_DEFAULT` replaced by the scheduler's registry default.

    Returns the resolved options and a record of the sampler settings: each
    value, and whether it was given or is the default of which registry entry
    (with the benchmark record that justifies it), for ``Solution.settings``.
    """
    entry_name, defaults = defaults_for(scheduler)
    values, record = {}, {}
    for name in ("jacobian", "window", "preconditioning_steps"):
        value = getattr(options, name)
        if value is SAMPLER_DEFAULT and name == "window" and not _tunable(options.executor):
            # Timing is per process: ranks would measure differently.  All N is the same on every rank.
            value = None
            record[name] = f"None (default of {entry_name} under {type(options.executor).__name__}: all N)"
        elif value is SAMPLER_DEFAULT:
            value = getattr(defaults, name)
            record[name] = f"{value!r} (default of {entry_name})"
        else:
            record[name] = f"{value!r} (given)"
        values[name] = value
    record["scale_floor"] = repr(options.scale_floor)
    record["defaults_evidence"] = defaults.evidence
    return dataclasses.replace(options, **values), record
