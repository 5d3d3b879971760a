"""The run: a `Searcher` asks, a `Problem` scores, hooks record; resumable at generation granularity.

A run folder holds ``config.yaml`` (resolved, seed recorded), ``log.csv``,
``best_model.yaml`` (best individual of the latest generation), ``best_ever.yaml``
(when different), ``checkpoint.pt`` and, with ``logging.snapshot_every``, ``snapshots/``.
The checkpoint, written atomically after every generation, is the source of truth: it holds the
searcher's state (the next population and its generator state), the log rows and the best
individual so far, so a resumed run continues exactly where it stopped.

Each generation the `Trainer` asks the searcher (`metarl.evolve.searchers`) for genomes, has the
problem (`metarl.evolve.problem`) score them, tells the searcher the fitness and calls its hooks
(`Hook`): the run folder's checkpoint and models, the CSV log, and, from the script, the
progress lines (`metarl.runs.logs.Progress`) and TensorBoard (`metarl.runs.logs.TensorBoardLog`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import os
import secrets
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..backends.lifetime import ProgressFn
from ..config import Config, from_dict, read_yaml, resolve_device, to_yaml
from ..core.genome import GenomeLayout, layout_of
from ..errors import ConfigError, ModelFileError, NonFiniteError
from ..runs import io
from ..runs.lock import LOCK_FILE, RunLock
from ..runs.signals import deferred_signals
from . import ga, searchers
from .problem import FitnessFn, LifetimeProblem, Problem, as_problem
from .searchers import Searcher

CHECKPOINT = "checkpoint.pt"
# The files a run writes; a folder holding one of them (or a folder where one belongs) is a run folder.
# stages.yaml: a multi-stage run's (metarl.evolve.stages).
# stages.yaml as a multi-stage run started (`metarl.evolve.stages`): a resume refuses a stages.yaml edited since.
STARTED_FILE = ".stages_started.yaml"
RUN_FILES = ("config.yaml", "log.csv", "best_model.yaml", "best_ever.yaml", CHECKPOINT, "stages.yaml", STARTED_FILE)
SNAPSHOTS = "snapshots"  # logging.snapshot_every: one model per N generations, gen_NNNNNN.yaml
# Show a progress bar inside a generation when it has at least this many individual-steps.
INNER_PROGRESS_MIN = 2_000_000


@dataclass
class RunState:
    """Everything needed to continue a run."""

    config: Config
    generation: int  # the next generation to evaluate
    searcher: Searcher  # holds the population of that generation
    rows: list[dict[str, float]] = field(default_factory=list)
    best_ever: dict[str, Any] | None = None  # {"genome", "fitness", "generation"}

    @property
    def population(self) -> torch.Tensor:
        """The genomes ``(P, G)`` (float32, CPU) of the next generation to evaluate."""
        return self.searcher.ask()

    @property
    def seed(self) -> int:
        """The run's seed (always recorded)."""
        assert self.config.seed is not None
        return self.config.seed

    def checkpoint(self) -> dict[str, Any]:
        """Serialisable form."""
        return {"generation": self.generation, **self.searcher.state_dict(), "rows": self.rows,
                "best_ever": self.best_ever, "seed": self.seed, "config": self.config.to_dict()}


def with_seed(config: Config) -> Config:
    """``config`` with a drawn seed if it has none.

    Under torchrun every process must draw the same seed: it is derived from the run id
    that torchrun gives all processes of one launch.
    """
    if config.seed is not None:
        return config
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and os.environ.get("WORLD_SIZE", "1") != "1":
        digest = hashlib.sha256(run_id.encode()).digest()
        return config.replace(seed=int.from_bytes(digest[:4], "little") & 0x7FFFFFFF)
    return config.replace(seed=secrets.randbits(31))


def new_run(config: Config) -> RunState:
    """Generation 0 of a new run: the searcher of ``config.search`` seeded with the run's seed, starting
    from ``Normal(0, init_std^2)`` or from the rule of ``ga.init_model`` (`warm_start`)."""
    config = with_seed(config)
    layout = layout_of(config)
    init = warm_start(config, layout) if config.ga.init_model is not None else None
    return RunState(config, 0, searchers.create(config, layout, init))


