"""Lifetimes made of several episodes (``env.episode_steps``): the env is reset, the actor and
the rule keep what they learned; and the `near_up` start."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import assert_backends_agree, assert_close, genomes, small_config

from metarl import envs
from metarl.analysis import evaluation
from metarl.analysis.controllers import run_reference
from metarl.backends import lifetime
from metarl.config import EnvConfig, from_dict
from metarl.core import rng
from metarl.core.genome import GenomeLayout
from metarl.core.step import reset_episode
from metarl.envs.base import NEAR_UP_ANGLE, NEAR_UP_SPEED, wrap_angle
from metarl.errors import ConfigError


def _config(env: str = "Pendulum", steps: int = 45, **options):
    config = small_config(env, hidden=[6, 4], steps=steps)
    return config.replace(env=dataclasses.replace(EnvConfig(name=env), **options))


@pytest.mark.parametrize("native", [True, False])
def test_a_fixed_actor_repeats_its_episode_exactly(native: bool) -> None:
    # No plasticity and no noise (sigma_init 0): every episode from rest is the same episode.
    config = _config(init="down", episode_steps=15)
    config = config.replace(actor=dataclasses.replace(config.actor, sigma_init=0.0),
                            runtime=dataclasses.replace(config.runtime, native=native, compile=False))
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 5), rng.individual_keys(1, 0, 0, torch.arange(5))
    _, trace = lifetime.run_lifetimes(g, layout, config, keys, trace=True,
                                      conditions=lifetime.Conditions(plastic=False))
    first = trace[:, :15]
    assert first.abs().max() > 1e-3  # the actor does move the pendulum
    assert torch.equal(trace[:, 15:30], first) and torch.equal(trace[:, 30:45], first)


@pytest.mark.parametrize("env,init", [("Pendulum", "near_up"), ("DoublePendulum", "random"), ("Pendulum", "down")])
@pytest.mark.slow
def test_every_step_path_resets_alike(env: str, init: str) -> None:
    # 45 steps in episodes of 13: boundaries inside the 100-step progress chunks, a last partial episode.
    config = _config(env, init=init, episode_steps=13, goal_switch=20)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 20), rng.individual_keys(3, 0, 0, torch.arange(20))
    want, want_trace, _ = assert_backends_agree(config, g, keys, chunk_size=7)
    single = lifetime.run_lifetimes(g, layout, config.replace(env=dataclasses.replace(config.env, episode_steps=None)),
                                    keys, backend="spec")[0]
    assert (want - single).abs().max() > 1e-3  # the resets change the lifetime
    # Step by step (the replay's path) resets at the same steps.
    life = lifetime.Lifetime(g, layout, config, keys, backend="spec")
    assert_close(torch.stack([life.step() for _ in range(45)], dim=1), want_trace, 1e-6)


def test_random_starts_are_drawn_again_for_every_episode() -> None:
    config = _config(init="near_up", episode_steps=10)
    keys = rng.individual_keys(0, 0, 0, torch.arange(64))
    env = lifetime.make_env(config, keys, dtype=torch.float64)
    starts = [env.state.clone()]
    assert not reset_episode(env, keys, 9) and torch.equal(env.state, starts[0])
    for t in (10, 20):
        assert reset_episode(env, keys, t) and env.prev_height is None and env.t == t
        starts.append(env.state.clone())
    for s in starts:
        assert (wrap_angle(s[:, 0] - math.pi).abs() <= NEAR_UP_ANGLE + 1e-9).all()
        assert (s[:, 1].abs() <= NEAR_UP_SPEED + 1e-9).all()
    assert not torch.equal(starts[1], starts[0]) and not torch.equal(starts[2], starts[1])
    again = lifetime.make_env(config, keys, dtype=torch.float64)
    reset_episode(again, keys, 20)
    assert torch.equal(again.state, starts[2])  # drawn from the keys: reproducible, any order


@pytest.mark.slow
def test_reference_controller_is_reset_with_the_lifetime() -> None:
    cfg = from_dict({"env": {"init": "down", "episode_steps": 300}})
    keys = evaluation.evaluation_keys(0, 16)
    total, _, states = run_reference(lifetime.make_env(cfg, keys), 600, keys)
    h = evaluation.heights(states)
    assert (h[:, 299] > evaluation.BALANCED_HEIGHT).all()  # balanced at the end of episode 1
    assert (h[:, 300] < 0.05).all()  # back at rest after the reset
    assert (h[:, -1] > evaluation.BALANCED_HEIGHT).all()  # and up again by the end of episode 2
    one, _, _ = run_reference(lifetime.make_env(cfg.replace(env=dataclasses.replace(cfg.env, episode_steps=None)),
                                                keys), 300, keys)
    assert_close(total, 2 * one, 1e-3)  # two identical episodes
    near = from_dict({"env": {"init": "near_up", "episode_steps": 100}})
    with pytest.raises(ValueError, match="keys"):
        run_reference(lifetime.make_env(near, keys), 200)
    total, _, states = run_reference(lifetime.make_env(near, keys), 300, keys)
    assert (evaluation.heights(states) > evaluation.BALANCED_HEIGHT).all()  # caught at once in every episode


def test_episode_steps_is_validated() -> None:
    for bad in (0, -3, 1.5, "ten"):
        with pytest.raises(ConfigError, match="env.episode_steps"):
            from_dict({"env": {"episode_steps": bad}}).validate()
    assert from_dict({"env": {"episode_steps": 1}}).env.episode_steps == 1
    with pytest.raises(ValueError, match="episode_steps"):
        envs.base.EnvOptions(episode_steps=0)


@pytest.mark.slow
def test_evaluation_reports_the_score_of_every_episode() -> None:
    config = _config(init="down", steps=25, episode_steps=10)
    layout = GenomeLayout(1, 8)
    result = evaluation.evaluate_rule(genomes(layout, 1)[0], layout, config, episodes=4, seed=0)
    for name in evaluation.ALL_CONDITIONS:
        per = result.per_episode[name]
        assert per.shape == (4, 3)  # 10 + 10 + 5 steps
        assert_close(per.sum(dim=1), result.fitness[name], 1e-9)
    assert len(result.to_dict()["conditions"]["learned"]["per_episode"]) == 3
    assert "score per episode" in evaluation.format_table(result)
    single = evaluation.evaluate_rule(genomes(layout, 1)[0], layout, _config(init="down", steps=25), episodes=2, seed=0)
    assert single.per_episode == {} and "per_episode" not in single.to_dict()["conditions"]["learned"]
