"""`torch.compile` of the lifetime step, shared by every lifetime, with an eager fallback per specialisation.

Compilation (inductor: C++ with OpenMP on CPU, Triton on CUDA) takes tens of seconds
once per process and step shape; after that a step is a handful of fused loops. If
compilation fails (no C++ compiler, an unsupported op), a warning is given and the
same function runs eagerly, which gives the same results up to rounding. The fallback
is kept per specialisation: the ``key`` a caller gives (`metarl.backends.lifetime.Lifetime`
gives what the compiled code is specialised on: env, rule, actor sizes, population,
dtype, device, step constants), so a failure for one config sends only that config to
the eager step; every other config of the process still compiles. Running out of GPU
memory, or an error while a CUDA graph is being captured, is not a compiler failure: it
is raised, and the compiled step is used again by the next call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from typing import Any

import torch

# fn -> torch.compile(fn): one compiled function per step function (torch.compile keeps a graph per
# specialisation under it).
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
# fn -> {specialisation key: why its compilation failed}: the keys that run eagerly.
_broken: dict[Callable[..., Any], dict[Hashable, str]] = {}
_ANY: Any = object()


def compiled_transition(fn: Callable[..., Any], key: Hashable = None) -> Callable[..., Any]:
    """``fn`` compiled (static shapes), falling back to ``fn`` for the specialisation ``key`` if its compilation
    fails; other keys keep the compiled ``fn``."""
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=False)
    return _WithFallback(fn, _compiled[fn], key)


def fell_back(fn: Callable[..., Any], key: Hashable = _ANY) -> bool:
    """Whether the compiled ``fn`` of `compiled_transition` failed to compile for ``key`` (without ``key``: for
    any specialisation) and runs eagerly there."""
    broken = _broken.get(fn, {})
    return bool(broken) if key is _ANY else key in broken


class _WithFallback:
    """``compiled_fn`` for the specialisation ``key``, or ``fn`` from its first compiler failure on (with one
    warning); the failure is recorded for ``key`` only."""

    def __init__(self, fn: Callable[..., Any], compiled_fn: Callable[..., Any], key: Hashable = None) -> None:
        self.fn, self.compiled_fn, self.key = fn, compiled_fn, key

    @property
    def broken(self) -> bool:
        """Whether this specialisation runs eagerly (its compilation failed, in this or an earlier lifetime)."""
        return self.key in _broken.get(self.fn, {})

    def __call__(self, *args: Any) -> Any:
        if not self.broken:
            try:
                return self.compiled_fn(*args)
            except torch.cuda.OutOfMemoryError:
                raise  # the eager step needs more memory still
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                if _capturing():
                    raise  # an eager step cannot be captured either; the caller's capture has failed
                why = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
                _broken.setdefault(self.fn, {})[self.key] = why
                warnings.warn(f"torch.compile of the lifetime step failed ({why}); "
                              "running it eagerly for this config (others still compile)", stacklevel=2)
        return self.fn(*args)


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream."""
    return torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()
