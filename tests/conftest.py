"""Shared test helpers: run the root scripts as a user would."""

from __future__ import annotations

# First, as in the scripts: before torch loads (and with it numpy), `import metarl` lets torch's OpenMP
# workers sleep when idle instead of spinning (spinning workers made the small products of the spec step 15x
# slower on a busy 2-core machine: two xdist workers and a training run) and pins numpy's BLAS kernels, so
# that the in-process CMA-ES tests run on the same kernels on every CPU.
import metarl  # noqa: F401

# isort: split
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from metarl import envs
from metarl.backends import lifetime
from metarl.config import ActorConfig, Config, EnvConfig, GAConfig, RuleConfig, RuntimeConfig
from metarl.core.genome import GenomeLayout

ROOT = Path(__file__).resolve().parents[1]

# Under xdist (`pytest -n 2`) every worker is a process of its own: one torch thread each, so that two
# workers on two cores do not run four. Tests of thread independence set their own counts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

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
    from metarl.backends import native

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


SCRIPTS = {"run_config.py": "train", "show_results.py": "show_results", "show_environment.py": "show_environment"}


def run_script(*args: str, timeout: float = 300, cwd: Path | None = None,
               env: dict[str, str | None] | None = None, real_process: bool = False) -> subprocess.CompletedProcess:
    """Run ``python3 <script> args`` headless (``env``: extra environment variables, None removes one);
    returns the completed process (text output).

    A root script with no ``env`` runs in this process, from ``cwd`` (`run_root_script`: a process
    spends 2.5-4 s importing torch, which made the suite overrun its 5 minutes on 2 cores); ``real_process``
    (and every other command) starts ``python3`` as a user would; ``timeout`` bounds only a real process. Each
    script keeps tests that run it as a real process: signals, exit paths, the environment and the installed
    commands."""
    if not real_process and env is None and args and args[0] in SCRIPTS:
        return run_root_script(args[0], list(args[1:]), cwd=cwd)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    full = dict(os.environ, SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg", PYTHONPATH=path)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full, capture_output=True, text=True,
                          timeout=timeout)


