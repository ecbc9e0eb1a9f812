"""The optional dependencies of the adapters: which extra of ``pitsolve`` installs which module.

The core (:mod:`pitsolve`) needs only torch, torchdiffeq, torchsde, numpy and tqdm.  An adapter
that needs more calls :func:`require_extra` before it imports it, so a missing library ends in an
``ImportError`` that names the ``pip install`` command, not in a bare ``No module named ...``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "require_extra"]

# extra -> the importable modules it installs (pyproject.toml, [project.optional-dependencies])
EXTRAS = {
    "diffusers": ("diffusers", "safetensors", "PIL", "sklearn", "scipy"),
    "plots": ("matplotlib", "PIL"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a module without a spec
        return False


def require_extra(extra: str, *modules: str, user: str) -> None:
    """Raise ``ImportError`` naming ``pip install "pitsolve[extra]"`` unless every module is importable.

    ``user`` names what needs them (a module or a function) for the message; nothing is imported.
    """
    unknown = [m for m in modules if m not in EXTRAS[extra]]
    if unknown:
        raise ValueError(f"require_extra: {unknown} are not in the extra {extra!r} ({EXTRAS[extra]})")
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise ImportError(
            f"{user} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            f'install the extra: pip install "pitsolve[{extra}]"',
            name=missing[0],
        )