def warm_start(config: Config, layout: GenomeLayout) -> torch.Tensor:
    """The genome ``(G,)`` of the saved model ``ga.init_model`` a run starts from: the GA's generation 0 is
    it followed by ``P - 1`` mutated copies, CMA-ES's first mean is it. Where this config's rule is the
    model's with inputs added (`metarl.core.genome.GenomeLayout.embed`), the added inputs' weights start at 0, so
    generation 0 computes what the model does. A missing or unreadable model, or one with another rule size or
    another rule, is a `ConfigError` naming the key.
    A relative path that is not there is looked up among the shipped files, and a name names a shipped model
    (`metarl.shipped.model`), so the shipped curricula run from any folder."""
    from ..shipped import model as shipped_model

    assert config.ga.init_model is not None
    path = shipped_model(config.ga.init_model)
    try:
        model = io.load_model(path)
    except ModelFileError as e:
        raise ConfigError(f"ga.init_model: {e}") from None
    if (model.layout.signal_dim, model.layout.state_dim) != (layout.signal_dim, layout.state_dim):
        raise ConfigError(f"ga.init_model: {path}: its rule has signal_dim {model.layout.signal_dim}, state_dim "
                          f"{model.layout.state_dim}; this config's has {layout.signal_dim}, {layout.state_dim}")
    genome = model.genome.to(torch.float32).reshape(-1)
    if model.layout.rule.signature() == layout.rule.signature():
        return genome
    try:  # this config's rule is the model's with inputs added: their weights start at 0
        return layout.embed(genome, model.layout)
    except ValueError:
        raise ConfigError(f"ga.init_model: {path}: its rule is {model.layout.rule.name!r}; this config's is "
                          f"{layout.rule.name!r}, whose {layout.rule.difference(model.layout.rule)}: a warm start "
                          f"needs the model's rule, or that rule with inputs added") from None