def run_root_script(script: str, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python3 <script> args`` (a root script) run in this process as its entry point runs it: the same
    `run_main`, the same exit code, output and ``warning:`` lines, from ``cwd`` (default the repository root),
    headless.
    What the run changes in the process (threads, torch's random state, signal handlers, the environment,
    the working directory, warning filters) is put back afterwards; an exception that escapes is printed as
    Python prints it (``Traceback ...``, exit 1), so "no traceback" tests mean the same as for a process."""
    import contextlib
    import importlib
    import io
    import traceback
    import warnings

    from metarl.cli.main import run_main

    module = importlib.import_module(f"metarl.cli.{SCRIPTS[script]}")
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_threads, saved_rng = torch.get_num_threads(), torch.get_rng_state()
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    saved_format = warnings.formatwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    os.environ.update(SDL_VIDEODRIVER="dummy", MPLBACKEND="Agg")
    os.chdir(cwd or ROOT)
    sys.argv = [script, *args]
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # a fresh process's filters: deprecations hidden, the rest once
            warnings.simplefilter("default")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.showwarning = show
            try:
                code = run_main(module.main, args)
            except SystemExit as e:  # argparse: --help 0, usage errors 2; a message exits 1, as Python's does
                if e.code is None or isinstance(e.code, int):
                    code = e.code or 0
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        warnings.formatwarning = saved_format
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
        torch.set_rng_state(saved_rng)
        for s, handler in saved_signals.items():
            signal.signal(s, handler)
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), err.getvalue())


# No display and no video driver asked for: pygame falls back to a driver that draws nowhere.
NO_DISPLAY = {"SDL_VIDEODRIVER": None, "DISPLAY": None, "WAYLAND_DISPLAY": None, "MPLBACKEND": None}


@pytest.fixture
def seed_files() -> tuple[Path, Path]:
    """The original project's config and saved model."""
    return SEED_CONFIG, SEED_MODEL


def wait_for_file(path: Path, proc: subprocess.Popen) -> None:
    """Wait until ``path`` exists or ``proc`` has ended, however long a busy machine takes (no deadline)."""
    while not path.exists() and proc.poll() is None:
        time.sleep(0.05)


# ---------------------------------------------------------------- backends against the spec


def genomes(layout: GenomeLayout, pop: int, seed: int = 0) -> torch.Tensor:
    """Genomes with init_std 0.5, so that the cells are far from linear."""
    return layout.random(pop, 0.5, torch.Generator().manual_seed(seed))


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Equal to ``tol`` absolute plus ``tol`` relative."""
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def small_config(env: str = "Pendulum", hidden: list[int] | None = None, s_dim: int = 1, h_dim: int = 8,
                 compile: bool = False, pop: int = 20, steps: int = 40, native: bool | None = False) -> Config:
    """A small config on the spec, the compiled backend or the native kernel (two hidden layers of
    different widths unless ``hidden`` says otherwise)."""
    return Config(env=EnvConfig(name=env), actor=ActorConfig(hidden=hidden or [12, 6], sigma_init=0.2),
                  rule=RuleConfig(signal_dim=s_dim, state_dim=h_dim),
                  ga=GAConfig(population_size=pop, num_survivors=2, lifetime_steps=steps),
                  runtime=RuntimeConfig(compile=compile, native=native))


def fitness(config: Config, g: torch.Tensor, keys: torch.Tensor, **kw: object) -> torch.Tensor:
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    return lifetime.run_lifetimes(g, layout, config, keys, **kw)[0]


def lifetime_traces(config: Config, g: torch.Tensor, keys: torch.Tensor, backend: str,
                    chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fitness ``(P,)``, rewards ``(P, T)`` and env states ``(P, T, state_size)`` of whole lifetimes on
    ``backend``: ``spec`` and ``native`` through `run_lifetimes`, ``compiled`` run eagerly (its mathematics)."""
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    steps, pop = config.ga.lifetime_steps, g.shape[0]
    state_size = envs.env_class(config.env.name).state_size()
    if backend != "compiled":
        states = torch.zeros(pop, steps, state_size)
        total, rewards = lifetime.run_lifetimes(g, layout, config, keys, backend=backend, trace=True,
                                                states=states, chunk_size=chunk_size)
        return total, rewards, states
    life = lifetime.Lifetime(g, layout, config, keys, backend="compiled", eager=True)
    total = torch.zeros(pop, dtype=torch.float64)
    rewards, states = torch.zeros(steps, pop), torch.zeros(steps, state_size, pop)
    with torch.no_grad():
        life.run(steps, total, rewards, states)
    return total, rewards.t(), states.permute(2, 0, 1)


def assert_backends_agree(config: Config, g: torch.Tensor, keys: torch.Tensor, *, chunk_size: int | None = None,
                          tol: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The native kernel and the compiled step give the spec's fitness, rewards and states; returns the spec's."""
    want = lifetime_traces(config, g, keys, "spec")
    for backend in ("native", "compiled"):
        for got, expected in zip(lifetime_traces(config, g, keys, backend, chunk_size), want, strict=True):
            assert_close(got, expected, tol)
    return want


def run_in_process(args: list[Any]) -> tuple[int, str]:
    """run_config.py in this process (`run_root_script`): exit code and standard error."""
    done = run_root_script("run_config.py", [str(a) for a in args])
    return done.returncode, done.stderr


# The longest tests (``@pytest.mark.long(seconds)``: their time on 2 cores with cold caches) start first, longest
# first, so that under `-n 2` no worker is left with one of them at the end while the other idles; then the other
# slow tests; worksteal spreads the short ones.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> tuple[int, float]:
        long = item.get_closest_marker("long")
        if long is not None:
            return 0, -float(long.args[0])
        return (1 if item.get_closest_marker("slow") else 2), 0.0

    items.sort(key=rank)
