"""Searchers: what proposes the genomes a `metarl.evolve.problem.Problem` scores, behind an ask/tell seam.

A `Searcher` holds one generation at a time: ``ask()`` returns its genomes ``(P, G)``
(float32, CPU; the same tensor until ``tell``), ``tell(fitness)`` takes their fitness ``(P,)``
(higher is better; NaN and ±inf are the worst) and moves on to the next generation. Its
``state_dict()`` is what a checkpoint holds of it (tensors and plain values, read back with
``torch.load(weights_only=True)``), always with ``population`` (the pending ``ask()``) and
``ga_generator`` (the state of the searcher's `torch.Generator`); ``load_state_dict`` restores it
so that a resumed run continues with the same numbers.

Two searchers, chosen by the config's ``search.name``:

- ``ga``: metarl's truncation-selection GA (`metarl.evolve.ga`, the ``ga`` section).
- ``cma``: CMA-ES from pycma (``pip install cma threadpoolctl``, the ``cma`` extra; Hansen's
  reference implementation), mean and step size ``search.sigma0`` starting at the origin (or at
  ``ga.init_model``'s genome), ``ga.population_size`` samples per generation, optionally
  the diagonal (separable) variant. Its normal draws come from the run's seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch

from ..config import Config
from ..core.genome import GenomeLayout
from ..errors import ConfigError, ModelFileError
from . import cma_state, ga


class Searcher(Protocol):
    """Proposes genomes, learns from their fitness; checkpoints."""

    def ask(self) -> torch.Tensor:
        """The current generation's genomes ``(P, G)`` float32 on the CPU (the same until `tell`)."""
        ...

    def tell(self, fitness: torch.Tensor) -> None:
        """The fitness ``(P,)`` of `ask`'s genomes; moves on to the next generation."""
        ...

    def candidates(self, k: int) -> tuple[torch.Tensor, list[str]]:
        """At most ``k`` genomes ``(K, G)`` worth scoring again on held-out lifetimes to choose what a run ships,
        the searcher's best guess first, and a label for each (`metarl.analysis.evaluation.rescore`)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds: at least ``population`` and ``ga_generator``."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict` (a `ModelFileError` if it is not one of this searcher)."""
        ...


def create(config: Config, layout: GenomeLayout, init: torch.Tensor | None = None) -> Searcher:
    """The searcher of ``config.search`` at generation 0, seeded with ``config.seed``; ``init (G,)`` is the
    genome to start from (``ga.init_model``), if any."""
    assert config.seed is not None
    generator = torch.Generator().manual_seed(config.seed)
    if config.search.name == "cma":
        return CMASearcher(config, layout, generator, init)
    return GASearcher.initial(config, layout, generator, init)


def candidate_bound(config: Config) -> tuple[int, str]:
    """The most candidates a run's searcher offers for rescoring, and the config key that bounds it: the GA's
    elites (``ga.num_survivors``), CMA-ES's mean and samples (``ga.population_size``)."""
    if config.search.name == "ga":
        return config.ga.num_survivors, "ga.num_survivors"
    return config.ga.population_size, "ga.population_size"