def load_run(run_dir: str | Path, *, generations: int | None = None, device: str | None = None) -> RunState:
    """Resume state of a run folder; ``generations`` may raise the configured total, ``device``
    moves the run to another device (neither changes the config's other values).

    Everything read is checked (`metarl.runs.io.load_checkpoint`): the checkpoint's schema, types,
    shapes, finiteness and integrity hash, and that ``config.yaml`` is the config the checkpoint
    was made with, up to the keys the log does not depend on (`FREE_KEYS`)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run folder")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        recorded = config_from_checkpoint(run_dir)  # config.yaml lost mid-run: the checkpoint's copy, if any
    else:
        recorded = from_dict(read_yaml(config_path))
    config = recorded
    if generations is not None:
        config = config.replace(ga=dataclasses.replace(config.ga, generations=generations))
    if device is not None:
        config = config.replace(device=device)
    config.validate()
    if not (run_dir / CHECKPOINT).exists() and not (run_dir / "log.csv").exists():
        # Stopped between writing config.yaml and the first checkpoint: generation 0 follows from the
        # recorded config and seed alone.
        return new_run(config)
    state = io.load_checkpoint(run_dir / CHECKPOINT)
    if state["seed"] != config.seed:
        raise ModelFileError(f"{run_dir}: checkpoint seed {state['seed']} does not match config seed {config.seed}")
    if state.get("config") is not None:
        check_same_config(config_path, state["config"], recorded)
    population = state["population"]
    layout = layout_of(config)
    if population.shape != (config.ga.population_size, layout.size):
        raise ModelFileError(f"{run_dir}: checkpoint population has shape {tuple(population.shape)}, "
                             f"config needs ({config.ga.population_size}, {layout.size})")
    best_ever = state["best_ever"]
    if best_ever is not None and tuple(best_ever["genome"].shape) != (layout.size,):
        raise ModelFileError(f"{run_dir / CHECKPOINT}: corrupt checkpoint (best_ever genome has shape "
                             f"{tuple(best_ever['genome'].shape)}, config needs ({layout.size},))")
    searcher = searchers.create(config, layout)
    try:
        searcher.load_state_dict(state)
    except ModelFileError as e:
        advice = "" if "start a new run" in str(e) else "; restore it, or start a new run"
        raise ModelFileError(f"{run_dir / CHECKPOINT}: {e}{advice}") from None
    return RunState(config, int(state["generation"]), searcher, list(state["rows"]), best_ever)


def config_from_checkpoint(run_dir: Path) -> Config:
    """The config of a run folder whose ``config.yaml`` is missing (deleted during the run), from the copy its
    checkpoint holds (format 2); the `Trainer` writes ``config.yaml`` again. A folder without a checkpoint, or
    with one of format 1 (no copy), is one line."""
    import warnings

    config_path = run_dir / "config.yaml"
    if config_path.exists() or config_path.is_symlink():
        raise ModelFileError(f"{config_path}: not a regular file; a run folder's config.yaml must be a plain file "
                             f"(move it away)")
    if not (run_dir / CHECKPOINT).exists():
        raise ModelFileError(f"{run_dir}: not a run folder (no config.yaml)")
    state = io.load_checkpoint(run_dir / CHECKPOINT)
    if not isinstance(state.get("config"), dict):
        raise ModelFileError(f"{run_dir}: config.yaml is missing and its checkpoint (written by a metarl before "
                             f"checkpoint format 2) holds no copy: put the run's config.yaml back")
    try:
        config = from_dict(state["config"])
    except ConfigError as e:
        raise ModelFileError(f"{run_dir / CHECKPOINT}: corrupt checkpoint (its config: {e})") from None
    warnings.warn(f"{config_path} is missing: the run continues with the config its checkpoint holds (written "
                  f"again as config.yaml)", stacklevel=2)
    return config


# Keys of config.yaml that a resumed run may change: they do not change any number of the log
# (how many generations, what is printed or logged, how the work is split, which device and step path).
# plugins: where the code is (a moved plugin may be named anew), not what it does (rule and env are checked by name)
FREE_KEYS = ("ga.generations", "logging", "runtime", "device", "plugins")


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "", *,
                       free: tuple[str, ...] = FREE_KEYS) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of the keys where two config dicts differ, except ``free``."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        name = f"{prefix}{key}"
        if any(name == f or name.startswith(f + ".") for f in free):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name + ".", free=free)
        elif a != b:
            out.append((name, a, b))
    return out


def check_same_config(config_path: Path, checkpoint_config: Any, recorded: Config) -> None:
    """Refuse a ``config.yaml`` edited since the checkpoint in a key the log depends on."""
    from ..config.schema import _show

    try:
        old = from_dict(checkpoint_config, import_plugins=False).to_dict()  # config.yaml's plugins are loaded
    except ConfigError as e:
        raise ModelFileError(f"{config_path.parent / CHECKPOINT}: corrupt checkpoint (its config: {e})") from None
    diffs = config_differences(old, recorded.to_dict())
    if diffs:
        listed = ", ".join(f"{k} (checkpoint {_show(a)}, config.yaml {_show(b)})" for k, a, b in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise ModelFileError(f"{config_path}: edited since the checkpoint: {listed}{more}; a resumed run keeps the "
                             f"config its log was made with (only {', '.join(FREE_KEYS)} may change): undo the edit, "
                             f"or start a new run with the edited config")


def default_run_dir(config_path: str | Path, root: str | Path = "results") -> Path:
    """``results/<timestamp>_<config name>/`` (suffixed if it already exists)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(root) / f"{stamp}_{Path(config_path).stem}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


class RunFolderError(ModelFileError):
    """A run folder that cannot be created or written, or that is not (only) a run's."""


