"""Shared plumbing of the three scripts: one-line errors, clean stops on Ctrl-C, SIGTERM and SIGHUP."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import startup
from .errors import UserError

ERROR = 2  # bad input (config, model file, argument), or a run that cannot go on
INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + the signal number, as shells report it
# SIGTERM (kill, a scheduler cancelling the job) -> 143, SIGHUP (the terminal closed) -> 129.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """Exit status of a run stopped by ``interrupt``: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + interrupt.signum if isinstance(interrupt, Stopped) else INTERRUPTED


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Stopped` (a KeyboardInterrupt) while inside: code that stops
    cleanly on Ctrl-C stops cleanly on them. Only in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_stopped) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends, then act on the first one: the
    files a block writes are never left half-updated by them. Main thread only (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if caught:
            signal.raise_signal(caught[0])  # now handled as it would have been


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a script's ``main``: `UserError` -> ``error: ...`` on stderr and exit 2; Ctrl-C -> exit 130,
    SIGTERM -> 143, SIGHUP -> 129 (`exit_code`)."""
    warnings.formatwarning = lambda msg, category, *a, **k: f"warning: {msg}\n"
    startup.release()
    try:
        with stop_signals():
            return int(main(argv) or 0)
    except UserError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return ERROR
    except MemoryError:
        print(f"error: {OUT_OF_MEMORY}", file=sys.stderr)
        return ERROR
    except RuntimeError as e:
        if not is_allocation_failure(e):
            raise
        print(f"error: {OUT_OF_MEMORY} ({printable(str(e).strip().splitlines()[0][:200])})", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt as e:
        print("interrupted", file=sys.stderr)
        return exit_code(e)


OUT_OF_MEMORY = ("out of memory: an allocation failed (with --allow-large the memory estimate was skipped; "
                 "reduce the population, episodes, steps or actor, or run on a machine with more memory)")


def is_allocation_failure(e: BaseException) -> bool:
    """Whether a torch RuntimeError is an allocator's "out of memory" (CPU or CUDA)."""
    text = str(e)
    return isinstance(e, MemoryError) or "DefaultCPUAllocator" in text or "out of memory" in text.lower() \
        or "can't allocate memory" in text.lower()


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, terminal escape codes) escaped as ``repr`` does:
    an error is one line, and what a user typed never reaches the terminal raw."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def use_threads(threads: int | None, default: int | None = None) -> None:
    """Set torch's CPU threads (which the native kernel uses too) to ``threads`` (``runtime.threads``),
    else to ``default`` if given; with neither, torch keeps its own default. The one place that sets them."""
    import torch

    chosen = threads if threads is not None else default
    if chosen is not None:
        torch.set_num_threads(chosen)
