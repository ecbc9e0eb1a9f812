"""Moving the parts of a system between devices, and fingerprints of them (docs/design.md, "Architecture").

Two small services the executors need from every :class:`~pitsolve.BandedSystem`:

* :func:`to_device` — a value as it should be held by a replica on another
  device: tensors moved, ``nn.Module``\\ s copied there (shared when they
  already live there), other objects asked for their own ``to(device)``.
  The caller's objects are never modified.
* :func:`digest` — a short, exact, device-independent description of a
  value, compared across the ranks of a distributed solve to catch ranks that
  were given different systems or settings.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
import re
import threading
import weakref
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from ._errors import InputTypeError, InputValueError

__all__ = ["as_device", "to_device", "module_to", "replica", "digest", "tensor_digest"]

#: At most this many elements of a tensor enter its digest (an evenly strided sample beyond it).
DIGEST_SAMPLE = 1 << 16


def as_device(device) -> torch.device:
    """``device`` (a ``torch.device``, a string such as ``"cuda:1"`` or a CUDA index) as a ``torch.device``."""
    if isinstance(device, bool):
        raise InputTypeError(
            f"device {device!r} is not a device; pass e.g. 'cpu', 'cuda:0' or torch.device('cuda', 1)."
        )
    if isinstance(device, int):
        return torch.device("cuda", device)
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise InputValueError(
            f"device {device!r} is not a device ({err}); pass e.g. 'cpu', 'cuda:0' or torch.device('cuda', 1)."
        ) from None


#: Copies of modules on other devices, per source module and device, reused while the source's
#: tensors are unchanged (same storage, same version counters): solves in a loop copy weights once.
_REPLICAS: "weakref.WeakKeyDictionary[nn.Module, Dict[str, Tuple[tuple, nn.Module]]]" = weakref.WeakKeyDictionary()
_DIGESTS: "weakref.WeakKeyDictionary[nn.Module, Tuple[tuple, str]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def module_to(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``: the module itself when all its tensors already live there, else a copy.

    The copy's parameters and buffers are written straight to ``device`` (no
    second copy on the source device), so the caller's module is untouched.
    Copies are cached per source module and device and made afresh once the
    source's tensors change (in place or replaced).
    """
    device = as_device(device)
    tensors = list(module.parameters()) + list(module.buffers())
    if all(_same_device(t.device, device) for t in tensors):
        return module
    state = _versions(tensors)
    with _LOCK:
        cached = _REPLICAS.get(module, {}).get(str(device))
    if state is not None and cached is not None and cached[0] == state:
        return cached[1]
    memo: Dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(p.detach().to(device, copy=True), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.detach().to(device, copy=True)
    moved = copy.deepcopy(module, memo)
    if state is not None:
        with _LOCK:
            _REPLICAS.setdefault(module, {})[str(device)] = (state, moved)
    return moved


def _versions(tensors) -> Optional[tuple]:
    """Identity and version counter of each tensor (``None`` for inference tensors, which have none)."""
    try:
        return tuple((t.data_ptr(), t._version, t.device.type) for t in tensors)
    except RuntimeError:
        return None


def to_device(value, device: torch.device):
    """``value`` as a replica on ``device`` holds it (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, nn.Module):
        return module_to(value, device)
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if value is None or isinstance(value, (numbers.Number, str, bool, slice, torch.dtype, torch.device)):
        return value
    move = getattr(value, "to", None)
    if callable(move) and not isinstance(value, type):
        return move(device)
    return value  # plain functions and objects without tensors: used as they are


def replica(obj, device, names: Iterable[str]):
    """A shallow copy of ``obj`` with the attributes ``names`` moved by :func:`to_device`."""
    device = as_device(device)
    new = copy.copy(obj)
    for name in names:
        setattr(new, name, to_device(getattr(obj, name), device))
    new.__dict__.pop("spec", None)  # BandedSystem.spec is a cached property of the old device
    return new


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type == "cuda":
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else index) == (b.index if b.index is not None else index)
    return a.index == b.index or a.index is None or b.index is None


# -- fingerprints ---------------------------------------------------------------------------------
def tensor_digest(t: torch.Tensor) -> str:
    """``dtype[shape]:sha1`` of the tensor's bytes (of an evenly strided sample of at most 65536 elements)."""
    flat = t.detach().reshape(-1)
    if flat.numel() > DIGEST_SAMPLE:
        step = math.ceil(flat.numel() / DIGEST_SAMPLE)
        flat = flat[::step]
    data = flat.contiguous().cpu()
    raw = data.view(torch.uint8) if data.numel() else data
    h = hashlib.sha1(raw.numpy().tobytes() if raw.numel() else b"")
    shape = "x".join(map(str, t.shape))
    return f"{str(t.dtype).replace('torch.', '')}[{shape}]:{h.hexdigest()[:16]}"


def digest(value, depth: int = 2) -> str:
    """A short exact description of ``value``, equal on two ranks iff they hold the same thing.

    Tensors by their bytes (not their device), modules by their class and
    state dict, numbers and strings by ``repr``, objects with a
    ``fingerprint()`` method by it, other objects by their class and the
    tensors and modules among their attributes.  Memory addresses never enter.
    """
    if isinstance(value, torch.Tensor):
        return tensor_digest(value)
    if isinstance(value, nn.Module):
        return _module_digest(value)
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(digest(v, depth) for v in value) + ")"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return "{" + ",".join(f"{k}:{digest(v, depth)}" for k, v in items) + "}"
    if value is None or isinstance(value, (numbers.Number, str, bool, slice, torch.dtype)):
        return repr(value)
    if isinstance(value, torch.device):
        return value.type
    fingerprint = getattr(value, "fingerprint", None)
    if callable(fingerprint) and not isinstance(value, type):
        return f"{_qualname(type(value))}{digest(fingerprint(), depth)}"
    if callable(value) and hasattr(value, "__qualname__"):
        return _qualname(value)
    if depth > 0 and hasattr(value, "__dict__"):
        parts = {
            k: digest(v, depth - 1)
            for k, v in vars(value).items()
            if isinstance(v, (torch.Tensor, nn.Module))
        }
        return f"{_qualname(type(value))}{digest(parts, 0) if parts else ''}"
    return _qualname(type(value))


def _module_digest(module: nn.Module) -> str:
    state_dict = module.state_dict()
    versions = _versions(list(state_dict.values()))
    key = (versions, module.training)
    with _LOCK:
        cached = _DIGESTS.get(module)
    if versions is not None and cached is not None and cached[0] == key:
        return cached[1]
    state = ";".join(f"{k}={tensor_digest(v)}" for k, v in state_dict.items())
    result = f"{_qualname(type(module))}(training={module.training}):{_sha(state)}"
    if versions is not None:
        with _LOCK:
            _DIGESTS[module] = (key, result)
    return result


def plain_repr(obj) -> str:
    """``repr(obj)`` without memory addresses (``<function f at 0x7f…>`` → ``<function f>``)."""
    return re.sub(r" (at|object at) 0x[0-9a-fA-F]+", "", repr(obj))


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]
