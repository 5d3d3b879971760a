"""This CPU's feature flags (standard library only: `metarl/__init__` reads them before torch and numpy load)."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags (``/proc/cpuinfo``), or None where they cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((frozenset(ln.split(":", 1)[1].split()) for ln in text.splitlines() if ln.startswith("flags")),
                None)
