"""The GA run: evaluate, log, save, select, checkpoint; resumable at generation granularity.

A run folder holds ``config.yaml`` (resolved, seed recorded), ``log.csv``,
``best_model.yaml`` (best individual of the latest generation), ``best_ever.yaml``
(when different) and ``checkpoint.pt``. The checkpoint, written atomically after every
generation, is the source of truth: it holds the next population, the GA generator
state and the log rows, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from . import ga, io
from .cli import deferred_signals
from .config import Config, from_dict, read_yaml, resolve_device, to_yaml
from .errors import ConfigError, ModelFileError, NonFiniteError
from .genome import GenomeLayout
from .lifetime import ProgressFn, evaluate

CHECKPOINT = "checkpoint.pt"
# Show a progress bar inside a generation when it has at least this many individual-steps.
INNER_PROGRESS_MIN = 2_000_000

# (population (P, G), generation, progress) -> fitness (P,) float64 on the CPU
Evaluator = Callable[[torch.Tensor, int, ProgressFn | None], torch.Tensor]


@dataclass
class RunState:
    """Everything needed to continue a run."""

    config: Config
    generation: int  # the next generation to evaluate
    population: torch.Tensor  # (P, G), float32, CPU
    ga_generator: torch.Generator
    rows: list[dict[str, float]] = field(default_factory=list)
    best_ever: dict[str, Any] | None = None  # {"genome", "fitness", "generation"}

    @property
    def seed(self) -> int:
        """The run's seed (always recorded)."""
        assert self.config.seed is not None
        return self.config.seed

    def checkpoint(self) -> dict[str, Any]:
        """Serialisable form."""
        return {"generation": self.generation, "population": self.population,
                "ga_generator": self.ga_generator.get_state(), "rows": self.rows,
                "best_ever": self.best_ever, "seed": self.seed}


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
    """Generation 0 of a new run: population drawn from ``Normal(0, init_std^2)`` with the seed, or
    with ``ga.init_model`` that model's rule and mutated copies of it (`warm_start`)."""
    config = with_seed(config)
    layout = layout_of(config)
    gen = torch.Generator().manual_seed(config.seed)
    if config.ga.init_model is not None:
        population = warm_start(config, layout, gen)
    else:
        population = layout.random(config.ga.population_size, config.rule.init_std, gen)
    return RunState(config, 0, population, gen)


def warm_start(config: Config, layout: GenomeLayout, generator: torch.Generator) -> torch.Tensor:
    """Generation 0 ``(P, G)`` from the saved model ``ga.init_model``: its rule unchanged first, then
    ``P - 1`` copies mutated as children are (``ga.mutation_probability``, ``ga.mutation_strength``).
    A missing or unreadable model, or one with another rule size, is a `ConfigError` naming the key.
    A relative path that is not there is looked up among the shipped files, and a name names a shipped model
    (`metarl.shipped.model`), so the shipped curricula run from any folder."""
    from .shipped import model as shipped_model

    path = shipped_model(config.ga.init_model)
    try:
        model = io.load_model(path)
    except ModelFileError as e:
        raise ConfigError(f"ga.init_model: {e}") from None
    if (model.layout.signal_dim, model.layout.state_dim) != (layout.signal_dim, layout.state_dim):
        raise ConfigError(f"ga.init_model: {path}: its rule has signal_dim {model.layout.signal_dim}, state_dim "
                          f"{model.layout.state_dim}; this config's has {layout.signal_dim}, {layout.state_dim}")
    genome = model.genome.to(torch.float32).reshape(1, -1)
    copies = genome.expand(config.ga.population_size - 1, -1)
    children = ga.mutate(copies, probability=config.ga.mutation_probability, strength=config.ga.mutation_strength,
                         generator=generator)
    return torch.cat((genome, children))


def layout_of(config: Config) -> GenomeLayout:
    """Genome layout of a config."""
    return GenomeLayout(config.rule.signal_dim, config.rule.state_dim)


