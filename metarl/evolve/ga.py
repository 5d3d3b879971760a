"""Truncation-selection genetic algorithm on flat genomes (SPEC, "Genetic algorithm").

Each generation: rank by fitness (non-finite ranks last), keep the best
``num_survivors`` unchanged (elitism), fill the rest with round-robin copies of the
survivors where each gene mutates with probability ``mutation_probability`` by
``Normal(0, mutation_strength^2)``. Pure functions with an explicit generator.
"""

from __future__ import annotations

import torch


def rank(fitness: torch.Tensor) -> torch.Tensor:
    """Indices of ``fitness (P,)`` from best to worst; NaN and ±inf rank last, ties keep index order."""
    key = torch.where(torch.isfinite(fitness), fitness, torch.full_like(fitness, -torch.inf))
    return torch.sort(key, descending=True, stable=True).indices


def mutate(genomes: torch.Tensor, *, probability: float, strength: float, generator: torch.Generator
           ) -> torch.Tensor:
    """Copy of ``genomes (N, G)`` with each gene perturbed with ``probability`` by ``Normal(0, strength^2)``."""
    shape = genomes.shape
    mask = torch.rand(shape, generator=generator, device=generator.device) < probability
    noise = torch.randn(shape, generator=generator, device=generator.device) * strength
    return genomes + (noise * mask).to(device=genomes.device, dtype=genomes.dtype)


def next_generation(population: torch.Tensor, fitness: torch.Tensor, *, num_survivors: int,
                    mutation_probability: float, mutation_strength: float, generator: torch.Generator
                    ) -> torch.Tensor:
    """The next population ``(P, G)``: the elites first (unmutated), then mutated copies."""
    pop = population.shape[0]
    if fitness.shape != (pop,):
        raise ValueError(f"fitness must have shape ({pop},), got {tuple(fitness.shape)}")
    if not 1 <= num_survivors <= pop:
        raise ValueError(f"num_survivors must be in [1, {pop}], got {num_survivors}")
    order = rank(fitness.to(population.device))
    elites = population[order[:num_survivors]]
    parents = elites[torch.arange(pop - num_survivors, device=population.device) % num_survivors]
    children = mutate(parents, probability=mutation_probability, strength=mutation_strength,
                      generator=generator)
    return torch.cat((elites, children), dim=0)
