"""Env options beyond SPEC: the motor direction."""

from __future__ import annotations

import pytest
import torch

from metarl import envs
from metarl.config import from_dict
from metarl.errors import ConfigError


def test_reversed_motor_mirrors_the_motion():
    plus = envs.make("Pendulum", 1, init="down", dtype=torch.float64)
    minus = envs.make("Pendulum", 1, init="down", dtype=torch.float64, action_sign=-1)
    for _ in range(20):
        plus.step(torch.ones(1))
        minus.step(torch.ones(1))
    assert plus.state[0, 0] > 0
    assert torch.allclose(minus.state, -plus.state)


def test_random_sign_draws_both_directions_reproducibly():
    gen = torch.Generator().manual_seed(3)
    env = envs.make("DoublePendulum", 200, action_sign="random", generator=gen)
    again = envs.make("DoublePendulum", 200, action_sign="random", generator=torch.Generator().manual_seed(3))
    assert set(env.action_sign.tolist()) == {-1.0, 1.0}
    assert 60 < (env.action_sign > 0).sum() < 140
    assert torch.equal(env.action_sign, again.action_sign)


def test_bad_action_sign_is_rejected():
    with pytest.raises(ConfigError, match="env.action_sign"):
        from_dict({"env": {"action_sign": 2}})
    assert from_dict({"env": {"action_sign": "random"}}).env.action_sign == "random"


def test_antithetic_pairs_average_both_motor_directions():
    import torch

    from metarl.backends.lifetime import antithetic_configs, evaluate, run_lifetimes
    from metarl.core.genome import GenomeLayout
    from metarl.core.rng import individual_keys

    cfg = from_dict({"env": {"init": "down"}, "ga": {"population_size": 6, "num_survivors": 2, "lifetime_steps": 40,
                                                     "evals_per_individual": 2, "antithetic": True}})
    layout = GenomeLayout()
    genomes = layout.random(6, 0.5, torch.Generator().manual_seed(0))
    keys = individual_keys(5, 3, 0, torch.arange(6))
    plus, _ = run_lifetimes(genomes, layout, cfg, keys)
    minus, _ = run_lifetimes(genomes, layout, antithetic_configs(cfg)[1], keys)
    assert antithetic_configs(cfg)[1].env.action_sign == -1
    assert not torch.equal(plus, minus)
    assert torch.allclose(evaluate(genomes, layout, cfg, seed=5, generation=3), (plus + minus) / 2)
    with pytest.raises(ConfigError, match="ga.antithetic"):
        from_dict({"ga": {"antithetic": True, "evals_per_individual": 3}})
    with pytest.raises(ConfigError, match="ga.antithetic"):
        from_dict({"env": {"action_sign": "random"}, "ga": {"antithetic": True, "evals_per_individual": 2}})
