r"""The generic bridge: any Diffusers scheduler's own ``step``, made pure by carrying its mutable state.

A Diffusers scheduler is a state machine: ``step(model_output, t, sample)``
reads and writes hidden attributes (``_step_index``, ``model_outputs``,
``lower_order_nums``, PNDM's ``ets``, Heun's ``prev_derivative``/``dt``/
``sample``, …).  A parallel-in-time sweep needs the opposite: a pure
``Φ`` that can step rows sitting at *different* steps of the chain in one
call (docs/design.md, "Diffusion samplers").  :class:`SchedulerBridgeRule`
gets there without re-deriving any formula:

1. **Dry runs** (at construction, on deep copies, with dummy tensors of an
   unusual shape ``[2, 3, 4, 5]``): the scheduler is stepped through all
   ``T = len(scheduler.timesteps)`` steps twice, with different dummy data,
   and its ``__dict__`` is recorded before every step.  An attribute whose
   value is the same in both runs at every step depends on the step index
   only (step counters, ``lower_order_nums``, Heun's ``dt``, flags); it is
   *static* and restored per step from the record.  An attribute that
   differs, or holds a sample-shaped tensor, is *carried*: it must be a
   sample-shaped tensor, ``None``, or a list/tuple of those, and each such
   tensor position is one *slot* of the rule's history.
2. **The step of a row at step ``i``** rebuilds a scheduler object from the
   static record of step ``i`` and the carried slots of that row (``history``),
   calls the scheduler's own ``step``, and reads the carried slots back out:

   .. code-block:: text

       (x_{i+1}, h_{i+1}) = Φ_i(x_i, h_i) = read(step(restore(static_i, h_i), ε̂_i, t_i, x_i))

   so ``Φ_i`` depends on the state alone and the parallel solve equals the
   sequential loop.  Rows at the same step are stepped by one call (a
   point's images together); one call per distinct step of the batch.
3. **A self-check**: the dummy run is replayed through (2), once row by row
   in order and once batched over all steps, under two global seeds.  Any
   mismatch (a scheduler whose state cannot be snapshotted, hidden global
   randomness, in-place mutation of shared tables) is an
   :class:`~pitsolve.InputValueError` at construction, before any model call.

**Noise.**  Stochastic schedulers (DDPM, Euler ancestral, SDE-DPM-Solver++,
LCM, TCD, KDPM2 ancestral, …) draw their noise with Diffusers'
``randn_tensor``.  The bridge installs (once, thread-safely) a tap on the
scheduler module's ``randn_tensor`` that, *only while the bridge steps*,
returns the noise the caller passes instead of drawing; otherwise it
delegates to Diffusers unchanged.  The dry run records which steps draw
(:attr:`noise_steps`), so the noise of every (step, image) is drawn up front
from the user's generator (:func:`~pitsolve.adapters.diffusers.draw_noise`,
latents first, then the steps in order).  That is the order and shape
Diffusers' own loop draws in from the same generator, so the samples agree
with it too; where a scheduler draws differently (several draws per step,
another shape, its own seeded source such as ``DPMSolverSDEScheduler``'s
Brownian tree) the bridge refuses it with the reason.

**Steps and cost.**  One fine step is one ``scheduler.step`` call and one
model call: Heun and KDPM2 have two fine steps per timestep (their
``timesteps`` list has ``2T − 1`` entries), counted honestly in depth and
NFE.  The per-call overhead is a dict rebuild and the scheduler's own
arithmetic (docs/diffusers.md, "The generic bridge").

**Clean-sample prediction and posterior.**  ``x̂_0`` (Eq. 16) is the step's
``pred_original_sample`` when it returns one.  Where the parametrisation is
known — variance preserving (``x = α_t x_0 + σ_t ε``, ``α_t² = ᾱ_t``),
σ-scaled (``x = x_0 + σ ε``, model input ``x/√(σ² + 1)``, detected from
``scale_model_input``) or flow matching (``x = (1 − σ) x_0 + σ ε``, velocity
``v = ε − x_0``) — :meth:`denoise` converts a model output to ``x̂_0`` and
:meth:`posterior_step` runs the scheduler's own step on the model output
implied by a given ``x̂_0`` (the sampler's path given that prediction, as the
hand-written rules' Eq. 15 steps).  Otherwise :attr:`has_posterior` is
``False``, :meth:`posterior_step` raises, and
:class:`~pitsolve.adapters.diffusion.PosteriorInit` copies the newest exact
state forward instead.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import sys
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pitsolve import InputTypeError, InputValueError

from ..predictions import model_output_to_x0_eps
from .base import History, StepRule

__all__ = ["SchedulerBridgeRule", "UnsupportedScheduler"]

#: The dummy sample shape of the dry runs: unusual, so a tensor of this shape in a scheduler's state is sample data.
_DUMMY_SHAPE = (2, 3, 4, 5)
_STEP_ARGS = ("model_output", "timestep", "sample")


class UnsupportedScheduler(InputValueError):
    """A scheduler the bridge cannot make pure; the message names the reason and what to use instead."""


# --------------------------------------------------------------------------- the noise tap
_LOCAL = threading.local()


class _Tap:
    """What the tapped ``randn_tensor`` does while the bridge steps (per thread)."""

    def __init__(self, noise: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None):
        self.noise, self.generator, self.shapes, self.drawn = noise, generator, [], []


def _tapped(original):
    def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
        tap = getattr(_LOCAL, "tap", None)
        if tap is None:  # not inside a bridge step: Diffusers' own draw
            return original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
        shape = tuple(shape)
        tap.shapes.append(shape)
        if tap.generator is not None:  # a dry run: draw from its private generator
            out = torch.randn(shape, generator=tap.generator, dtype=dtype or torch.float32)
            tap.drawn.append(out)
        else:
            if tap.noise is None or len(tap.shapes) > 1 or tuple(tap.noise.shape) != shape:
                raise InputValueError(
                    f"the scheduler drew noise of shape {shape} (draw {len(tap.shapes)}) where the bridge recorded "
                    f"{'none' if tap.noise is None else tuple(tap.noise.shape)}; its noise draws depend on more "
                    "than the step index, which the bridge does not support."
                )
            out = tap.noise
        return out.to(device=device or out.device, dtype=dtype or out.dtype)

    randn_tensor._pitsolve_tap = True  # type: ignore[attr-defined]
    return randn_tensor


_INSTALL_LOCK = threading.Lock()


def _install_tap(cls) -> None:
    """Tap ``randn_tensor`` in the modules that define ``cls`` and its bases (idempotent)."""
    with _INSTALL_LOCK:
        for klass in cls.__mro__:
            module = sys.modules.get(klass.__module__)
            fn = getattr(module, "randn_tensor", None) if module is not None else None
            if callable(fn) and not getattr(fn, "_pitsolve_tap", False):
                module.randn_tensor = _tapped(fn)


@contextlib.contextmanager
def _tap(tap: _Tap):
    previous = getattr(_LOCAL, "tap", None)
    _LOCAL.tap = tap
    try:
        yield tap
    finally:
        _LOCAL.tap = previous


# --------------------------------------------------------------------------- state records
def _same(a, b) -> bool:
    """Structural equality of two recorded attribute values (tensors bitwise)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        a, b = a.detach().cpu(), b.detach().cpu()
        if a.is_floating_point() or a.is_complex():
            return bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))  # NaN/inf tables (KDPM2)
        return bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if a is None or isinstance(a, (bool, int, float, str, complex, torch.dtype, torch.device)):
        return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))
    if hasattr(a, "__dict__"):
        return _same(vars(a), vars(b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an opaque object: equal only if identical
        return a is b


def _is_sample(v) -> bool:
    return isinstance(v, torch.Tensor) and tuple(v.shape) == _DUMMY_SHAPE


def _holds_sample(v) -> bool:
    if isinstance(v, (list, tuple)):
        return any(_holds_sample(e) for e in v)
    return _is_sample(v)


def _layout(value):
    """``None`` | ``"tensor"`` | ``(list|tuple, [bool present per position])`` for a carried value, or raise."""
    if value is None:
        return None
    if _is_sample(value):
        return "tensor"
    if isinstance(value, (list, tuple)) and all(e is None or _is_sample(e) for e in value):
        return (type(value), [e is not None for e in value])
    raise TypeError(type(value).__name__)


def _fresh(value):
    """A copy of a static value deep enough that a step mutating containers in place cannot touch the record."""
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    if isinstance(value, dict) and type(value) is dict:
        return {k: _fresh(v) for k, v in value.items()}
    return value


def _uniform_ratio(scaled: torch.Tensor, sample: torch.Tensor) -> Optional[float]:
    """``c`` if ``scaled == c · sample`` (to float32 rounding), else ``None``."""
    ratio = (scaled.double() / sample.double()).flatten()
    c = float(ratio.median())
    return c if bool(((ratio - c).abs() <= 1e-5 * abs(c) + 1e-12).all()) else None


class SchedulerBridgeRule(StepRule):
    """The fine steps of any Diffusers scheduler, by its own ``step`` on per-row snapshots of its state.

    Build it with :meth:`from_scheduler` (a fresh scheduler from the given
    one's config; the user's scheduler is never mutated).  See the module
    docstring for how the state is split into static records and carried
    slots, and how noise is fixed up front.

    Attributes:
        scheduler_class: the Diffusers class name.
        carried: ``{attribute: number of slots}`` of the scheduler state carried as history.
        parametrisation: ``"vp"``, ``"sigma"``, ``"flow"`` or ``None`` (see the module docstring).
        has_posterior: whether :meth:`posterior_step` exists (parametrisation known).
        init_noise_sigma: the scheduler's ``init_noise_sigma`` after ``set_timesteps`` (the latents' scale).
    """

    def __init__(self, scheduler, *, step_kwargs: Optional[Dict] = None):
        """``scheduler``: a Diffusers scheduler *after* ``set_timesteps``; it is deep-copied, never stepped."""
        self._proto = copy.deepcopy(scheduler)
        self._cls = type(scheduler)
        self.scheduler_class = self._cls.__name__
        self._step_kwargs = dict(step_kwargs or {})
        config = dict(scheduler.config)
        prediction = config.get("prediction_type", "epsilon")
        super().__init__(scheduler.timesteps.detach().cpu(), "epsilon", None)
        self.prediction_type = prediction  # may be "flow_prediction" (read by the conversions below only)
        self._t = [t.clone() for t in scheduler.timesteps.detach().cpu()]  # what step() is called with
        self.init_noise_sigma = getattr(scheduler, "init_noise_sigma", 1.0)
        self._has_smi = callable(getattr(self._cls, "scale_model_input", None))
        _install_tap(self._cls)
        with torch.random.fork_rng(devices=[]):
            run_a = self._dry_run(seed=1)
            run_b = self._dry_run(seed=2)
        self._split_state(run_a, run_b)
        self._noise_flags = torch.tensor([len(s) == 1 for s in run_a["draws"]], dtype=torch.bool)
        self._set_noise_steps(self._noise_flags)
        self._returns_x0 = run_a["x0"]
        self._parametrise(run_a, config)
        with torch.random.fork_rng(devices=[]):
            self._self_check(run_a)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int, *, eta: Optional[float] = None):
        """The bridge for ``scheduler`` after ``set_timesteps(num_inference_steps)`` on a fresh copy.

        ``eta``: passed to ``step(eta=…)`` where the scheduler's step takes it
        (TCD's γ); ``None`` keeps the scheduler's default.  Any other
        scheduler takes ``eta`` of 0 or ``None``.
        """
        from pitsolve.extend import as_integer

        n = as_integer(num_inference_steps)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputValueError(f"num_inference_steps must be an int >= 1, got {num_inference_steps!r}.")
        name = type(scheduler).__name__
        if not callable(getattr(type(scheduler), "step", None)):
            raise UnsupportedScheduler(
                f"{name} cannot be served by the generic bridge: it has no step(model_output, timestep, sample) "
                "method. Supported classes are listed in docs/schedulers.md."
            )
        step_params = inspect.signature(type(scheduler).step).parameters
        kwargs = {}
        if eta is not None:
            if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
                raise InputTypeError(f"eta must be a finite float or None, got {eta!r}.")
            if "eta" in step_params:
                kwargs["eta"] = float(eta)
            elif eta != 0:
                raise InputValueError(f"eta={eta} does not apply to {name} (its step takes no eta); pass eta=None or 0.")
        config = {k: v for k, v in scheduler.config.items() if k != "_use_default_values"}
        trained = config.get("num_train_timesteps")
        if isinstance(trained, int) and n > trained and "FlowMatch" not in name:
            raise InputValueError(
                f"num_inference_steps={n} is larger than the scheduler's num_train_timesteps={trained}; "
                f"pass num_inference_steps <= {trained}."
            )
        try:
            fresh = type(scheduler).from_config(config)
            fresh.set_timesteps(n)
        except Exception as err:  # noqa: BLE001 - any failure of a foreign scheduler's own set-up
            raise UnsupportedScheduler(
                f"{name}.set_timesteps({n}) failed ({type(err).__name__}: {err}); the bridge calls set_timesteps "
                "with num_inference_steps only. Use a scheduler config that needs no further arguments "
                "(e.g. use_dynamic_shifting=False)."
            ) from None
        return cls(fresh, step_kwargs=kwargs)

    def _unsupported(self, why: str) -> UnsupportedScheduler:
        return UnsupportedScheduler(
            f"{self.scheduler_class} cannot be served by the generic bridge: {why}. Supported classes are listed in "
            "docs/schedulers.md; the nearest deterministic choices are EulerDiscreteScheduler, "
            "DPMSolverMultistepScheduler and DDIMScheduler."
        )

    def _dry_run(self, seed: int) -> Dict:
        """Step a deep copy through all T steps on dummy data, recording its state before each step."""
        params = inspect.signature(self._cls.step).parameters
        missing = [p for p in list(params)[1:] if p not in _STEP_ARGS and params[p].default is inspect.Parameter.empty
                   and params[p].kind not in (params[p].VAR_POSITIONAL, params[p].VAR_KEYWORD)]
        if any(a not in params for a in _STEP_ARGS) or missing:
            raise self._unsupported(
                f"its step takes {list(params)[1:]} (a step needs model_output, timestep, sample"
                f"{' and no required ' + ', '.join(missing) if missing else ''})"
            )
        sched = copy.deepcopy(self._proto)
        g = torch.Generator().manual_seed(seed)
        sample = torch.randn(_DUMMY_SHAPE, generator=g) * float(self.init_noise_sigma)
        pre, states, draws, outs, noises, samples, scales, inputs = [], [], [], [], [], [], [], []
        x0 = True
        try:
            for t in self._t:
                pre.append(copy.deepcopy(sched.__dict__))
                scaled = sched.scale_model_input(sample, t) if self._has_smi else sample
                scales.append(1.0 if scaled is sample else _uniform_ratio(scaled, sample))
                inputs.append(scaled)
                states.append(copy.deepcopy(sched.__dict__))
                out = torch.randn(_DUMMY_SHAPE, generator=g)
                tap = _Tap(generator=g)
                with _tap(tap):
                    res = sched.step(out, t, sample, return_dict=True, **self._step_kwargs)
                prev = getattr(res, "prev_sample", None)
                if not isinstance(prev, torch.Tensor) or tuple(prev.shape) != _DUMMY_SHAPE:
                    raise self._unsupported("its step returns no prev_sample of the sample's shape")
                x0 = x0 and isinstance(getattr(res, "pred_original_sample", None), torch.Tensor)
                draws.append(tap.shapes)
                noises.append(tap.drawn[0] if tap.drawn else torch.zeros(_DUMMY_SHAPE))
                outs.append(out)
                samples.append(sample)
                sample = prev
        except UnsupportedScheduler:
            raise
        except Exception as err:  # noqa: BLE001 - any failure of a foreign scheduler on a plain float sample
            raise self._unsupported(f"a dry run of its step failed ({type(err).__name__}: {err})") from None
        for i, shapes in enumerate(draws):
            if len(shapes) > 1 or any(s != _DUMMY_SHAPE for s in shapes):
                raise self._unsupported(f"step {i} draws noise {shapes} (the bridge fixes one sample-shaped draw a step)")
        states.append(copy.deepcopy(sched.__dict__))
        return {"pre": pre, "states": states, "draws": draws, "outs": outs, "samples": samples + [sample],
                "noise": torch.stack(noises), "inputs": inputs,
                "scales": scales, "x0": x0}

    def _split_state(self, run_a: Dict, run_b: Dict) -> None:
        """Static per-step records and carried slots (module docstring, item 1)."""
        keys = sorted(set().union(*(s.keys() for s in run_a["states"] + run_a["pre"])))
        carried: List[str] = []
        for k in keys:
            for sa, sb in zip(run_a["states"] + run_a["pre"], run_b["states"] + run_b["pre"]):
                va, vb = sa.get(k), sb.get(k)
                if _holds_sample(va) or _holds_sample(vb) or not _same(va, vb):
                    carried.append(k)
                    break
        slots: Dict[Tuple[str, Optional[int]], int] = {}
        layouts: List[Dict] = []
        for state, other in zip(run_a["states"], run_b["states"]):
            lay = {}
            for k in carried:
                va = state.get(k)
                if _same(va, other.get(k)) and not _holds_sample(va):
                    lay[k] = ("static", va)  # e.g. PNDM's cur_model_output = 0 between its Runge–Kutta stages
                    continue
                try:
                    lay[k] = _layout(va)
                except TypeError as err:
                    raise self._unsupported(
                        f"its state attribute {k!r} (a {err}) depends on the sample but is not a sample-shaped tensor "
                        "or a list of them, so it cannot be carried"
                    ) from None
                if lay[k] == "tensor":
                    slots.setdefault((k, None), len(slots))
                elif lay[k] is not None and lay[k][0] != "static":
                    for p, present in enumerate(lay[k][1]):
                        if present:
                            slots.setdefault((k, p), len(slots))
            layouts.append(lay)
        self.carried = {k: sum(1 for (a, _) in slots if a == k) for k in carried}
        self._slots, self._layouts = slots, layouts
        self.history_size = len(slots)
        self._static = [{k: v for k, v in s.items() if k not in carried} for s in run_a["states"][:-1]]
        self._static_pre = [{k: v for k, v in s.items() if k not in carried} for s in run_a["pre"]]

    def _parametrise(self, run_a: Dict, config: Dict) -> None:
        """Which of x = α x_0 + σ ε (vp), x = x_0 + σ ε (sigma), x = (1 − σ) x_0 + σ ε (flow) the sample follows."""
        T = self.num_steps
        scales = run_a["scales"]
        kind, alpha, sigma = None, None, None
        flow = "FlowMatch" in self.scheduler_class or self.prediction_type == "flow_prediction" or bool(
            config.get("use_flow_sigmas", False))
        abar = getattr(self._proto, "alphas_cumprod", None)
        t = self.timesteps
        if any(c is None for c in scales):
            pass  # a non-scalar input scaling: unknown
        elif any(c != 1.0 for c in scales):
            if all(0 < c <= 1 for c in scales):  # c_in = 1/√(σ² + 1)
                kind = "sigma"
                sigma = (1 / torch.tensor(scales, dtype=torch.float64) ** 2 - 1).clamp_min(0).sqrt()
                sigma = self._snap_to_tables(sigma)
                alpha = torch.ones(T, dtype=torch.float64)
        elif flow:
            sigma = t.to(torch.float64) / float(config.get("num_train_timesteps", 1000))
            if bool(((sigma >= 0) & (sigma <= 1)).all()):
                kind, alpha = "flow", 1 - sigma
                if "prediction_type" not in config:  # FlowMatch schedulers: the model predicts the velocity
                    self.prediction_type = "flow_prediction"
        elif isinstance(abar, torch.Tensor) and bool((t == t.round()).all()):
            ti = t.long()
            if int(ti.min()) >= 0 and int(ti.max()) < abar.numel():
                abar = abar.to(torch.float64)[ti]
                kind, alpha, sigma = "vp", abar.sqrt(), (1 - abar).sqrt()
        if kind is not None and self.prediction_type not in ("epsilon", "v_prediction", "sample", "flow_prediction"):
            kind = None
        if kind == "flow" and self.prediction_type not in ("flow_prediction", "epsilon", "sample"):
            kind = None
        self.parametrisation = kind
        self.has_posterior = kind is not None
        if kind is None:
            self._sigma_boundary = torch.ones(T + 1, dtype=torch.float64)
            return
        self._set_tables(p_alpha=alpha, p_sigma=sigma)
        self._sigma_boundary = torch.cat([sigma, sigma.new_zeros(1)])

    def _snap_to_tables(self, sigma: torch.Tensor) -> torch.Tensor:
        """Each σ recovered from the float32 ``c_in`` replaced by the nearest entry of the scheduler's own σ tables.

        ``σ = √(1/c² − 1)`` loses digits for large σ; the scheduler's ``sigmas``
        (and KDPM2's ``sigmas_interpol``) hold the exact values it used.
        """
        tables = [v.detach().to("cpu", torch.float64).flatten() for k, v in vars(self._proto).items()
                  if "sigma" in k and isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() > 1]
        if not tables:
            return sigma
        table = torch.cat(tables)
        table = table[torch.isfinite(table)]
        nearest = table[(table[None, :] - sigma[:, None]).abs().argmin(dim=1)]
        close = (nearest - sigma).abs() <= 1e-4 * sigma.abs().clamp_min(1.0)
        return torch.where(close, nearest, sigma)

    def _self_check(self, run: Dict) -> None:
        """Replay the dummy run row by row and batched, under two global seeds; raise on any mismatch."""
        T, ref = self.num_steps, run["samples"]
        noise = run["noise"]
        results = []
        for seed in (11, 12):
            torch.manual_seed(seed)
            x, h, xs, hs = ref[0], tuple(torch.zeros(_DUMMY_SHAPE) for _ in range(self.history_size)), [], []
            for i in range(T):
                xs.append(x)
                hs.append(h)
                x, h, _ = self._run(x, run["outs"][i], torch.full((2,), i), h, noise[i])
            results.append(x)
            # batched: every step's row in one call, with the histories of the replay
            flat = lambda seq: torch.cat(list(seq))  # noqa: E731
            xb, _, _ = self._run(
                flat(xs), flat(run["outs"]), torch.arange(T).repeat_interleave(2),
                tuple(flat(hh[j] for hh in hs) for j in range(self.history_size)), flat(noise),
            )
            if not torch.allclose(xb[-2:], x, rtol=1e-5, atol=1e-6):
                raise self._unsupported("stepping rows of different steps in one call differs from stepping in order")
        for i in range(T):
            if not torch.equal(self.scale_model_input(ref[i], torch.full((2,), i)), run["inputs"][i]):
                raise self._unsupported(f"its scale_model_input at step {i} reads carried sample data")
        if not torch.equal(results[0], results[1]):
            raise self._unsupported("its step draws random numbers outside diffusers' randn_tensor")
        if not torch.allclose(results[0], ref[-1], rtol=1e-5, atol=1e-6):
            raise self._unsupported("its state cannot be snapshotted (replaying recorded states changes the result)")

    # ------------------------------------------------------------------ the step
    def _restore(self, i: int, carried: Sequence[torch.Tensor], pre: bool = False):
        """A scheduler object in the state before step ``i`` with the carried slots ``carried``."""
        obj = object.__new__(self._cls)
        state = {k: _fresh(v) for k, v in (self._static_pre if pre else self._static)[i].items()}
        for k, lay in self._layouts[i].items():
            if lay is None:
                state[k] = None
            elif lay == "tensor":
                state[k] = carried[self._slots[(k, None)]]
            elif lay[0] == "static":
                state[k] = _fresh(lay[1])
            else:
                kind, present = lay
                state[k] = kind(carried[self._slots[(k, p)]] if ok else None for p, ok in enumerate(present))
        obj.__dict__ = state
        return obj

    def _run(self, x, model_output, idx, history, noise):
        """``(x_next, history, x̂_0)``: one scheduler ``step`` per distinct step index among the rows."""
        x_next, x0 = torch.empty_like(x), torch.empty_like(x)
        new_history = [torch.zeros_like(x) for _ in range(self.history_size)]
        steps = torch.unique(idx).tolist()
        for i in steps:
            rows = slice(None) if len(steps) == 1 else (idx == i).nonzero().flatten()
            # Copies (an index already copies; a full slice must be cloned): a step may update its inputs and
            # its carried state in place (PNDM's cur_model_output += …), which must not reach the solver's iterate.
            take = (lambda v: v.clone()) if len(steps) == 1 else (lambda v: v[rows])  # noqa: E731
            sched = self._restore(i, [take(h) for h in history])
            tap = _Tap(noise=noise[rows] if bool(self._noise_flags[i]) else None)
            with _tap(tap):
                res = sched.step(take(model_output), self._t[i], take(x), return_dict=True, **self._step_kwargs)
            if bool(self._noise_flags[i]) and not tap.shapes:
                raise InputValueError(f"{self.scheduler_class} drew no noise at step {i}, where its dry run drew.")
            x_next[rows] = res.prev_sample
            pred = getattr(res, "pred_original_sample", None)
            x0[rows] = pred if isinstance(pred, torch.Tensor) else self._convert(x[rows], model_output[rows], i)
            # (x, model_output as given: a step that changed its copies in place does not change Eq. 16's inputs)
            after = self._layouts[i + 1]
            for k, lay in after.items():
                value = sched.__dict__.get(k)
                if lay == "tensor":
                    new_history[self._slots[(k, None)]][rows] = value
                elif lay is not None and lay[0] != "static":
                    for p, ok in enumerate(lay[1]):
                        if ok:
                            new_history[self._slots[(k, p)]][rows] = value[p]
        return x_next, tuple(new_history), x0

    def step(self, x, model_output, step_index, history=(), noise=None) -> Tuple[torch.Tensor, History]:
        xc, out, idx, hist, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        x_next, new_history, _ = self._run(xc, out, idx, hist, noise)
        return x_next.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)

    def step_and_denoise(self, x, model_output, step_index, history=(), noise=None):
        xc, out, idx, hist, noise = self._check(x, model_output, "model_output", step_index, history, noise)
        x_next, new_history, x0 = self._run(xc, out, idx, hist, noise)
        return x_next.to(x.dtype), tuple(h.to(x.dtype) for h in new_history), x0.to(x.dtype)

    def scale_model_input(self, x: torch.Tensor, step_index: torch.Tensor) -> torch.Tensor:
        """The scheduler's own ``scale_model_input`` in the (static) state before each row's step."""
        if not self._has_smi:
            return x
        idx = torch.as_tensor(step_index)
        steps = torch.unique(idx).tolist()
        out = None
        for i in steps:
            rows = slice(None) if len(steps) == 1 else (idx == i).nonzero().flatten().to(x.device)
            # Carried slots are filled with zeros: the input scaling may read whether they are present
            # (KDPM2's first/second stage is "sample is None") but not their values (checked at construction).
            xr = x[rows]
            placeholder = torch.zeros_like(xr)
            scaled = self._restore(i, [placeholder] * self.history_size, pre=True).scale_model_input(xr, self._t[i])
            if len(steps) == 1:
                return scaled
            if out is None:
                out = torch.empty(x.shape, dtype=scaled.dtype, device=x.device)
            out[rows] = scaled
        return out

    # ------------------------------------------------------------------ Eq. 16 and the posterior
    def _coefficients(self, i, like):
        idx = torch.full((like.shape[0],), i, dtype=torch.long, device=like.device) if isinstance(i, int) else i
        return self._rows("p_alpha", idx, like), self._rows("p_sigma", idx, like)

    def _convert(self, x, model_output, i):
        """``x̂_0`` from a model output in the scheduler's parametrisation (zeros where unknown)."""
        if self.parametrisation is None:
            return torch.zeros_like(x)
        alpha, sigma = self._coefficients(i, x)
        p, kind = self.prediction_type, self.parametrisation
        if kind == "vp":
            return model_output_to_x0_eps(model_output, x, alpha, sigma, p)[0]
        if kind == "flow":  # x = (1 − σ) x_0 + σ ε, v = ε − x_0
            if p == "flow_prediction":
                return x - sigma * model_output
            return (x - sigma * model_output) / alpha.clamp_min(1e-12) if p == "epsilon" else model_output
        if p == "epsilon":
            return x - sigma * model_output
        if p == "v_prediction":
            return model_output * (-sigma / (sigma**2 + 1).sqrt()) + x / (sigma**2 + 1)
        return model_output

    def _output_from_x0(self, x, x0, idx):
        """The model output whose Eq. 16 prediction is ``x0`` (the inverse of :meth:`_convert`)."""
        alpha, sigma = self._coefficients(idx, x)
        s = sigma.clamp_min(1e-12)
        p, kind = self.prediction_type, self.parametrisation
        if p == "sample":
            return x0
        if kind == "vp":
            eps = (x - alpha * x0) / s
            return eps if p == "epsilon" else alpha * eps - sigma * x0
        if kind == "flow":
            return (x - x0) / s if p == "flow_prediction" else (x - alpha * x0) / s
        if p == "epsilon":
            return (x - x0) / s
        return (x / (sigma**2 + 1) - x0) * (sigma**2 + 1).sqrt() / s  # v = (x/(σ²+1) − x̂_0)·√(σ²+1)/σ

    def denoise(self, x, model_output, step_index):
        """``x̂_0`` by the parametrisation (the step's own ``pred_original_sample`` comes with :meth:`step_and_denoise`)."""
        xc, out, idx, _, _ = self._check(x, model_output, "model_output", step_index, noise_check=False)
        if self.parametrisation is None:
            return torch.zeros_like(x)
        return self._convert(xc, out, idx).to(x.dtype)

    def posterior_step(self, x, x0, step_index, history=(), noise=None):
        """The scheduler's own step on the model output implied by ``x0`` (Eq. 15's role; no model call)."""
        if not self.has_posterior:
            raise InputValueError(
                f"{self.scheduler_class} has no posterior step through the bridge (its parametrisation is not one of "
                "variance preserving, σ-scaled or flow matching); use init='constant' or PosteriorInit, which then "
                "copies the newest exact state forward."
            )
        xc, x0c, idx, hist, noise = self._check(x, x0, "x0", step_index, history, noise)
        x_next, new_history, _ = self._run(xc, self._output_from_x0(xc, x0c, idx), idx, hist, noise)
        return x_next.to(x.dtype), tuple(h.to(x.dtype) for h in new_history)

    def sigma_boundary(self) -> torch.Tensor:
        """``σ`` of the sample before each step (ones when the parametrisation is unknown: data-scaled measure)."""
        return self._sigma_boundary.clone()

    def __repr__(self) -> str:
        return (f"SchedulerBridgeRule({self.scheduler_class}, num_steps={self.num_steps}, "
                f"prediction_type={self.prediction_type!r}, history_size={self.history_size})")
