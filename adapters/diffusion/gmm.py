r"""A trained model with a known ground truth for tests and benchmarks.

:class:`GaussianMixtureDenoiser` is the *exact* noise prediction (the MMSE
denoiser) of a Gaussian-mixture data distribution under the variance-preserving
forward process.  It has the call signature of a Diffusers ``UNet2DModel``, so
it can stand in for one in any sampler, and it knows its data distribution, so
a sampler's output can be judged against the truth.

Notation (``ᾱ`` is ``alphas_cumprod``, indexed by the integer training timestep):

=====================  ==================================================
``α_t = √ᾱ_t``         signal scale
``σ_t = √(1 − ᾱ_t)``   noise scale
``x_t = α_t x_0 + σ_t ε``   forward process, ``ε ~ N(0, I)``
``p_0``                ``Σ_k w_k N(μ_k, s_k² I)`` (data)
``p_t``                ``Σ_k w_k N(α_t μ_k, v_k I)``, ``v_k = α_t² s_k² + σ_t²``
``r_k(x)``             ``w_k N(x; α_t μ_k, v_k I) / p_t(x)`` (responsibility)
=====================  ==================================================

Formulas (each is exact, not an approximation):

1. score:  ``∇ log p_t(x) = Σ_k r_k(x) (α_t μ_k − x) / v_k``
2. ε-prediction (Tweedie): ``ε̂ = E[ε | x_t] = −σ_t ∇ log p_t(x)``
3. x₀-prediction: ``x̂_0 = E[x_0 | x_t] = (x − σ_t ε̂)/α_t
   = Σ_k r_k(x) (μ_k + α_t s_k² (x − α_t μ_k) / v_k)``
4. v-prediction: ``v̂ = α_t ε̂ − σ_t x̂_0``

(1)–(3) are evaluated in the forms above, which need no division by
``α_t``, so they stay exact when ``ᾱ_t = 0`` (zero terminal SNR); the
responsibilities come from a log-sum-exp.  They hold for any pair
``(α_t, σ_t)``, not only ``α_t² + σ_t² = 1``, which gives two more ways of
being called:

* **Float timesteps** (``continuous_timesteps=True``), as σ-parametrised
  samplers (Euler, Heun, LMS on Karras, exponential or beta σ grids) call a
  model: between two training timesteps ``k ≤ t ≤ k + 1`` the log noise-to-signal
  ratio ``log(σ_t/α_t)`` is interpolated linearly, the inverse of Diffusers'
  ``_sigma_to_t``, so that at the float timestep a scheduler derives from its
  ``σ`` the model is the exact denoiser at that ``σ``.  Integer timesteps read
  ``alphas_cumprod`` directly, as before.
* **Flow matching** (``prediction_type="flow_prediction"``): the rectified-flow
  interpolation ``x_t = (1 − s) x_0 + s ε`` with ``s = t / num_train_timesteps``
  (Lipman et al. 2023; Esser et al. 2024, Eq. 2–3), ``α_t = 1 − s``, ``σ_t = s``, any float
  ``t ∈ [0, num_train_timesteps]``, and the output is the velocity
  ``v̂ = E[ε − x_0 | x_t] = ε̂ − x̂_0`` that ``FlowMatchEulerDiscreteScheduler``
  (and UniPC/DPM-Solver with ``use_flow_sigmas``) integrate.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

from pitsolve import InputTypeError, InputValueError

__all__ = ["GaussianMixtureDenoiser", "DenoiserOutput", "PREDICTION_TYPES"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow_prediction")
_F64 = torch.float64


@dataclass
class DenoiserOutput:
    """What ``forward(..., return_dict=True)`` returns, like Diffusers' ``UNet2DOutput``."""

    sample: torch.Tensor

    def __getitem__(self, index):
        return (self.sample,)[index]

    def to_tuple(self) -> Tuple[torch.Tensor]:
        return (self.sample,)


