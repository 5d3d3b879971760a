"""`torch.compile` of the lifetime step, shared by every lifetime, with an eager fallback.

Compilation (inductor: C++ with OpenMP on CPU, Triton on CUDA) takes tens of seconds
once per process and step shape; after that a step is a handful of fused loops. If
compilation fails (no C++ compiler, an unsupported op), a warning is given and the
same function runs eagerly, which gives the same results up to rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def compiled_transition(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled once per process (static shapes), falling back to ``fn`` if compilation fails."""
    if fn not in _compiled:
        _compiled[fn] = _with_fallback(fn, torch.compile(fn, dynamic=False))
    return _compiled[fn]


def _with_fallback(fn: Callable[..., Any], compiled_fn: Callable[..., Any]) -> Callable[..., Any]:
    broken = False

    def run(*args: Any) -> Any:
        nonlocal broken
        if not broken:
            try:
                return compiled_fn(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                broken = True
                warnings.warn(f"torch.compile of the lifetime step failed ({type(e).__name__}: {e}); "
                              "running it eagerly", stacklevel=2)
        return fn(*args)

    return run