def _why(e: OSError) -> str:
    return e.strerror or e.__class__.__name__


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def check_new_run_dir(run_dir: str | Path) -> None:
    """Refuse, before anything is written, an ``--out`` that is not a new or empty folder (a folder with
    another program's or a user's files is never written into) or that cannot become one."""
    run_dir = Path(run_dir)
    io.check_path(run_dir, "run folder", RunFolderError)
    try:
        mode = run_dir.stat().st_mode
    except FileNotFoundError:
        parent = run_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise RunFolderError(f"{run_dir}: cannot create the run folder: {parent} is not a folder") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunFolderError(f"{run_dir}: cannot create the run folder: {parent} is not writable") from None
        return
    except NotADirectoryError:
        raise RunFolderError(f"{run_dir}: cannot create the run folder: a part of the path is a file") from None
    except OSError as e:
        raise RunFolderError(f"{run_dir}: cannot use as a run folder ({_why(e)})") from None
    if not stat.S_ISDIR(mode):
        raise RunFolderError(f"{run_dir}: exists and is not a folder; --out must name a new or empty folder")
    try:
        names = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE and not _is_temporary(p.name))
    except OSError as e:
        raise RunFolderError(f"{run_dir}: cannot read the folder ({_why(e)})") from None
    if STARTED_FILE in names and "stages.yaml" not in names:
        names.remove(STARTED_FILE)  # a multi-stage start stopped before stages.yaml: nothing ran, start again
    if any(name in RUN_FILES for name in names):
        raise RunFolderError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    if names:
        shown = ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise RunFolderError(f"{run_dir}: not empty and not a metarl run folder (it holds {shown}); a new run is "
                             f"written only into a new or empty folder: choose another --out")


def check_run_files(run_dir: Path) -> None:
    """Each file a run writes is a regular file where it exists (not a folder, FIFO or device)."""
    for name in (*RUN_FILES, "rescored_model.yaml"):
        path = run_dir / name
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        except OSError as e:
            raise RunFolderError(f"{path}: cannot read ({_why(e)})") from None
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a link" if stat.S_ISLNK(mode) else "not a regular file"
            raise RunFolderError(f"{path}: is {kind}; a run folder's {name} must be a plain file (move it away)")


