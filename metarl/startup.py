"""Signals while a script starts (imports torch: about a second), before `metarl.cli.run_main` handles them.

Standard library only, so that the root scripts install it before any heavy import. Ctrl-C, SIGTERM or
SIGHUP then end the process with the line and exit status they give later (``interrupted``; 130, 143,
129): nothing has been written yet, so there is nothing to keep.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _stop(signum: int, frame: Any) -> None:
    try:
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + signum)


def guard() -> None:
    """Install the start-up handlers (main thread only); `release` hands Ctrl-C back to Python."""
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:  # an ignored signal (nohup) stays ignored
            signal.signal(s, _stop)


def release() -> None:
    """Ctrl-C raises KeyboardInterrupt again (`metarl.cli.run_main` turns it into its line); SIGTERM and
    SIGHUP keep the start-up handler until `metarl.cli.stop_signals` replaces it."""
    if signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# The installed commands (pyproject's [project.scripts]): the guard first, then the heavy imports, as the
# root scripts do. `import metarl` itself imports nothing heavy (its modules load on first use).
def train() -> None:
    guard()
    from metarl.scripts.train import entry

    entry()


def show_environment() -> None:
    guard()
    from metarl.scripts.show_environment import entry

    entry()


def show_results() -> None:
    guard()
    from metarl.scripts.show_results import entry

    entry()
