"""Views of a user's SDE as torchsde's ``sdeint`` builds them: renamed methods (``names=``) and ``logqp=True``.

Both are written from torchsde's documented behaviour (``sdeint(names=...,
logqp=...)``), not from its code:

* ``names`` maps torchsde's role names to the user's method names:
  ``drift → f``, ``diffusion → g``, ``prior_drift → h``,
  ``drift_and_diffusion → f_and_g``.
* ``logqp`` appends one state column ``L`` with ``dL = ½‖u‖² dt`` and no
  noise, ``u`` solving ``g u = f − h`` (elementwise ``u = (f − h)/g`` for
  diagonal noise, with ``|g| ≤ 10⁻⁷`` replaced by ``10⁻⁷·sign(g)`` as
  torchsde does; ``u = g⁺ (f − h)`` with the pseudo-inverse otherwise).
  ``L(t_{n+1}) − L(t_n)`` is the log-ratio penalty torchsde returns.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from ._errors import InputTypeError, InputValueError

__all__ = ["NAME_ROLES", "renamed", "with_logqp"]

#: torchsde's ``names`` keys and the method each one names.
NAME_ROLES = {"drift": "f", "diffusion": "g", "prior_drift": "h", "drift_and_diffusion": "f_and_g"}
#: Keys torchsde accepts that name product forms pitsolve cannot integrate (it needs ``g`` itself).
_PRODUCT_ROLES = ("diffusion_prod", "drift_and_diffusion_prod")
#: Below this ``|g|`` the diagonal log-ratio divides by ``±10⁻⁷`` (torchsde's stable division).
_STABLE_EPS = 1e-7


class _Renamed:
    """``sde`` with its methods reachable under torchsde's standard names ``f``, ``g``, ``h``, ``f_and_g``."""

    def __init__(self, sde, methods: Dict[str, str]):
        self.base = sde
        for attr in ("noise_type", "sde_type"):  # absent ones are reported by SDESystem
            if hasattr(sde, attr):
                setattr(self, attr, getattr(sde, attr))
        for standard in NAME_ROLES.values():
            source = methods.get(standard, standard)
            if hasattr(sde, source):
                setattr(self, standard, getattr(sde, source))


def renamed(sde, names: Optional[dict]):
    """``sde`` seen through ``names`` (a dict as for ``torchsde.sdeint``), or ``sde`` itself for ``None``/``{}``."""
    if names is None:
        return sde
    if not isinstance(names, dict):
        raise InputTypeError(
            f"names={names!r} is not a dict; pass e.g. names={{'drift': 'my_f', 'diffusion': 'my_g'}} (as torchsde)."
        )
    unknown = sorted(set(names) - set(NAME_ROLES) - set(_PRODUCT_ROLES), key=str)
    if unknown:
        raise InputValueError(
            f"names has unknown keys {unknown}; the keys are {sorted(NAME_ROLES)} (torchsde's roles)."
        )
    products = sorted(set(names) & set(_PRODUCT_ROLES))
    if products:
        raise InputValueError(
            f"names gives {products}: pitsolve integrates with the diffusion matrix g itself, not with "
            "diffusion-vector products; name the diffusion with names={'diffusion': ...}."
        )
    methods = {}
    for role, name in names.items():
        if not isinstance(name, str) or not callable(getattr(sde, name, None)):
            raise InputValueError(
                f"names[{role!r}]={name!r} is not a method of the sde ({type(sde).__name__}); "
                f"name one it defines, e.g. names={{{role!r}: 'my_method'}}."
            )
        methods[NAME_ROLES[role]] = name
    return _Renamed(sde, methods) if methods else sde


class _Logqp:
    """``sde`` on the state ``[y, L]`` with ``dL = ½‖u‖² dt`` (module docstring); needs ``f``, ``g``, ``h``."""

    def __init__(self, sde):
        self.base = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self._diagonal = sde.noise_type == "diagonal"

    def _rate(self, f, g, h):
        """``½‖u‖²`` per row, ``[batch, 1]``."""
        if self._diagonal:
            tiny = torch.full_like(g, _STABLE_EPS) * g.sign()
            u = (f - h) / torch.where(g.abs().detach() > _STABLE_EPS, g, tiny)
        else:
            u = (torch.linalg.pinv(g) @ (f - h).unsqueeze(-1)).squeeze(-1)
        return 0.5 * u.pow(2).sum(dim=1, keepdim=True)

    def _noiseless_row(self, g):
        """``g`` with a zero row for ``L``."""
        return torch.cat([g, torch.zeros_like(g[:, :1])], dim=1)

    def f(self, t, y):
        x = y[:, :-1]
        f = self.base.f(t, x)
        return torch.cat([f, self._rate(f, self.base.g(t, x), self.base.h(t, x))], dim=1)

    def g(self, t, y):
        return self._noiseless_row(self.base.g(t, y[:, :-1]))

    def f_and_g(self, t, y):
        x = y[:, :-1]
        f, g = self.base.f(t, x), self.base.g(t, x)
        return torch.cat([f, self._rate(f, g, self.base.h(t, x))], dim=1), self._noiseless_row(g)


def with_logqp(sde):
    """``sde`` on ``[y, L]`` (module docstring); a typed error unless it defines ``f``, ``g`` and ``h``."""
    missing = [m for m in ("f", "g", "h") if not callable(getattr(sde, m, None))]
    if missing:
        raise InputTypeError(
            f"logqp=True needs the drift f, the diffusion g and the prior drift h as separate methods "
            f"(as torchsde requires); the sde lacks {missing}. Define them, or map them with names="
            "{'drift': ..., 'diffusion': ..., 'prior_drift': ...}."
        )
    return _Logqp(sde)
