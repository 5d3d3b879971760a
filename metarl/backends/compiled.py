"""`torch.compile` of the lifetime step, shared by every lifetime, with an eager fallback.

Compilation (inductor: C++ with OpenMP on CPU, Triton on CUDA) takes tens of seconds
once per process and step shape; after that a step is a handful of fused loops. If
compilation fails (no C++ compiler, an unsupported op), a warning is given and the
same function runs eagerly, which gives the same results up to rounding. Running out of
GPU memory, or an error while a CUDA graph is being captured, is not a compiler failure:
it is raised, and the compiled step is used again by the next call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

_compiled: dict[Callable[..., Any], _WithFallback] = {}


def compiled_transition(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled once per process (static shapes), falling back to ``fn`` if compilation fails."""
    if fn not in _compiled:
        _compiled[fn] = _WithFallback(fn, torch.compile(fn, dynamic=False))
    return _compiled[fn]


def fell_back(fn: Callable[..., Any]) -> bool:
    """Whether the compiled ``fn`` of `compiled_transition` failed to compile and now runs eagerly."""
    return fn in _compiled and _compiled[fn].broken


class _WithFallback:
    """``compiled_fn``, or ``fn`` from the first compiler failure on (with one warning)."""

    def __init__(self, fn: Callable[..., Any], compiled_fn: Callable[..., Any]) -> None:
        self.fn, self.compiled_fn = fn, compiled_fn
        self.broken = False

    def __call__(self, *args: Any) -> Any:
        if not self.broken:
            try:
                return self.compiled_fn(*args)
            except torch.cuda.OutOfMemoryError:
                raise  # the eager step needs more memory still
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                if _capturing():
                    raise  # an eager step cannot be captured either; the caller's capture has failed
                self.broken = True
                warnings.warn(f"torch.compile of the lifetime step failed ({type(e).__name__}: {e}); "
                              "running it eagerly", stacklevel=2)
        return self.fn(*args)


def _capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream."""
    return torch.cuda.is_available() and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing()
