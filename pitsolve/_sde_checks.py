"""The checks of an :class:`~pitsolve.SDESystem`'s ``sde`` and ``bm`` (torchsde's check_contract, typed errors)."""

from __future__ import annotations

import torch
import torchsde

from ._errors import InputTypeError, InputValueError
from ._sde_noise import NEEDS, SERVES
from ._sde_views import renamed

__all__ = ["SDEChecks"]


class SDEChecks:
    """Calls ``sde``'s functions once and compares their outputs and ``bm`` with the state, naming the fix.

    The host sets ``sde``, ``names``, ``logqp``, ``method``, ``t``, ``_y0``,
    ``_x0``, ``_core``, ``_sde_dim``, ``_spec`` and ``_noise_channels``.
    """

    def _check_bm(self, bm):
        """``bm`` checked against the state and the method (``None`` passes, unless the method needs Lévy areas)."""
        need = NEEDS.get(self.method)
        if bm is None:
            if need == "A":
                raise InputValueError(
                    f"method={self.method!r} needs a Lévy-area approximation, which pitsolve's seeded path does "
                    "not draw; pass bm=torchsde.BrownianInterval(t0, t1, size=(batch, m), "
                    "levy_area_approximation='davie') (or 'foster'), as torchsde needs."
                )
            return None
        if not isinstance(bm, torchsde.BaseBrownian):
            raise InputTypeError(
                f"bm is a {type(bm).__name__}; pass a torchsde Brownian motion (BrownianInterval, "
                "BrownianTree, BrownianPath or another torchsde.BaseBrownian), or None for the seeded path."
            )
        expected = (self._spec.shapes[0][0], self._noise_channels)
        if tuple(bm.shape) != expected:
            extra = " (logqp=True with diagonal noise adds the log-ratio's noise channel, as in torchsde)" if (
                self.logqp and self._core.noise_type == "diagonal") else ""
            raise InputValueError(
                f"bm has shape {tuple(bm.shape)}, expected (batch, noise channels) = {expected}{extra}; "
                f"create it with size={expected}."
            )
        if bm.dtype != self._spec.dtype or bm.device != self._spec.device:
            raise InputTypeError(
                f"bm has dtype {bm.dtype} on {bm.device} but y0 has dtype {self._spec.dtype} on "
                f"{self._spec.device}; create it with dtype=y0.dtype, device=y0.device."
            )
        if need is not None and bm.levy_area_approximation not in SERVES[need]:
            raise InputValueError(
                f"method={self.method!r} needs bm.levy_area_approximation in {list(SERVES[need])}, but bm has "
                f"{bm.levy_area_approximation!r}; create it with levy_area_approximation="
                f"{SERVES[need][0]!r} (as torchsde requires)."
                + (" Or pass bm=None: pitsolve's seeded path carries the space-time Lévy area." if need == "U" else "")
            )
        return bm

    def _infer_noise_channels(self) -> int:
        if self._core.noise_type == "diagonal":
            return self._sde_dim
        if self._core.noise_type == "scalar":
            return 1
        core, x0 = self._core, self._x0[:, : self._sde_dim]
        g = core.f_and_g(self.t[0], x0)[1] if not hasattr(core, "g") else core.g(self.t[0], x0)
        if g.dim() != 3:
            raise InputValueError(
                f"sde.g returned shape {tuple(g.shape)} for noise_type={core.noise_type!r}; expected (batch, d, m)."
            )
        return g.shape[2]

    def _check_contract(self) -> None:
        self._check_shapes()
        try:
            out = self.propagate(self._x0.unsqueeze(0), torch.zeros(1, dtype=torch.long, device=self.t.device))
        except ValueError as err:
            raise InputValueError(f"torchsde rejected the SDE: {err}") from err
        self._spec.check_batch(out, 1, "the SDE step")

    def _check_output(self, name: str, out, B: int) -> None:
        """Raise unless ``out``, ``sde.<name>`` on ``B`` intervals at once, has the shape, dtype and device it must."""
        batch, d = self._spec.shapes[0][0], self._sde_dim
        diagonal = self._core.noise_type == "diagonal"
        expected = (batch, d) if name == "f" or diagonal else (batch, d, self._noise_channels)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (B, *expected):
            got = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputValueError(
                f"sde.{name} returned shape {got} for y of shape {(batch, d)} and "
                f"noise_type={self._core.noise_type!r}; make it return shape {expected}."
            )
        if out.dtype != self._spec.dtype:
            raise InputTypeError(
                f"sde.{name} returned dtype {out.dtype} but y0 has dtype {self._spec.dtype}; "
                "return the dtype of y (e.g. create constants with .to(y))."
            )
        if out.device != self._spec.device:
            raise InputTypeError(
                f"sde.{name} returned a tensor on {out.device} but y0 lies on {self._spec.device}; "
                "return it on y's device (e.g. create constants with .to(y))."
            )

    def _check_shapes(self) -> None:
        """Call the drift and diffusion (and prior drift) once on ``y0`` and name any shape that does not fit it.

        Also records whether their outputs need grad for a ``y0`` that does not
        (parameters of the sde that need grad), for :meth:`_integrate`.
        """
        view = renamed(self.sde, self.names)
        t0, y0 = self.t[0], self._y0.detach()
        with torch.enable_grad():
            f = view.f(t0, y0) if hasattr(view, "f") else view.f_and_g(t0, y0)[0]
            g = view.g(t0, y0) if hasattr(view, "g") else view.f_and_g(t0, y0)[1]
            h = view.h(t0, y0) if self.logqp else None
        batch, d = self._y0.shape
        m = self._noise_channels - (1 if self.logqp and view.noise_type == "diagonal" else 0)
        expected_g = (batch, d) if view.noise_type == "diagonal" else (batch, d, m)
        checks = [("f", f, (batch, d)), ("g", g, expected_g)] + ([("h", h, (batch, d))] if self.logqp else [])
        for name, out, expected in checks:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            if got != expected:
                raise InputValueError(
                    f"sde.{name} returned shape {got} for y0 of shape {(batch, d)} and "
                    f"noise_type={view.noise_type!r}; make it return shape {expected}."
                )
        self._parameters_need_grad = any(o.requires_grad for o, in ((f,), (g,), (h,)) if o is not None)
