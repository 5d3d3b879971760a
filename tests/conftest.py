"""Shared test helpers: run the root scripts as a user would."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The Ctrl-C tests need SIGINT. A shell starts background jobs (`cmd &`, nohup) with SIGINT ignored, and
# an ignored signal stays ignored in every child; restore Python's handler so that the tests (and the
# scripts they start, which then begin with the default action) see Ctrl-C as a user's terminal sends it.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Copies of the original project's config and saved model (`shared/seed/`), for compatibility tests.
DATA = ROOT / "tests" / "data"
SEED_MODEL = DATA / "seed_best_model.yaml"
SEED_CONFIG = DATA / "seed_base.yaml"


def _native_missing() -> str | None:
    """Why the native kernel cannot run on this machine (no compiler, read-only cache), or None."""
    from metarl import native

    try:
        native.library(1, 8)
    except native.NativeUnavailable as e:
        return f"the native kernel cannot be built here: {e}"
    return None


NATIVE_MISSING = _native_missing()
needs_native = pytest.mark.skipif(NATIVE_MISSING is not None, reason=NATIVE_MISSING or "")
# torch.compile on CPU compiles C++ as well.
needs_compiler = pytest.mark.skipif(NATIVE_MISSING is not None, reason=f"no C++ compiler for torch.compile "
                                                                       f"({NATIVE_MISSING})")

TINY = "configs/tiny.yaml"  # population 20, 4 generations, 30-step lifetimes
FITNESS = ("generation", "best", "mean", "median", "worst", "best_ever")


def fitness_columns(run_dir: Path) -> list[tuple[str, ...]]:
    """The fitness columns of a run's ``log.csv``, as written (exact text, for equality checks)."""
    with (Path(run_dir) / "log.csv").open(newline="") as f:
        return [tuple(row[k] for k in FITNESS) for row in csv.DictReader(f)]


def run_script(*args: str, timeout: float = 300, cwd: Path | None = None,
               env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
    """Run ``python3 <script> args`` headless (``env``: extra environment variables, None removes one);
    returns the completed process (text output)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full = dict(os.environ, SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg", PYTHONPATH=path)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


# No display and no video driver asked for: pygame falls back to a driver that draws nowhere.
NO_DISPLAY = {"SDL_VIDEODRIVER": None, "DISPLAY": None, "WAYLAND_DISPLAY": None, "MPLBACKEND": None}


@pytest.fixture
def seed_files() -> tuple[Path, Path]:
    """The original project's config and saved model."""
    return SEED_CONFIG, SEED_MODEL