def claim_run_dir(run_dir: str | Path, *, new: bool) -> RunLock:
    """Create (``new``) or open a run folder for writing and lock it (`metarl.runs.lock`): the one place
    that decides whether this process may write here. The checks of a new folder are repeated under
    the lock, so two runs started at once into one ``--out`` never mix: the second is refused."""
    run_dir = Path(run_dir)
    if new:
        check_new_run_dir(run_dir)
    else:
        io.check_path(run_dir, "run folder", RunFolderError)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"{run_dir}: cannot create the run folder ({_why(e)})") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunFolderError(f"{run_dir}: the run folder is not writable")
    lock = RunLock(run_dir).acquire()
    try:
        if new:
            check_new_run_dir(run_dir)
        check_run_files(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _advice(path: Path, e: OSError, folder: Path) -> str:
    by_errno: dict[int | None, str] = {  # e.errno is None for an OSError raised without one
        errno.ENOSPC: "free disk space", errno.EDQUOT: "free space within your disk quota",
        errno.EISDIR: f"move the folder {path.name} out of the way",
        errno.EACCES: f"make {io.clip_path(folder)} writable", errno.EROFS: f"make {io.clip_path(folder)} writable",
        errno.ENAMETOOLONG: "use a shorter path"}
    return by_errno.get(e.errno, "fix this")


def write_error(path: Path, e: OSError, run_dir: Path, saved: int) -> RunFolderError:
    """One line for a failed write of ``path`` in a run folder whose checkpoint holds ``saved`` generations."""
    if not run_dir.is_dir():
        return RunFolderError(f"{io.clip_path(path)}: cannot write ({_why(e)}): the run folder "
                              f"{io.clip_path(run_dir)} was removed during the run; nothing is left to resume")
    return RunFolderError(f"{io.clip_path(path)}: cannot write ({_why(e)}); the previous checkpoint ({saved} "
                          f"complete generations) is kept: {_advice(path, e, run_dir)}, then resume with: python3 "
                          f"run_config.py --resume {io.clip_path(run_dir)}")


@contextmanager
def writing(path: Path, then: str) -> Iterator[None]:
    """An OSError while writing ``path`` (disk full, a folder in the way, a read-only folder) -> one line: the
    file, why, what to do and ``then`` (what to run after)."""
    try:
        yield
    except OSError as e:
        raise RunFolderError(f"{io.clip_path(path)}: cannot write ({_why(e)}); nothing else was changed: "
                             f"{_advice(path, e, path.parent)}, then {then}") from None


@dataclass
class GenerationResult:
    """One evaluated generation, as the hooks see it."""

    generation: int
    genomes: torch.Tensor  # (P, G): what the searcher asked, as evaluated
    fitness: torch.Tensor  # (P,) float64
    best_index: int  # the best finite individual
    row: dict[str, float]  # the log row (`metarl.runs.io.LOG_FIELDS`)

    @property
    def best_genome(self) -> torch.Tensor:
        """The generation's best genome ``(G,)``."""
        return self.genomes[self.best_index]

    @property
    def best(self) -> float:
        """Its fitness."""
        return float(self.fitness[self.best_index])


class Hook:
    """Something the `Trainer` calls around each generation; override what you need."""

    def generation_begins(self, trainer: Trainer, generation: int) -> ProgressFn | None:
        """Before ``generation`` is evaluated; may return the function that reports progress inside it
        (the first hook that does is used)."""
        return None

    def generation_ends(self, trainer: Trainer, result: GenerationResult) -> None:
        """After ``result.generation`` is evaluated and the searcher told (``trainer.state`` is at the next)."""

    def close(self) -> None:
        """At the end of `Trainer.run`, however it ends."""


def snapshot_path(run_dir: str | Path, generation: int) -> Path:
    """Where ``logging.snapshot_every`` saves generation ``generation``'s model."""
    return Path(run_dir) / SNAPSHOTS / f"gen_{generation:06d}.yaml"


class CheckpointHook(Hook):
    """``best_model.yaml``, ``best_ever.yaml``, the generation's snapshot (``logging.snapshot_every``) and,
    last, ``checkpoint.pt``: a crash in between only repeats the generation (which writes the same files)."""

    def generation_ends(self, trainer: Trainer, result: GenerationResult) -> None:
        st, run_dir, g = trainer.state, trainer.run_dir, result.generation
        every = st.config.logging.snapshot_every
        if every is not None and (g % every == 0 or g + 1 == st.config.ga.generations):
            self.snapshot(trainer, result)
        with trainer.writing(run_dir / "best_model.yaml"):
            io.save_model(run_dir / "best_model.yaml", result.best_genome, trainer.layout, st.config,
                          fitness=result.best, generation=g, seed=st.seed)
        be = st.best_ever
        assert be is not None
        ever_path = run_dir / "best_ever.yaml"
        with trainer.writing(ever_path):
            if be["generation"] != g:
                io.save_model(ever_path, be["genome"], trainer.layout, st.config, fitness=be["fitness"],
                              generation=be["generation"], seed=st.seed)
            else:
                ever_path.unlink(missing_ok=True)
        with trainer.writing(run_dir / CHECKPOINT):
            io.save_checkpoint(run_dir / CHECKPOINT, st.checkpoint())
        trainer.saved = st.generation

    @staticmethod
    def snapshot(trainer: Trainer, result: GenerationResult) -> None:
        """The searcher's best guess after ``result``'s generation (the GA: its best individual, as in
        ``best_model.yaml``; CMA-ES: the distribution's mean after the update, never scored in training: its
        fitness field is the generation's best)."""
        st = trainer.state
        path = snapshot_path(trainer.run_dir, result.generation)
        with trainer.writing(path):
            path.parent.mkdir(exist_ok=True)
            genome = st.searcher.candidates(1)[0][0]
            io.save_model(path, genome, trainer.layout, st.config, fitness=result.best,
                          generation=result.generation, seed=st.seed)


class CSVLogHook(Hook):
    """``log.csv``, one row per generation (written after the checkpoint: a process stopped in between left
    the log a generation behind, which the next `Trainer` repairs)."""

    def generation_ends(self, trainer: Trainer, result: GenerationResult) -> None:
        with trainer.writing(trainer.run_dir / "log.csv"):
            io.atomic_write_text(trainer.run_dir / "log.csv", io.log_text(trainer.state.rows))


class Trainer:
    """Runs generations of a `RunState`: the state's searcher asks, ``problem`` scores, the hooks record.

    ``problem`` defaults to `LifetimeProblem` on ``device``; ``evaluator``, a plain fitness function
    ``(genomes, generation, progress) -> fitness``, may stand in for it. With ``writer`` (the default)
    the run folder is written: `CheckpointHook` and `CSVLogHook` come first, then ``hooks``.
    """

    def __init__(self, state: RunState, run_dir: str | Path, *, problem: Problem | None = None,
                 evaluator: FitnessFn | None = None, hooks: Sequence[Hook] = (), writer: bool = True,
                 device: torch.device | None = None) -> None:
        self.state = state
        self.run_dir = Path(run_dir)
        self.layout = layout_of(state.config)
        self.device = device if device is not None else resolve_device(state.config.device)
        if problem is None:
            problem = as_problem(evaluator) if evaluator is not None else LifetimeProblem(state.config, self.device)
        self.problem = problem
        self.writer = writer
        self.hooks: list[Hook] = [*((CheckpointHook(), CSVLogHook()) if writer else ()), *hooks]
        self.saved = state.generation  # complete generations in the checkpoint on disk
        if writer:
            with self.writing(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
                io.remove_temporary_files(self.run_dir)  # left by a process killed while writing
            with self.writing(self.run_dir / "config.yaml"):
                io.atomic_write_text(self.run_dir / "config.yaml", to_yaml(state.config))
            if state.generation == 0 and not (self.run_dir / CHECKPOINT).exists():
                with self.writing(self.run_dir / CHECKPOINT):
                    io.save_checkpoint(self.run_dir / CHECKPOINT, state.checkpoint())
            if state.rows:
                # The checkpoint is written before the log: a process stopped in between left the log a
                # generation behind.
                with self.writing(self.run_dir / "log.csv"):
                    io.atomic_write_text(self.run_dir / "log.csv", io.log_text(state.rows))

    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        """An OSError while writing ``path`` (disk full, folder removed or in the way) -> one line (`write_error`)."""
        try:
            yield
        except OSError as e:
            raise write_error(path, e, self.run_dir, self.saved) from None

    def run(self, generations: int) -> None:
        """Run generations until the state reaches ``generations``; the hooks are closed however it ends."""
        try:
            while self.state.generation < generations:
                self.run_generation()
        finally:
            for hook in self.hooks:
                hook.close()

    def run_generation(self, progress: ProgressFn | None = None) -> dict[str, float]:
        """Ask, evaluate, record and tell one generation, then call the hooks; returns its log row.
        ``progress`` (default: the first a hook offers) is called inside the evaluation."""
        st, cfg = self.state, self.state.config
        g = st.generation
        for hook in self.hooks:
            offered = hook.generation_begins(self, g)
            progress = progress if progress is not None else offered
        genomes = st.searcher.ask()
        t0 = time.perf_counter()
        fitness = self.problem.evaluate(genomes, seed=st.seed, generation=g, progress=progress).to(torch.float64)
        seconds = time.perf_counter() - t0
        finite = fitness[torch.isfinite(fitness)]
        nonfinite = fitness.numel() - finite.numel()
        if not finite.numel():
            raise NonFiniteError(f"generation {g}: the fitness of all {nonfinite} individuals is NaN or infinite, "
                                 f"so nothing can be ranked; the run stops (check the env, actor and rule values "
                                 f"of {self.run_dir / 'config.yaml'})")
        best_i = int(ga.rank(fitness)[0])  # non-finite last, so the best is finite
        best = float(fitness[best_i])
        if st.best_ever is None or not math.isfinite(st.best_ever["fitness"]) or best > st.best_ever["fitness"]:
            st.best_ever = {"genome": genomes[best_i].clone(), "fitness": best, "generation": g}
        steps = cfg.ga.population_size * cfg.ga.lifetime_steps * cfg.ga.evals_per_individual
        row = {"generation": g, "best": best, "mean": float(finite.mean()), "median": float(finite.median()),
               "worst": float(finite.min()), "best_ever": float(st.best_ever["fitness"]), "seconds": seconds,
               "individual_steps_per_s": steps / max(seconds, 1e-9), "nonfinite": nonfinite}
        st.searcher.tell(fitness)  # the GA replaces its population tensor; ``genomes`` stays as evaluated
        st.rows.append(row)
        st.generation = g + 1
        result = GenerationResult(g, genomes, fitness, best_i, row)
        if self.writer:
            with deferred_signals():  # a stop now would leave the log behind the checkpoint
                self._call_hooks(result)
        else:
            self._call_hooks(result)
        return row

    def _call_hooks(self, result: GenerationResult) -> None:
        for hook in self.hooks:
            hook.generation_ends(self, result)
