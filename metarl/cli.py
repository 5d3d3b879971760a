"""Shared plumbing of the three scripts: one-line errors, clean Ctrl-C."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

from .errors import UserError

INTERRUPTED = 130


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a script's ``main``: `UserError` -> ``error: ...`` on stderr and exit 2; Ctrl-C -> exit 130."""
    warnings.formatwarning = lambda msg, category, *a, **k: f"warning: {msg}\n"
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
