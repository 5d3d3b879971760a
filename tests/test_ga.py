"""GA invariants: elites kept unmutated, best never lost, size constant, mutation rate."""

from __future__ import annotations

import torch

from metarl.evolve import ga


def _step(pop, fit, seed=0, **kw):
    args = {"num_survivors": 3, "mutation_probability": 0.1, "mutation_strength": 0.5} | kw
    return ga.next_generation(pop, fit, generator=torch.Generator().manual_seed(seed), **args)


def test_elites_first_and_unmutated():
    pop = torch.randn(10, 6, generator=torch.Generator().manual_seed(1))
    fit = torch.tensor([3.0, 9.0, 1.0, 7.0, 5.0, 0.0, 2.0, 8.0, 4.0, 6.0], dtype=torch.float64)
    new = _step(pop, fit)
    assert new.shape == pop.shape
    assert torch.equal(new[:3], pop[[1, 7, 3]])


def test_children_are_round_robin_copies_of_survivors():
    pop = torch.arange(5.0).repeat_interleave(4).reshape(5, 4)
    fit = torch.tensor([0.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    new = _step(pop, fit, num_survivors=2, mutation_probability=0.0)
    assert torch.equal(new[:, 0], torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0]))


def test_nonfinite_fitness_ranks_last_and_best_never_lost():
    pop = torch.randn(6, 4)
    fit = torch.tensor([float("nan"), 1.0, float("inf"), -2.0, float("-inf"), 0.5], dtype=torch.float64)
    assert ga.rank(fit)[:3].tolist() == [1, 5, 3]
    new = _step(pop, fit, num_survivors=1)
    assert torch.equal(new[0], pop[1])


def test_mutation_rate_matches_probability():
    pop = torch.zeros(2000, 520)
    new = ga.mutate(pop, probability=0.01, strength=0.1, generator=torch.Generator().manual_seed(0))
    rate = (new != 0).float().mean().item()
    assert abs(rate - 0.01) < 0.0015
    changed = new[new != 0]
    assert abs(changed.std().item() - 0.1) < 0.01


def test_same_generator_same_result():
    pop = torch.randn(20, 8)
    fit = torch.randn(20, dtype=torch.float64)
    assert torch.equal(_step(pop, fit, seed=5), _step(pop, fit, seed=5))
    assert not torch.equal(_step(pop, fit, seed=5), _step(pop, fit, seed=6))
