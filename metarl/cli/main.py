"""Shared plumbing of the three scripts: one-line errors, clean stops on Ctrl-C, SIGTERM and SIGHUP."""

from __future__ import annotations

import errno
import sys
import warnings
from collections.abc import Callable

from ..backends import use_threads  # noqa: F401 - the scripts take it from here
from ..errors import UserError
from ..runs.signals import Stopped, deferred_signals, stop_signals  # noqa: F401 - as above
from . import startup

ERROR = 2  # bad input (config, model file, argument), or a run that cannot go on
INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + the signal number, as shells report it
# SIGTERM (kill, a scheduler cancelling the job) -> 143, SIGHUP (the terminal closed) -> 129 (`exit_code`).


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """Exit status of a run stopped by ``interrupt``: 128 + the signal number (130 for Ctrl-C)."""
    return 128 + interrupt.signum if isinstance(interrupt, Stopped) else INTERRUPTED


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
        print(f"error: {out_of_memory(argv)}", file=sys.stderr)
        return ERROR
    except RuntimeError as e:
        if not is_allocation_failure(e):
            raise
        print(f"error: {out_of_memory(argv)} ({printable(str(e).strip().splitlines()[0][:200])})", file=sys.stderr)
        return ERROR
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        name = printable(str(e.filename))
        shown = name if len(name) <= 100 else f"{name[:60]}... ({len(name)} characters)"
        print(f"error: {shown}: file name too long (at most 255 bytes a name, 4,096 a path)", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt as e:
        print("interrupted", file=sys.stderr)
        return exit_code(e)


OUT_OF_MEMORY = ("out of memory: an allocation failed (with --allow-large the memory estimate was skipped; "
                 "reduce the population, episodes, steps or actor, or run on a machine with more memory)")
OUT_OF_MEMORY_ESTIMATED = ("out of memory: an allocation failed although the memory estimate let the job start (it "
                           "is an estimate, and other programs use memory too); reduce the population, episodes, "
                           "steps or actor, or run on a machine with more memory")


def out_of_memory(argv: list[str] | None) -> str:
    """The out-of-memory line: it names --allow-large only where it was given."""
    return OUT_OF_MEMORY if "--allow-large" in (sys.argv[1:] if argv is None else argv) else OUT_OF_MEMORY_ESTIMATED


def is_allocation_failure(e: BaseException) -> bool:
    """Whether a torch RuntimeError is an allocator's "out of memory" (CPU or CUDA)."""
    text = str(e)
    return isinstance(e, MemoryError) or "DefaultCPUAllocator" in text or "out of memory" in text.lower() \
        or "can't allocate memory" in text.lower()


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, terminal escape codes) escaped as ``repr`` does:
    an error is one line, and what a user typed never reaches the terminal raw."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