class _Config(dict):
    """Read-only mapping with attribute access, like Diffusers' ``FrozenDict`` config."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def _readonly(self, *args, **kwargs):
        raise InputTypeError("the config of a GaussianMixtureDenoiser is read-only; build a new denoiser instead.")

    __setitem__ = __delitem__ = __setattr__ = update = pop = popitem = setdefault = clear = _readonly

    def __reduce__(self):  # copy/pickle without going through the read-only __setitem__
        return (type(self), (dict(self),))


def _as_f64(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise InputTypeError(f"{name} has dtype {value.dtype}; pass a real floating-point tensor.")
        return value.detach().to(_F64).clone()
    try:
        return torch.as_tensor(value, dtype=_F64).clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputTypeError(f"{name}={value!r} is not convertible to a tensor; pass a torch.Tensor.") from err


class GaussianMixtureDenoiser(torch.nn.Module):
    r"""Exact ε-, x₀- or v-prediction of a Gaussian mixture under the VP process (or its flow-matching velocity).

    A trained model with a known ground truth for tests and benchmarks: a
    sampler run on it should reproduce the data distribution
    ``p_0 = Σ_k w_k N(μ_k, s_k² I)`` up to its own discretisation error,
    which :meth:`sample`, :meth:`mean` and :meth:`covariance` let a test
    measure.  See the module docstring for the formulas.

    Called like a Diffusers ``UNet2DModel``:
    ``model(sample [B, *sample_shape], timestep, class_labels=None,
    return_dict=True)``.  ``timestep`` is an int, a 0-d tensor or an integer
    tensor ``[B]`` (or ``[1]``) giving each row its own training timestep in
    ``0 … len(alphas_cumprod) − 1`` (with ``continuous_timesteps=True``, or for
    flow matching, also floats; see the module docstring).  ``class_labels`` (optional, int or
    LongTensor ``[B]``) conditions row ``b`` on component ``class_labels[b]``:
    the output is then the exact prediction of the single Gaussian
    ``N(μ_k, s_k² I)``, a ground truth for class-conditional sampling and
    guidance.  The computation is in float64 whatever the input dtype; the
    output has the dtype of ``sample``.  ``.to(device)`` moves the stored
    distribution; ``.to(dtype)`` and ``.half()`` leave it in float64.

    Args:
        means: ``μ``, ``[K, *sample_shape]`` (vectors ``[K, d]``, images
            ``[K, C, H, W]``).
        stds: ``s``, ``[K]`` positive per-component standard deviations, or
            one positive number for all.
        weights: ``w``, ``[K]`` non-negative mixture weights (normalised here
            to sum to one); default uniform.
        alphas_cumprod: ``ᾱ``, a 1-D tensor with values in ``[0, 1]`` indexed
            by training timestep, e.g. ``DDPMScheduler(...).alphas_cumprod``
            (required, except for ``"flow_prediction"``, which takes none).
        prediction_type: ``"epsilon"`` (default), ``"sample"`` or
            ``"v_prediction"``, as in Diffusers schedulers, or
            ``"flow_prediction"`` (the velocity of the flow-matching process).
        continuous_timesteps: accept float timesteps between the training
            timesteps (VP process; flow matching always does).
        num_train_timesteps: ``N`` of flow matching, ``s = t/N`` (default 1000);
            for the VP process it is ``len(alphas_cumprod)``.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: Union[torch.Tensor, float],
        weights: Optional[torch.Tensor] = None,
        *,
        alphas_cumprod: Optional[torch.Tensor] = None,
        prediction_type: str = "epsilon",
        continuous_timesteps: bool = False,
        num_train_timesteps: Optional[int] = None,
    ):
        super().__init__()
        if not isinstance(prediction_type, str) or prediction_type not in PREDICTION_TYPES:
            raise InputValueError(
                f"prediction_type={prediction_type!r} is unknown; pass one of {', '.join(map(repr, PREDICTION_TYPES))}."
            )
        means = _as_f64(means, "means")
        if means.dim() < 2 or means.shape[0] < 1 or means.numel() == 0:
            raise InputValueError(
                f"means has shape {tuple(means.shape)}; pass [K, *sample_shape] with K >= 1 components "
                "and a non-empty sample shape, e.g. [K, d] for vectors or [K, C, H, W] for images."
            )
        K = means.shape[0]
        if not torch.isfinite(means).all():
            raise InputValueError("means contain NaN or Inf; pass finite component means.")

        stds = _as_f64(stds, "stds")
        if stds.dim() == 0:
            stds = stds.expand(K).clone()
        if stds.shape != (K,):
            raise InputValueError(
                f"stds has shape {tuple(stds.shape)} but means has K={K} components; pass stds of shape [{K}] "
                "(one standard deviation per component) or a single number."
            )
        if not (torch.isfinite(stds).all() and (stds > 0).all()):
            raise InputValueError(
                f"stds={stds.tolist()} must be finite and positive; a component of zero width has no density "
                "(use a small positive std instead)."
            )

        if weights is None:
            weights = torch.full((K,), 1.0 / K, dtype=_F64)
        weights = _as_f64(weights, "weights")
        if weights.shape != (K,):
            raise InputValueError(
                f"weights has shape {tuple(weights.shape)} but means has K={K} components; pass weights of shape [{K}]."
            )
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise InputValueError(f"weights={weights.tolist()} must be finite and non-negative.")
        total = float(weights.sum())
        if total <= 0:
            raise InputValueError(
                f"weights={weights.tolist()} are all zero; give at least one component a positive weight."
            )

        if not isinstance(continuous_timesteps, bool):
            raise InputTypeError(f"continuous_timesteps must be a bool, got {continuous_timesteps!r}.")
        flow = prediction_type == "flow_prediction"
        if flow:
            if alphas_cumprod is not None:
                raise InputValueError(
                    "prediction_type='flow_prediction' is the flow-matching process x_t = (1 − s) x_0 + s ε, "
                    "which has no alphas_cumprod; drop alphas_cumprod (and set num_train_timesteps if not 1000)."
                )
            n = 1000 if num_train_timesteps is None else num_train_timesteps
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise InputValueError(f"num_train_timesteps={num_train_timesteps!r} must be an int >= 1.")
            # Unused by the flow process; a 1-element placeholder keeps the buffers uniform.
            alphas_cumprod = torch.ones(1, dtype=_F64)
            continuous_timesteps = True
        else:
            if alphas_cumprod is None:
                raise InputValueError(
                    f"prediction_type={prediction_type!r} needs alphas_cumprod (the VP process's ᾱ_t), e.g. "
                    "DDPMScheduler().alphas_cumprod; only prediction_type='flow_prediction' takes none."
                )
            if num_train_timesteps is not None:
                raise InputValueError(
                    f"num_train_timesteps={num_train_timesteps!r} applies to flow matching only; for the VP process "
                    "it is len(alphas_cumprod). Drop it."
                )
            alphas_cumprod = _as_f64(alphas_cumprod, "alphas_cumprod")
            if alphas_cumprod.dim() != 1 or alphas_cumprod.numel() == 0:
                raise InputValueError(
                    f"alphas_cumprod has shape {tuple(alphas_cumprod.shape)}; pass a non-empty 1-D tensor indexed by "
                    "training timestep, e.g. DDPMScheduler().alphas_cumprod."
                )
            if not torch.isfinite(alphas_cumprod).all() or (alphas_cumprod < 0).any() or (alphas_cumprod > 1).any():
                bad = alphas_cumprod[~((alphas_cumprod >= 0) & (alphas_cumprod <= 1))]
                raise InputValueError(
                    f"alphas_cumprod has values outside [0, 1] (e.g. {bad[:4].tolist()}); pass the cumulative "
                    "products ᾱ_t = Π(1 − β_s), not the betas or the alphas' square roots."
                )
            n = alphas_cumprod.numel()

        self.prediction_type = prediction_type
        self.flow = flow
        self.continuous_timesteps = continuous_timesteps
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("weights", weights / total)
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        shape = tuple(means.shape[1:])
        image = len(shape) == 3
        self.config = _Config(
            sample_shape=shape,
            sample_size=(shape[1] if shape[1] == shape[2] else shape[1:]) if image else None,
            in_channels=shape[0] if image else None,
            out_channels=shape[0] if image else None,
            num_train_timesteps=int(n),
            num_components=K,
            prediction_type=prediction_type,
        )

    # ------------------------------------------------------------------ construction

    @classmethod
    def random(
        cls,
        sample_shape: Union[int, Sequence[int]],
        components: int = 4,
        *,
        alphas_cumprod: Optional[torch.Tensor] = None,
        seed: int = 0,
        spread: float = 1.0,
        std: Union[float, Tuple[float, float]] = 0.3,
        prediction_type: str = "epsilon",
        continuous_timesteps: bool = False,
        num_train_timesteps: Optional[int] = None,
    ) -> "GaussianMixtureDenoiser":
        """A reproducible random mixture for benchmarks and tests.

        Means have i.i.d. ``N(0, spread²)`` entries; the stds are ``std``, or
        log-uniform in ``(low, high)`` when ``std`` is a pair; the weights are
        uniform in ``[0.5, 1.5]`` then normalised (unequal, none negligible).
        ``sample_shape`` is ``d`` for vectors or a shape such as ``(C, H, W)``.
        """
        if isinstance(sample_shape, numbers.Integral) and not isinstance(sample_shape, bool):
            sample_shape = (int(sample_shape),)
        try:
            shape = tuple(int(s) for s in sample_shape)
        except TypeError:
            raise InputTypeError(
                f"sample_shape={sample_shape!r} is not an int or a sequence of ints; pass e.g. 2 or (3, 8, 8)."
            ) from None
        if not shape or any(s < 1 for s in shape):
            raise InputValueError(f"sample_shape={shape} must be non-empty with positive sizes; pass e.g. 2 or (3, 8, 8).")
        if isinstance(components, bool) or not isinstance(components, numbers.Integral) or components < 1:
            raise InputValueError(f"components={components!r} must be a positive int.")
        if not (isinstance(spread, numbers.Real) and math.isfinite(spread) and spread >= 0):
            raise InputValueError(f"spread={spread!r} must be a finite number >= 0.")
        gen = torch.Generator().manual_seed(int(seed))
        means = spread * torch.randn((components, *shape), generator=gen, dtype=_F64)
        if isinstance(std, numbers.Real):
            stds = torch.full((components,), float(std), dtype=_F64)
        else:
            try:
                low, high = (float(s) for s in std)
            except (TypeError, ValueError):
                raise InputTypeError(f"std={std!r} is not a number or a (low, high) pair.") from None
            if not 0 < low <= high:
                raise InputValueError(f"std=({low}, {high}) must satisfy 0 < low <= high.")
            u = torch.rand(components, generator=gen, dtype=_F64)
            stds = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        weights = 0.5 + torch.rand(components, generator=gen, dtype=_F64)
        return cls(
            means, stds, weights, alphas_cumprod=alphas_cumprod, prediction_type=prediction_type,
            continuous_timesteps=continuous_timesteps, num_train_timesteps=num_train_timesteps,
        )

    # ------------------------------------------------------------------ attributes

    @property
    def sample_shape(self) -> Tuple[int, ...]:
        return self.config.sample_shape

    @property
    def sample_size(self):
        """``H`` (or ``(H, W)`` when not square) for image-shaped data, else ``None``."""
        return self.config.sample_size

    @property
    def in_channels(self) -> Optional[int]:
        return self.config.in_channels

    @property
    def num_components(self) -> int:
        return self.config.num_components

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the computation (float64); outputs take the input's dtype."""
        return _F64

    def _apply(self, fn, recurse=True):
        # Follow device moves but keep the distribution in float64 (see class docstring).
        for name, buf in self._buffers.items():
            if buf is not None:
                moved = fn(buf)
                self._buffers[name] = moved if moved.dtype == buf.dtype else buf.to(device=moved.device)
        return self

    def extra_repr(self) -> str:
        return (
            f"components={self.num_components}, sample_shape={self.sample_shape}, "
            f"num_train_timesteps={self.num_train_timesteps}, prediction_type={self.prediction_type!r}"
            + (", continuous_timesteps=True" if self.continuous_timesteps and not self.flow else "")
        )

    # ------------------------------------------------------------------ data distribution

    def mean(self) -> torch.Tensor:
        """``E[x_0] = Σ_k w_k μ_k``, shape ``sample_shape``, float64."""
        return torch.tensordot(self.weights, self.means, dims=1)

    def variance(self) -> torch.Tensor:
        """Per-coordinate ``Var[x_0]``, shape ``sample_shape`` (the diagonal of :meth:`covariance`)."""
        second = torch.tensordot(self.weights, self.means**2, dims=1) + (self.weights * self.stds**2).sum()
        return second - self.mean() ** 2

    def covariance(self) -> torch.Tensor:
        """``Cov[x_0] = Σ_k w_k (s_k² I + μ_k μ_kᵀ) − m mᵀ`` over the flattened sample, ``[D, D]``."""
        mu = self.means.reshape(self.num_components, -1)
        m = self.weights @ mu
        D = mu.shape[1]
        cov = (mu.T * self.weights) @ mu - torch.outer(m, m)
        return cov + (self.weights * self.stds**2).sum() * torch.eye(D, dtype=_F64, device=mu.device)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` exact draws from ``p_0``, ``[n, *sample_shape]``, float64 on the model's device."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise InputValueError(f"n={n!r} must be an int >= 0 (the number of samples).")
        n = int(n)
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator) if n else torch.zeros(
            0, dtype=torch.long, device=self.device
        )
        noise = torch.randn((n, *self.sample_shape), generator=generator, dtype=_F64, device=self.device)
        scale = self.stds[k].reshape(n, *([1] * len(self.sample_shape)))
        return self.means[k] + scale * noise

    # ------------------------------------------------------------------ the model

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, int],
        class_labels: Optional[Union[torch.Tensor, int]] = None,
        return_dict: bool = True,
    ):
        x = self._check_sample(sample)
        B = x.shape[0]
        alpha, sigma = self.alpha_sigma(timestep, B)  # [B, 1] each

        K = self.num_components
        mu = self.means.reshape(K, -1)  # [K, D]
        x = x.reshape(B, -1).to(_F64)  # [B, D]
        s2 = self.stds**2  # [K]
        var = alpha**2 * s2 + sigma**2  # v_k, [B, K]

        if class_labels is None:
            # log w_k + log N(x; α μ_k, v_k I), one component at a time to keep memory at B·D.
            sq = torch.stack([((x - alpha * mu[k]) ** 2).sum(1) for k in range(K)], dim=1)  # [B, K]
            logits = self.weights.log() - 0.5 * sq / var - 0.5 * x.shape[1] * torch.log(2 * math.pi * var)
            resp = torch.softmax(logits, dim=1)  # r_k, log-sum-exp normalised
        else:
            labels = self._check_rows(class_labels, B, "class_labels", K, f"{K - 1} (components - 1)")
            resp = torch.nn.functional.one_hot(labels, K).to(_F64)

        c = resp / var  # r_k / v_k
        # ε̂ = σ Σ_k r_k (x − α μ_k)/v_k                                  (formula 2)
        eps = sigma * (x * c.sum(1, keepdim=True) - alpha * (c @ mu))
        if self.prediction_type == "epsilon":
            out = eps
        else:
            # x̂_0 = Σ_k r_k μ_k + α Σ_k (r_k s_k²/v_k)(x − α μ_k)             (formula 3)
            cs = c * s2
            x0 = resp @ mu + alpha * (x * cs.sum(1, keepdim=True) - alpha * (cs @ mu))
            if self.prediction_type == "sample":
                out = x0
            elif self.flow:
                out = eps - x0  # the flow-matching velocity d x_t / d s
            else:
                out = alpha * eps - sigma * x0  # (formula 4)
        out = out.reshape(sample.shape).to(sample.dtype)
        return DenoiserOutput(sample=out) if return_dict else (out,)

    def alpha_sigma(self, timestep, batch: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(α_t, σ_t)`` ``[batch, 1]`` float64 of the forward process at ``timestep`` (checked as in :meth:`forward`).

        VP, integer ``t``: ``(√ᾱ_t, √(1 − ᾱ_t))``.  VP, float ``t`` with
        ``continuous_timesteps``: ``ᾱ = 1/(1 + e^L)`` with ``L = log((1 − ᾱ)/ᾱ)``
        interpolated linearly between the neighbouring training timesteps.
        Flow matching: ``(1 − t/N, t/N)``.
        """
        N = self.num_train_timesteps
        if self.flow:
            t = self._check_rows(timestep, batch, "timestep", N + 1, f"num_train_timesteps = {N}", continuous=True)
            s = (t / N).unsqueeze(1)
            return 1.0 - s, s
        t = self._check_rows(
            timestep, batch, "timestep", N, "len(alphas_cumprod) - 1", continuous=self.continuous_timesteps
        )
        abar_table = self.alphas_cumprod
        if not t.is_floating_point():
            abar = abar_table[t]
        else:
            lo = t.floor().long().clamp(max=max(N - 2, 0))
            hi = (lo + 1).clamp(max=N - 1)
            w = t - lo
            log_ratio = torch.log1p(-abar_table) - torch.log(abar_table)  # log σ_VE², ±inf at ᾱ ∈ {0, 1}
            mixed = (1 - w) * log_ratio[lo] + w * log_ratio[hi]
            exact = w == 0
            on_hi = w == 1
            abar = torch.where(
                exact, abar_table[lo], torch.where(on_hi, abar_table[hi], torch.sigmoid(-mixed))
            )
        abar = abar.unsqueeze(1)
        return abar.sqrt(), (1.0 - abar).sqrt()

    # ------------------------------------------------------------------ checks

    def _check_sample(self, sample) -> torch.Tensor:
        if not isinstance(sample, torch.Tensor):
            raise InputTypeError(
                f"sample is a {type(sample).__name__}; pass a floating tensor [batch, {', '.join(map(str, self.sample_shape))}]."
            )
        if not sample.is_floating_point():
            raise InputTypeError(f"sample has dtype {sample.dtype}; pass a floating tensor, e.g. sample.float().")
        if sample.dim() != 1 + len(self.sample_shape) or tuple(sample.shape[1:]) != self.sample_shape:
            raise InputValueError(
                f"sample has shape {tuple(sample.shape)}, but this mixture's samples have shape {self.sample_shape}; "
                f"pass [batch, {', '.join(map(str, self.sample_shape))}] (add a batch dimension with sample[None])."
            )
        if sample.device != self.device:
            raise InputTypeError(
                f"sample lies on {sample.device} but the denoiser on {self.device}; call model.to({str(sample.device)!r})."
            )
        return sample

    def _check_rows(self, value, B: int, name: str, limit: int, upper: str, continuous: bool = False) -> torch.Tensor:
        """An int, 0-d, [1] or [B] integer tensor in 0 … limit−1, returned as a LongTensor [B].

        With ``continuous``, floats are accepted too (in ``[0, limit − 1]``) and returned as float64 ``[B]``.
        """
        kinds = (numbers.Real,) if continuous else (numbers.Integral,)
        if isinstance(value, bool) or not isinstance(value, (*kinds, torch.Tensor)):
            what = "a number or a tensor" if continuous else "an int or an integer tensor"
            raise InputTypeError(f"{name}={value!r} is a {type(value).__name__}; pass {what}.")
        python_float = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
        t = torch.as_tensor(value, device=self.device, dtype=_F64 if python_float else None)  # no float32 rounding
        if t.dtype == torch.bool or t.is_complex():
            raise InputTypeError(f"{name} has dtype {t.dtype}; pass an int or an integer tensor.")
        if t.is_floating_point() and continuous:
            t = t.to(_F64)
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, B)):
                raise InputValueError(
                    f"{name} has shape {tuple(t.shape)} for a batch of {B}; pass a number, a 0-d tensor or a 1-D "
                    f"tensor of length {B} (one per row)."
                )
            if t.numel() and not (bool(torch.isfinite(t).all()) and float(t.min()) >= 0 and float(t.max()) <= limit - 1):
                raise InputValueError(
                    f"{name} has values outside [0, {upper}] = [0, {limit - 1}] (e.g. {t.flatten()[:4].tolist()}); "
                    "pass timesteps in range."
                )
            return t.expand(B) if t.dim() == 0 or t.shape[0] == 1 else t
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise InputValueError(
                    f"{name} has non-integer values (e.g. {t.flatten()[:4].tolist()}); this model is defined on "
                    f"the integer training timesteps only; pass integers, or build it with continuous_timesteps=True "
                    f"(float timesteps of σ-parametrised samplers such as Euler)."
                )
        t = t.to(torch.long)
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, B)):
            raise InputValueError(
                f"{name} has shape {tuple(t.shape)} for a batch of {B}; pass an int, a 0-d tensor or a 1-D tensor "
                f"of length {B} (one per row)."
            )
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= limit):
            raise InputValueError(
                f"{name} has values outside 0..{upper} = 0..{limit - 1} (min {int(t.min())}, max {int(t.max())}); "
                "pass indices in range."
            )
        return t.expand(B) if t.dim() == 0 or t.shape[0] == 1 else t
