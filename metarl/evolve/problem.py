"""What a searcher optimises: the population's lifetime evaluation as a `Problem`.

A `Problem` maps genomes to fitness: ``evaluate(genomes (P, G), seed=, generation=) -> (P,)``,
float64 on the CPU, higher is better, NaN or infinite for an individual whose lifetime failed.
An individual's fitness depends only on its genome, the seed, the generation and its index in the
population (`metarl.core.rng`), never on how the work is split, so a searcher sees the same numbers
from `LifetimeProblem` in one process and from the sharded problem of `metarl.evolve.distributed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from ..backends.lifetime import ProgressFn, evaluate
from ..config import Config
from ..core.genome import layout_of

# (genomes (P, G), generation, progress) -> fitness (P,): a plain fitness function, e.g. for tests
FitnessFn = Callable[[torch.Tensor, int, ProgressFn | None], torch.Tensor]


class Problem(Protocol):
    """Fitness of a population of genomes."""

    def evaluate(self, genomes: torch.Tensor, *, seed: int, generation: int,
                 progress: ProgressFn | None = None) -> torch.Tensor:
        """Fitness ``(P,)`` float64 on the CPU of ``genomes (P, G)`` in generation ``generation`` of the run
        seeded ``seed``; ``progress`` is called with the number of individual-steps done since its last call."""
        ...


class LifetimeProblem:
    """Each genome's rule trains fresh actors for ``config.ga.evals_per_individual`` lifetimes
    (`metarl.backends.lifetime.evaluate`), in this process on ``device``."""

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.layout = layout_of(config)

    def evaluate(self, genomes: torch.Tensor, *, seed: int, generation: int,
                 progress: ProgressFn | None = None) -> torch.Tensor:
        """Mean summed reward ``(P,)`` of each genome's lifetimes."""
        return evaluate(genomes.to(self.device), self.layout, self.config, seed=seed, generation=generation,
                        progress=progress).cpu()


class FunctionProblem:
    """A plain function ``(genomes, generation, progress) -> fitness`` as a `Problem` (the seed is the
    function's own business): a toy objective, or fixed fitness values in a test."""

    def __init__(self, fn: FitnessFn) -> None:
        self.fn = fn

    def evaluate(self, genomes: torch.Tensor, *, seed: int, generation: int,
                 progress: ProgressFn | None = None) -> torch.Tensor:
        """``fn(genomes, generation, progress)``."""
        return self.fn(genomes, generation, progress)


def as_problem(problem: Problem | FitnessFn) -> Problem:
    """``problem`` itself, or a plain fitness function wrapped as a `FunctionProblem`."""
    if hasattr(problem, "evaluate"):
        return problem  # type: ignore[return-value]
    return FunctionProblem(problem)  # type: ignore[arg-type]
