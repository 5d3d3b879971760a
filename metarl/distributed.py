"""Sharding the population evaluation over processes (torchrun). Single-process fallback."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config, resolve_device
from .training import Evaluator, local_evaluator


@dataclass
class Context:
    """Where this process stands: device, rank and world size."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 prints and writes files."""
        return self.rank == 0

    def evaluator(self, config: Config) -> Evaluator:
        """Fitness of the whole population."""
        return local_evaluator(config, self.device)

    def close(self) -> None:
        """Tear down the process group, if any."""


def setup(config: Config) -> Context:
    """Single-process context (distributed launch is added by the distributed issue)."""
    return Context(resolve_device(config.device))