def load_run(run_dir: str | Path, *, generations: int | None = None, device: str | None = None) -> RunState:
    """Resume state of a run folder; ``generations`` may raise the configured total, ``device``
    moves the run to another device (neither changes the config's other values)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelFileError(f"{run_dir}: no such run folder")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ModelFileError(f"{run_dir}: not a run folder (no config.yaml)")
    config = from_dict(read_yaml(config_path))
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
    population = state["population"]
    layout = layout_of(config)
    if population.shape != (config.ga.population_size, layout.size):
        raise ModelFileError(f"{run_dir}: checkpoint population has shape {tuple(population.shape)}, "
                             f"config needs ({config.ga.population_size}, {layout.size})")
    gen = torch.Generator()
    gen.set_state(state["ga_generator"])
    return RunState(config, int(state["generation"]), population, gen, list(state["rows"]), state["best_ever"])


def default_run_dir(config_path: str | Path, root: str | Path = "results") -> Path:
    """``results/<timestamp>_<config name>/`` (suffixed if it already exists)."""
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    base = Path(root) / f"{stamp}_{Path(config_path).stem}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def local_evaluator(config: Config, device: torch.device) -> Evaluator:
    """Evaluate the whole population in this process on ``device``."""
    layout = layout_of(config)

    def run(population: torch.Tensor, generation: int, progress: ProgressFn | None) -> torch.Tensor:
        fitness = evaluate(population.to(device), layout, config, seed=config.seed, generation=generation,
                           progress=progress)
        return fitness.cpu()

    return run


GenerationCallback = Callable[[dict[str, float]], None]


class Trainer:
    """Runs generations of a `RunState`, writing the run folder when ``writer`` is true."""

    def __init__(self, state: RunState, run_dir: str | Path, *, evaluator: Evaluator | None = None,
                 writer: bool = True, device: torch.device | None = None) -> None:
        self.state = state
        self.run_dir = Path(run_dir)
        self.layout = layout_of(state.config)
        self.device = device if device is not None else resolve_device(state.config.device)
        self.evaluator = evaluator if evaluator is not None else local_evaluator(state.config, self.device)
        self.writer = writer
        if writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            io.remove_temporary_files(self.run_dir)  # left by a process killed while writing
            io.atomic_write_text(self.run_dir / "config.yaml", to_yaml(state.config))
            if state.generation == 0 and not (self.run_dir / CHECKPOINT).exists():
                io.save_checkpoint(self.run_dir / CHECKPOINT, state.checkpoint())
            if state.rows:
                # The checkpoint is written before the log: a process stopped in between left the log a
                # generation behind.
                io.atomic_write_text(self.run_dir / "log.csv", io.log_text(state.rows))

    def run_generation(self, progress: ProgressFn | None = None) -> dict[str, float]:
        """Evaluate, record and select one generation; returns its log row."""
        st, cfg = self.state, self.state.config
        g = st.generation
        t0 = time.perf_counter()
        fitness = self.evaluator(st.population, g, progress).to(torch.float64)
        seconds = time.perf_counter() - t0
        finite = fitness[torch.isfinite(fitness)]
        nonfinite = fitness.numel() - finite.numel()
        if not finite.numel():
            raise NonFiniteError(f"generation {g}: the fitness of all {nonfinite} individuals is NaN or infinite, "
                                 f"so nothing can be ranked; the run stops (check the env, actor and rule values "
                                 f"of {self.run_dir / 'config.yaml'})")
        order = ga.rank(fitness)  # non-finite last, so the best is finite
        best_i = int(order[0])
        best = float(fitness[best_i])
        if st.best_ever is None or not math.isfinite(st.best_ever["fitness"]) or best > st.best_ever["fitness"]:
            st.best_ever = {"genome": st.population[best_i].clone(), "fitness": best, "generation": g}
        steps = cfg.ga.population_size * cfg.ga.lifetime_steps * cfg.ga.evals_per_individual
        row = {"generation": g, "best": best, "mean": float(finite.mean()), "median": float(finite.median()),
               "worst": float(finite.min()), "best_ever": float(st.best_ever["fitness"]), "seconds": seconds,
               "individual_steps_per_s": steps / max(seconds, 1e-9), "nonfinite": nonfinite}
        best_genome = st.population[best_i].clone()
        st.population = ga.next_generation(st.population, fitness, num_survivors=cfg.ga.num_survivors,
                                           mutation_probability=cfg.ga.mutation_probability,
                                           mutation_strength=cfg.ga.mutation_strength,
                                           generator=st.ga_generator)
        st.rows.append(row)
        st.generation = g + 1
        if self.writer:
            with deferred_signals():  # a stop now would leave the log behind the checkpoint
                self._write(best_genome, best, g)
        return row

    def _write(self, best_genome: torch.Tensor, best: float, g: int) -> None:
        st = self.state
        # Models first, checkpoint last: a crash in between only repeats this generation.
        io.save_model(self.run_dir / "best_model.yaml", best_genome, self.layout, st.config,
                      fitness=best, generation=g, seed=st.seed)
        be = st.best_ever
        ever_path = self.run_dir / "best_ever.yaml"
        if be["generation"] != g:
            io.save_model(ever_path, be["genome"], self.layout, st.config, fitness=be["fitness"],
                          generation=be["generation"], seed=st.seed)
        else:
            ever_path.unlink(missing_ok=True)
        io.save_checkpoint(self.run_dir / CHECKPOINT, st.checkpoint())
        io.atomic_write_text(self.run_dir / "log.csv", io.log_text(st.rows))
