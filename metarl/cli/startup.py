"""Signals while a script starts (imports torch: about a second), before `metarl.cli.main.run_main` handles them.

Standard library only (and `metarl.cli.parsers` for --help), so that the root scripts install it before any heavy
import. Ctrl-C, SIGTERM or SIGHUP then end the process with the line and exit status they give later
(``interrupted``; 130, 143, 129): nothing has been written yet, so there is nothing to keep.
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
    """Ctrl-C raises KeyboardInterrupt again (`metarl.cli.main.run_main` turns it into its line); SIGTERM and
    SIGHUP keep the start-up handler until `metarl.runs.signals.stop_signals` replaces it."""
    if signal.getsignal(signal.SIGINT) is _stop:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run(script: str) -> None:
    """Run ``metarl.cli.<script>``'s command with the guard installed before its heavy imports: the
    root scripts and the installed commands (pyproject's [project.scripts]) both start here. ``import
    metarl`` itself imports nothing heavy (its modules load on first use); ``--help`` is answered from
    `metarl.cli.parsers` before the command's module loads."""
    guard()
    if asks_for_help(sys.argv[1:]):
        # The same parser the command uses, without loading torch and the rest first (0.1 s instead of 2 s).
        from metarl.cli import parsers

        parsers.PARSERS[script]().print_help()
        sys.exit(0)
    import importlib

    importlib.import_module(f"metarl.cli.{script}").entry()


def asks_for_help(argv: list[str]) -> bool:
    """Whether ``argv`` holds ``-h`` or ``--help`` as an option (before any ``--``). Abbreviations that argparse
    also accepts (``--he``) take the usual path, through the command's module: the same help, later."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


def train() -> None:
    run("train")


def show_environment() -> None:
    run("show_environment")


def show_results() -> None:
    run("show_results")