class GASearcher:
    """The GA (`metarl.evolve.ga`): the elites survive unchanged, mutated copies of them fill the population."""

    def __init__(self, population: torch.Tensor, generator: torch.Generator, *, num_survivors: int,
                 mutation_probability: float, mutation_strength: float) -> None:
        self.population = population
        self.generator = generator
        self.num_survivors = num_survivors
        self.mutation_probability = mutation_probability
        self.mutation_strength = mutation_strength

    @classmethod
    def initial(cls, config: Config, layout: GenomeLayout, generator: torch.Generator,
                init: torch.Tensor | None = None) -> GASearcher:
        """Generation 0: ``Normal(0, rule.init_std^2)``, or ``init`` followed by ``P - 1`` copies of it mutated
        as children are (a warm start)."""
        g = config.ga
        if init is None:
            population = layout.random(g.population_size, config.rule.init_std, generator)
        else:
            genome = init.to(torch.float32).reshape(1, -1)
            children = ga.mutate(genome.expand(g.population_size - 1, -1), probability=g.mutation_probability,
                                 strength=g.mutation_strength, generator=generator)
            population = torch.cat((genome, children))
        return cls(population, generator, num_survivors=g.num_survivors,
                   mutation_probability=g.mutation_probability, mutation_strength=g.mutation_strength)

    def ask(self) -> torch.Tensor:
        """The population ``(P, G)``; after a `tell`, the elites first, best first."""
        return self.population

    def tell(self, fitness: torch.Tensor) -> None:
        """Select and mutate (`metarl.evolve.ga.next_generation`)."""
        self.population = ga.next_generation(self.population, fitness, num_survivors=self.num_survivors,
                                             mutation_probability=self.mutation_probability,
                                             mutation_strength=self.mutation_strength, generator=self.generator)

    def candidates(self, k: int) -> tuple[torch.Tensor, list[str]]:
        """The ``k`` elites of the last generation (first in the population after a `tell`, best first)."""
        return self.population[:k], [f"elite {i + 1}" for i in range(min(k, self.population.shape[0]))]

    def state_dict(self) -> dict[str, Any]:
        """The population and the generator's state."""
        return {"population": self.population, "ga_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's population and generator state."""
        self.population = state["population"]
        self.generator.set_state(state["ga_generator"])


def _cma_modules() -> tuple[Any, Any]:
    """pycma and a threadpoolctl ``ThreadpoolController``, or a one-line `ConfigError` saying what to install."""
    global _controller
    try:
        import cma  # type: ignore[import-untyped,import-not-found,unused-ignore]
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError as e:
        package = "pycma package: pip install cma" if e.name == "cma" else \
            "threadpoolctl package: pip install threadpoolctl"
        raise ConfigError(f"search.name: cma needs the {package} (or pip install 'metarl[cma]')") from None
    if _controller is None:
        _controller = ThreadpoolController()  # finds the loaded BLAS libraries once (0.01 s each time)
    return cma, _controller


_controller: Any = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread while pycma works: its eigendecompositions are small (a 56 x 56 one took
    0.1 s with two BLAS threads on a busy 2-core machine, 1 ms with one), and one thread gives the same bits
    whatever the machine's core count."""
    _, controller = _cma_modules()
    with controller.limit(limits=1, user_api="blas"):
        yield


class TorchNormal:
    """pycma's ``randn`` option: ``randn(*shape)`` standard normal float64 draws from a `torch.Generator`, so
    that the run's seed and its checkpointed generator state decide every sample (pycma would otherwise
    draw from numpy's global generator). Not part of a checkpoint: a resumed strategy uses the fresh one
    (`metarl.evolve.cma_state`)."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator

    def __call__(self, *shape: int) -> np.ndarray:
        assert self.generator is not None
        return torch.randn(shape, generator=self.generator, dtype=torch.float64).numpy()


class CMASearcher:
    """CMA-ES (pycma's ``CMAEvolutionStrategy``) on metarl's fitness, maximised."""

    def __init__(self, config: Config, layout: GenomeLayout, generator: torch.Generator,
                 init: torch.Tensor | None = None) -> None:
        cma, _ = _cma_modules()
        self.generator = generator
        self.size = layout.size
        x0 = np.zeros(layout.size) if init is None else init.double().numpy().copy()
        sigma0 = config.search.sigma0 if config.search.sigma0 is not None else config.rule.init_std
        options = {"popsize": config.ga.population_size, "randn": TorchNormal(generator), "seed": math.nan,
                   "CMA_diagonal": config.search.diagonal, "verbose": -9, "verb_log": 0, "verb_disp": 0,
                   # A run stops after ga.generations, not when pycma would (its termination criteria).
                   "maxiter": math.inf, "maxfevals": math.inf, "tolfun": 0, "tolfunhist": 0, "tolx": 0,
                   "tolstagnation": math.inf, "tolflatfitness": math.inf}
        with _one_blas_thread():
            self.es = cma.CMAEvolutionStrategy(x0, sigma0, options)
            self._ask()
        # The last generation told, best first, and its fitness: None before the first tell (and in a
        # checkpoint written before they were kept).
        self.last: tuple[torch.Tensor, torch.Tensor] | None = None

    def _ask(self) -> None:
        self.pending = np.asarray(self.es.ask(), dtype=np.float64)  # (P, G): what pycma's tell wants back
        self.population = torch.from_numpy(self.pending).to(torch.float32)

    def ask(self) -> torch.Tensor:
        """The current samples ``(P, G)`` of ``Normal(mean, sigma^2 C)`` (rounded to float32)."""
        return self.population

    def tell(self, fitness: torch.Tensor) -> None:
        """Update the mean, step size and covariance from the ranking; draw the next samples. pycma
        minimises, so it is told ``-fitness``; a non-finite fitness counts as the worst finite one."""
        loss = -fitness.to(torch.float64).cpu().numpy()
        finite = np.isfinite(loss)
        loss = np.where(finite, loss, loss[finite].max() if finite.any() else 0.0)
        order = torch.from_numpy(np.argsort(loss, kind="stable"))
        self.last = (self.population[order], torch.from_numpy(-loss)[order])  # indexing copies
        with _one_blas_thread():
            self.es.tell(list(self.pending), loss.tolist())
            self._ask()

    def candidates(self, k: int) -> tuple[torch.Tensor, list[str]]:
        """The distribution's mean (what CMA-ES estimates the optimum to be; no sample of it was scored), then
        the ``k - 1`` best samples of the last generation told, by their training fitness."""
        mean = torch.from_numpy(np.asarray(self.es.mean, dtype=np.float64)).to(torch.float32)[None]
        labels = ["mean"]
        if self.last is not None and k > 1:
            best = self.last[0][:k - 1]
            labels += [f"rank {i + 1}" for i in range(best.shape[0])]
            return torch.cat((mean, best)), labels
        return mean, labels

    def state_dict(self) -> dict[str, Any]:
        """The samples, the generator's state, pycma's object as data (`metarl.evolve.cma_state`, no pickle) with
        the samples it asked in float64, and the last generation told (``last_population`` best first and
        ``last_fitness``, once there is one)."""
        out = {"population": self.population, "ga_generator": self.generator.get_state(),
               "cma_state": cma_state.encode(self.es), "cma_pending": torch.from_numpy(self.pending.copy()),
               "cma_version": _cma_modules()[0].__version__}
        if self.last is not None:
            out["last_population"], out["last_fitness"] = self.last
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by `state_dict`: this searcher's pycma object, made from the config,
        filled with the checkpoint's data (`metarl.evolve.cma_state.decode`); a `ModelFileError` for anything
        that does not fit it, before any of it is used."""
        if "cma_state" not in state and "cma" in state:
            raise ModelFileError("written by an earlier metarl: its cma state is a pickle, which this version does not "
                                 "read (a pickle can run code); finish the run with the metarl that started it, or "
                                 "start a new run")
        pending = state.get("cma_pending")
        if not isinstance(state.get("cma_state"), dict) or not isinstance(pending, torch.Tensor):
            raise ModelFileError("corrupt checkpoint (a search.name: cma run's checkpoint needs its 'cma_state' "
                                 "and 'cma_pending')")
        version, written = _cma_modules()[0].__version__, state.get("cma_version")
        if written != version:  # pycma's object is filled attribute by attribute: the same pycma's
            from ..config.schema import _show

            raise ModelFileError(f"written with pycma {_show(written)}, this is pycma {version}: resume with the "
                                 f"pycma that started the run")
        if pending.dtype != torch.float64 or tuple(pending.shape) != tuple(self.pending.shape) \
                or not bool(torch.isfinite(pending).all()):
            raise ModelFileError(f"corrupt checkpoint (its cma_pending must be the samples asked: finite float64 "
                                 f"{tuple(self.pending.shape)}, got {pending.dtype} {tuple(pending.shape)})")
        pending_np = pending.numpy().copy()
        if not torch.equal(torch.from_numpy(pending_np).to(torch.float32), state["population"]):
            raise ModelFileError("corrupt checkpoint (its population is not its cma_pending samples)")
        last, fitness = state.get("last_population"), state.get("last_fitness")
        if last is not None or fitness is not None:
            if not (isinstance(last, torch.Tensor) and last.dtype == torch.float32 and last.shape == pending.shape
                    and isinstance(fitness, torch.Tensor) and fitness.dtype == torch.float64
                    and fitness.shape == (pending.shape[0],) and bool(torch.isfinite(last).all())):
                raise ModelFileError("corrupt checkpoint (its last_population and last_fitness must be the last "
                                     "generation told: float32 (P, G) and float64 (P,))")
        es = cma_state.decode(state["cma_state"], self.es)  # made from the config in __init__, asked once
        _check_strategy(es, self.size)
        self.last = None if last is None or fitness is None else (last, fitness)
        self.es, self.pending = es, pending_np
        self.population = torch.from_numpy(pending_np).to(torch.float32)
        self.generator.set_state(state["ga_generator"])


def _check_strategy(es: Any, size: int) -> None:
    """What pycma asserts, or would compute nonsense from, checked on a state read from a file: a finite mean of
    the genome's size, a positive step size and positive scales (`cma_state.decode` refused NaN, infinite
    arrays and arrays of other shapes than the config's)."""
    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"corrupt checkpoint (its cma state: {why})")

    mean = getattr(es, "mean", None)
    if not isinstance(mean, np.ndarray) or mean.shape != (size,):
        raise bad(f"its mean must be a ({size},) array")
    sigma = getattr(es, "sigma", None)
    if not isinstance(sigma, (int, float, np.number)) or not 0 < float(sigma) < math.inf:
        raise bad(f"sigma must be a positive finite number, got {str(sigma)[:40]}")
    for name, value in (("sigma_vec.scaling", getattr(es.sigma_vec, "scaling", None)),
                        ("sm.D", getattr(es.sm, "D", None)), ("dC", getattr(es, "dC", None))):
        if isinstance(value, np.ndarray) and (value.shape not in ((), (1,), (size,)) or not bool((value > 0).all())):
            raise bad(f"{name} must be positive, of shape (), (1,) or ({size},)")
    if not isinstance(es.countiter, int) or es.countiter < 0:
        raise bad("countiter must be a count")
