"""Options for testing a rule beyond its training conditions: sensor noise (env.obs_noise), a time step drawn per
individual (env.dt: [min, max]) and a learning rate per second (actor.learning_rate_dt), on every backend and for
the reference controller."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import assert_backends_agree, genomes, small_config

from metarl import envs
from metarl.analysis.controllers import ReferenceController, observed_state, run_reference
from metarl.backends import lifetime
from metarl.config import from_dict
from metarl.core import rng, step
from metarl.core.genome import GenomeLayout
from metarl.errors import ConfigError


def configured(env: str = "Pendulum", *, learning_rate_dt: bool = False, pop: int = 19, steps: int = 40,
               **options: object):
    c = small_config(env, pop=pop, steps=steps)
    return c.replace(env=dataclasses.replace(c.env, **options),
                     actor=dataclasses.replace(c.actor, learning_rate_dt=learning_rate_dt))


@pytest.mark.parametrize("env, options", [
    ("Pendulum", {"obs_noise": 0.05, "dt": [0.03, 0.06], "init": "down"}),
    ("DoublePendulum", {"obs_noise": 0.1}),
])
@pytest.mark.slow
def test_every_backend_gives_the_spec_with_sensor_noise_and_a_drawn_dt(env: str, options: dict) -> None:
    config = configured(env, learning_rate_dt=True, **options)
    keys = rng.individual_keys(3, 0, 0, torch.arange(19))
    assert_backends_agree(config, genomes(GenomeLayout(), 19), keys)


def test_sensor_noise_is_gaussian_per_individual_and_leaves_the_physics_alone() -> None:
    env = envs.make("Pendulum", 4000, init="random", obs_noise=0.03, generator=torch.Generator().manual_seed(0))
    keys = rng.stream_keys(rng.individual_keys(1, 0, 0, torch.arange(4000)), rng.STREAM_OBS_NOISE)
    t = torch.tensor(7)
    noise = step.observe(env, env.state, t, keys) - env.observation(env.state)
    assert abs(float(noise.mean())) < 2e-3 and abs(float(noise.std()) - 0.03) < 1e-3
    # Each individual's noise is its own: the same in a batch of 3 as in the batch of 4000.
    few = envs.make("Pendulum", 3, init="random", obs_noise=0.03, generator=torch.Generator().manual_seed(0))
    few.state = env.state[:3]
    assert torch.equal(step.observe(few, few.state, t, keys[:3]) - few.observation(few.state), noise[:3])
    assert not torch.equal(step.observe(env, env.state, t + 1, keys), noise + env.observation(env.state))
    with pytest.raises(ValueError, match="obs_noise"):
        step.observe(env, env.state, t, None)


def test_sensor_noise_changes_what_the_rule_learns_not_its_draws() -> None:
    quiet, noisy = configured(init="down"), configured(init="down", obs_noise=0.05)
    g, keys = genomes(GenomeLayout(), 5), rng.individual_keys(4, 0, 0, torch.arange(5))
    layout = GenomeLayout()
    a = lifetime.Lifetime(g, layout, quiet, keys)
    b = lifetime.Lifetime(g, layout, noisy, keys)
    assert torch.equal(a.env.state, b.env.state) and all(
        torch.equal(x, y) for x, y in zip(a.actor.weights, b.actor.weights, strict=True))
    ra, rb = torch.stack([a.step() for _ in range(30)]), torch.stack([b.step() for _ in range(30)])
    assert not torch.equal(ra, rb)


def test_a_dt_range_is_drawn_per_individual_after_every_other_draw() -> None:
    kw = {"init": "random", "action_sign": "random", "length": [0.5, 2.0]}
    fixed = envs.make("Pendulum", 500, generator=torch.Generator().manual_seed(5), **kw)
    drawn = envs.make("Pendulum", 500, dt=[0.02, 0.08], generator=torch.Generator().manual_seed(5), **kw)
    assert isinstance(fixed.dt, float) and drawn.dt.shape == (500,)
    assert 0.02 <= float(drawn.dt.min()) < 0.03 and 0.07 < float(drawn.dt.max()) <= 0.08
    for name in ("state", "action_sign"):
        assert torch.equal(getattr(fixed, name), getattr(drawn, name))
    assert torch.equal(fixed.params["length"], drawn.params["length"])
    # Individual i steps exactly as an env whose scalar dt is its draw.
    one = envs.make("Pendulum", 1, dt=float(drawn.dt[3]), init="random", dtype=torch.float32)
    one.state = drawn.state[3:4]
    one.params = {k: v[3:4] for k, v in drawn.params.items()}
    one.action_sign = drawn.action_sign[3:4]
    action = torch.full((500,), 0.7)
    drawn.step(action)
    one.step(action[:1])
    assert torch.allclose(one.state[0], drawn.state[3], atol=1e-6, rtol=1e-6)


def test_learning_rate_per_second_scales_with_dt() -> None:
    config = configured(init="down", dt=0.025, learning_rate_dt=True)
    config = config.replace(actor=dataclasses.replace(config.actor, learning_rate=0.02))
    env = step.make_env(config, rng.individual_keys(0, 0, 0, torch.arange(3)))
    assert step.learning_rates(config, env) == pytest.approx(0.01)
    per_step = config.replace(actor=dataclasses.replace(config.actor, learning_rate=0.01, learning_rate_dt=False))
    g, keys, layout = genomes(GenomeLayout(), 4), rng.individual_keys(6, 0, 0, torch.arange(4)), GenomeLayout()
    assert torch.equal(lifetime.run_lifetimes(g, layout, config, keys, backend="spec")[0],
                       lifetime.run_lifetimes(g, layout, per_step, keys, backend="spec")[0])
    ranged = configured(init="down", dt=[0.025, 0.1], learning_rate_dt=True)
    env = step.make_env(ranged, keys)
    assert torch.equal(step.learning_rates(ranged, env), ranged.actor.learning_rate * env.dt / 0.05)


def test_the_controller_sees_the_noisy_observation_of_the_lifetimes() -> None:
    config = configured(init="down", obs_noise=0.05, max_torque=2.0)
    keys = rng.individual_keys(9, 0, 0, torch.arange(6))
    env, copy = step.make_env(config, keys), step.make_env(config, keys)
    total, rewards, states = run_reference(env, 30, keys)
    controller, obs_keys = ReferenceController(copy), rng.stream_keys(keys, rng.STREAM_OBS_NOISE)
    for t in range(30):  # the same loop by hand: the actions follow the observation, noise included
        seen = observed_state(copy, step.observe(copy, copy.state, t, obs_keys))
        copy.step(controller.action(seen, t))
        assert torch.equal(copy.state, states[:, t])
    quiet = step.make_env(configured(init="down", max_torque=2.0), keys)
    assert not torch.equal(run_reference(quiet, 30, keys)[2], states)  # (rewards: a mirrored swing scores the same)
    with pytest.raises(ValueError, match="obs_noise"):
        run_reference(step.make_env(config, keys), 5)


@pytest.mark.parametrize("data, key", [({"env": {"dt": [0.05, 0.01]}}, "env.dt"), ({"env": {"dt": [0.05]}}, "env.dt"),
                                       ({"env": {"dt": [0, 0.05]}}, "env.dt"), ({"env": {"obs_noise": -0.1}},
                                                                                 "env.obs_noise"),
                                       ({"actor": {"learning_rate_dt": "yes"}}, "actor.learning_rate_dt")])
def test_bad_values_name_the_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(data)


def test_a_dt_range_loads_and_round_trips() -> None:
    config = from_dict({"env": {"dt": [0.025, 0.05], "obs_noise": 0.01}, "actor": {"learning_rate_dt": True}})
    assert config.env.dt == [0.025, 0.05] and config.env.mean_dt == pytest.approx(0.0375)
    assert from_dict(config.to_dict()) == config
