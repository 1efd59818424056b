"""The door to lshx._C: loading it (HAS_EXTENSION), the one warning when it is missing
(use_native), cuda_version, and what the op families share: the per-tensor cache and needs_grad."""
from __future__ import annotations

import warnings
from typing import Optional

import torch

try:
    from lshx import _C  # noqa: F401  (registers torch.ops.lshx.*)

    HAS_EXTENSION = True
    _LOAD_ERROR: Optional[str] = None
except ImportError as exc:  # pragma: no cover - exercised only without a build
    HAS_EXTENSION = False
    _LOAD_ERROR = str(exc)

_warned = False


def use_native() -> bool:
    global _warned
    if not HAS_EXTENSION and not _warned:
        warnings.warn(f"lshx._C is not built ({_LOAD_ERROR}); using the pure-torch reference ops", stacklevel=3)
        _warned = True
    return HAS_EXTENSION


def cuda_version() -> int:
    """CUDA runtime version the extension was built with, -1 for a CPU-only build."""
    return int(torch.ops.lshx.cuda_version()) if HAS_EXTENSION else -1


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


_cache: dict = {}


def cached(kind: str, tensors: tuple, compute):
    """compute(), recomputed only when one of `tensors` is replaced or edited in place (their
    version counters move with optimizer steps and topology updates); an entry dies with
    its tensors. The cached values must not hold references to those tensors."""
    import weakref

    key = (kind,) + tuple(id(t) for t in tensors)
    versions = tuple(t._version for t in tensors)
    hit = _cache.get(key)
    if hit is not None and all(r() is t for r, t in zip(hit[0], tensors)) and hit[1] == versions:
        return hit[2]
    value = compute()
    drop = (lambda _, k=key: _cache.pop(k, None))
    _cache[key] = (tuple(weakref.ref(t, drop) for t in tensors), versions, value)
    return value
