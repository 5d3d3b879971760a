"""Lifetimes: a freshly initialised actor learns with a rule in its environment.

The fitness of an individual is the reward summed over ``lifetime_steps`` steps. Every
random draw comes from the individual's key (`metarl.rng`), so the result for an
individual does not depend on which other individuals share its batch, chunk or process.
On CPU the population runs in cache-sized chunks, each through its whole lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import actor as actor_mod
from . import envs, rng
from .config import Config
from .genome import GenomeLayout
from .reference import reference_rule_step
from .rule import initial_rule_state, rule_params, rule_step

NOISE_BLOCK = 64  # steps of sampling noise drawn at once
DEFAULT_CPU_CHUNK = 1024


@dataclass(frozen=True)
class Conditions:
    """Ablations of a lifetime (used to measure whether a rule really learns)."""

    plastic: bool = True  # False: the rule is never applied; the initial actor acts unchanged
    zero_reward: bool = False  # True: the rule always sees reward 0


class Lifetime:
    """One lifetime of a batch of individuals, advanced step by step.

    ``genomes (P, G)``, ``keys (P,)`` int64 (see `metarl.rng.individual_keys`).
    """

    def __init__(self, genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                 conditions: Conditions = Conditions(), reference: bool = False,
                 sizes: list[int] | None = None) -> None:
        layout.check(genomes)
        if keys.shape != (genomes.shape[0],):
            raise ValueError(f"keys must have shape ({genomes.shape[0]},), got {tuple(keys.shape)}")
        self.config = config
        self.layout = layout
        self.genomes = genomes
        self.keys = keys
        self.conditions = conditions
        self.reference = reference
        self.sizes = list(sizes) if sizes is not None else config.layer_sizes
        device, dtype, pop = genomes.device, genomes.dtype, genomes.shape[0]
        offset = [0]

        def sampler(count: int) -> torch.Tensor:
            u = rng.uniform(keys, rng.STREAM_ENV_PARAMS, count, offset=offset[0], dtype=dtype)
            offset[0] += count
            return u

        self.env = envs.make(config.env.name, pop, device=device, dtype=dtype, sampler=sampler,
                             **config.env.make_kwargs())
        a = config.actor
        self.actor = actor_mod.initial_actor(self.sizes, keys, weight_init=a.weight_init,
                                             weight_limit=a.weight_limit, sigma_init=a.sigma_init, dtype=dtype)
        self.rule_state = initial_rule_state(self.sizes, pop, layout.state_dim, device=device, dtype=dtype)
        self.params = None if reference else rule_params(genomes, layout)
        self.neurons = actor_mod.neuron_count(self.sizes)
        self.t = 0
        self.obs = self.env.observe()
        self._noise: torch.Tensor | None = None

    def _noise_at(self, t: int) -> torch.Tensor:
        """Standard-normal sampling noise ``(P, neurons)`` of step ``t``."""
        if self.config.actor.sigma_limit == 0:
            return torch.zeros(self.keys.shape[0], self.neurons, dtype=self.genomes.dtype,
                               device=self.genomes.device)
        if self._noise is None or t % NOISE_BLOCK == 0:
            start = t - t % NOISE_BLOCK
            self._noise = rng.normal(self.keys, rng.STREAM_NOISE, NOISE_BLOCK * self.neurons,
                                     offset=start * self.neurons, dtype=self.genomes.dtype
                                     ).reshape(-1, NOISE_BLOCK, self.neurons)
        return self._noise[:, t % NOISE_BLOCK]

    def step(self) -> torch.Tensor:
        """Act, step the env, apply the rule; returns the reward ``(P,)``."""
        a = self.config.actor
        x = self.obs
        self.actor = actor_mod.forward(self.actor, x, self._noise_at(self.t))
        self.obs, reward = self.env.step(self.actor.outputs[-1][:, 0])
        if self.conditions.plastic:
            seen = torch.zeros_like(reward) if self.conditions.zero_reward else reward
            kw = {"learning_rate": a.learning_rate, "weight_limit": a.weight_limit, "sigma_limit": a.sigma_limit}
            if self.reference:
                self.rule_state, self.actor = reference_rule_step(self.genomes, self.layout, self.rule_state,
                                                                  self.actor, x, seen, **kw)
            else:
                self.rule_state, self.actor = rule_step(self.params, self.rule_state, self.actor, x, seen, **kw)
        self.t += 1
        return reward


ProgressFn = Callable[[int], None]


def run_lifetimes(genomes: torch.Tensor, layout: GenomeLayout, config: Config, keys: torch.Tensor, *,
                  steps: int | None = None, chunk_size: int | None = None, trace: bool = False,
                  conditions: Conditions = Conditions(), reference: bool = False,
                  sizes: list[int] | None = None, progress: ProgressFn | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed reward ``(P,)`` of one lifetime per individual, and optionally the per-step rewards ``(P, T)``.

    ``progress(n)`` is called with individual-steps done, about every 100 steps.
    """
    steps = config.ga.lifetime_steps if steps is None else steps
    pop = genomes.shape[0]
    if chunk_size is None:
        chunk_size = config.runtime.chunk_size
    if chunk_size is None:
        chunk_size = pop if genomes.device.type != "cpu" else DEFAULT_CPU_CHUNK
    fitness = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    rewards = torch.zeros(pop, steps, dtype=genomes.dtype, device=genomes.device) if trace else None
    with torch.no_grad():
        for start in range(0, pop, chunk_size):
            sl = slice(start, min(start + chunk_size, pop))
            life = Lifetime(genomes[sl], layout, config, keys[sl], conditions=conditions,
                            reference=reference, sizes=sizes)
            total = torch.zeros(sl.stop - sl.start, dtype=torch.float64, device=genomes.device)
            for t in range(steps):
                r = life.step()
                total += r
                if rewards is not None:
                    rewards[sl, t] = r
                if progress is not None and (t + 1) % 100 == 0:
                    progress(100 * (sl.stop - sl.start))
            if progress is not None and steps % 100:
                progress((steps % 100) * (sl.stop - sl.start))
            fitness[sl] = total
    return fitness, rewards


def evaluate(genomes: torch.Tensor, layout: GenomeLayout, config: Config, *, seed: int, generation: int,
             indices: torch.Tensor | None = None, progress: ProgressFn | None = None) -> torch.Tensor:
    """Fitness ``(P,)`` (float64): summed reward averaged over ``evals_per_individual`` lifetimes.

    ``indices`` are the individuals' positions in the whole population (default
    ``0..P-1``); with common random numbers every individual gets the same draws.
    """
    pop = genomes.shape[0]
    if indices is None:
        indices = torch.arange(pop)
    indices = indices.to(device=genomes.device, dtype=torch.int64)
    if config.ga.common_random_numbers:
        indices = torch.zeros_like(indices)
    total = torch.zeros(pop, dtype=torch.float64, device=genomes.device)
    for e in range(config.ga.evals_per_individual):
        keys = rng.individual_keys(seed, generation, e, indices)
        fitness, _ = run_lifetimes(genomes, layout, config, keys, progress=progress)
        total += fitness
    return total / config.ga.evals_per_individual
