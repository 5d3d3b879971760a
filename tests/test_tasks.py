"""Tasks where only the reward tells the actor what is wanted: hidden goals, spin, reversal,
the rule seeing another lifetime's reward, and the classic reference controller."""

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
from metarl.errors import ConfigError


def test_goal_sign_multiplies_the_reward_and_is_hidden_from_the_observation() -> None:
    plus = envs.make("Pendulum", 3, init="random", dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    minus = envs.make("Pendulum", 3, init="random", dtype=torch.float64, goal=-1,
                      generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        obs_p, r_p = plus.step(torch.full((3,), 0.3, dtype=torch.float64))
        obs_m, r_m = minus.step(torch.full((3,), 0.3, dtype=torch.float64))
        assert torch.equal(obs_p, obs_m) and torch.equal(r_m, -r_p)
        assert (r_p >= 0).all()


def test_gym_reward_is_gymnasiums_pendulum_cost() -> None:
    env = envs.make("Pendulum", 3, init="random", reward="gym", max_torque=2.0, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(2))
    action = torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64)
    theta, omega = env.state[:, 0].clone(), env.state[:, 1].clone()  # Gymnasium scores the state before the step
    _, reward = env.step(action)
    from_up = torch.atan2(torch.sin(theta - math.pi), torch.cos(theta - math.pi))
    torque = action.clamp(-1, 1) * 2.0
    assert torch.allclose(reward, -(from_up ** 2 + 0.1 * omega ** 2 + 0.001 * torque ** 2), atol=1e-12)
    rest = envs.make("Pendulum", 1, init="down", reward="gym", dtype=torch.float64)
    assert abs(float(rest.step(torch.zeros(1, dtype=torch.float64))[1]) + math.pi ** 2) < 1e-9  # hanging: -pi^2
    up = envs.make("Pendulum", 1, init="up", reward="gym", dtype=torch.float64)
    assert -1e-6 < float(up.step(torch.zeros(1, dtype=torch.float64))[1]) <= 0  # upright: ~0


def test_spin_reward_is_the_signed_angular_speed() -> None:
    env = envs.make("Pendulum", 2, init="down", reward="spin", dtype=torch.float64)
    _, reward = env.step(torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.equal(reward, env.state[:, 1]) and reward[0] > 0 > reward[1]


def test_goal_switch_flips_the_goal_from_that_step_on() -> None:
    env = envs.make("Pendulum", 1, init="down", reward="spin", goal_switch=3, dtype=torch.float64)
    signs = []
    for _ in range(6):
        _, r = env.step(torch.ones(1, dtype=torch.float64))
        signs.append(int(torch.sign(r)))
    assert signs == [1, 1, 1, -1, -1, -1]  # the pendulum turns positively throughout


def test_a_goal_switch_probability_reverses_that_share_of_lifetimes_drawn_last() -> None:
    def make(**options: object) -> envs.BatchedEnv:
        return envs.make("Pendulum", 400, init="random", reward="spin", dt=[0.03, 0.05], goal="random",
                         length=[0.8, 1.2], generator=torch.Generator().manual_seed(4), **options)
    every, mixed = make(goal_switch=2), make(goal_switch=2, goal_switch_probability=0.25)
    # The reversal is drawn after every other draw: the lifetimes are those of a reversal in all of them.
    for name in ("state", "goal", "dt"):
        assert torch.equal(getattr(every, name), getattr(mixed, name))
    assert torch.equal(every.params["length"], mixed.params["length"])
    assert torch.equal(every.goal_after_switch, -every.goal)
    flipped = mixed.goal_after_switch == -mixed.goal
    assert torch.equal(mixed.goal_after_switch[~flipped], mixed.goal[~flipped])
    assert 70 < int(flipped.sum()) < 130  # about a quarter of 400
    action = torch.ones(400)
    for t in range(4):
        _, r_every = every.step(action)
        _, r_mixed = mixed.step(action)
        assert torch.equal(r_mixed, r_every if t < 2 else torch.where(flipped, r_every, -r_every))
    assert torch.equal(make(goal_switch=2, goal_switch_probability=0.0).goal_after_switch, make().goal)
    with pytest.raises(ConfigError, match="env.goal_switch_probability"):
        from_dict({"env": {"goal_switch": 5, "goal_switch_probability": 1.5}})


def test_a_goal_switch_range_draws_each_lifetimes_step_last() -> None:
    def make(**options: object) -> envs.BatchedEnv:
        return envs.make("Pendulum", 600, init="random", reward="spin", goal="random", length=[0.8, 1.2],
                         goal_switch_probability=0.5, generator=torch.Generator().manual_seed(6), **options)
    fixed, ranged = make(goal_switch=2), make(goal_switch=[2, 4])
    for name in ("state", "goal", "switch_sign"):  # drawn after every other draw, the reversal's own included
        assert torch.equal(getattr(fixed, name), getattr(ranged, name))
    steps = ranged.switch_step
    assert isinstance(steps, torch.Tensor) and steps.dtype == torch.int64
    counts = torch.bincount(steps, minlength=5).tolist()
    assert counts[:2] == [0, 0] and all(160 < c < 240 for c in counts[2:])  # uniform over 2, 3, 4
    action = torch.ones(600)
    for t in range(6):
        _, reward = ranged.step(action)
        sign = torch.where(t >= steps, ranged.goal_after_switch, ranged.goal)
        assert torch.equal(reward, ranged.state[:, 1] * sign)
    assert make(goal_switch=[3, 3]).switch_step.tolist() == [3] * 600  # one step: every lifetime's
    for bad in ([5, 4], [1, 2, 3], [-1, 4], [0, 2**24 + 1]):
        with pytest.raises(ConfigError, match="env.goal_switch"):
            from_dict({"env": {"goal_switch": bad}})


def test_random_goal_draws_both_signs_reproducibly() -> None:
    a = envs.make("Pendulum", 300, goal="random", generator=torch.Generator().manual_seed(2))
    b = envs.make("Pendulum", 300, goal="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.goal, b.goal) and set(a.goal.tolist()) == {-1.0, 1.0}
    assert 100 < int((a.goal > 0).sum()) < 200


def test_goal_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="env.goal"):
        from_dict({"env": {"goal": 0}})
    with pytest.raises(ConfigError, match="env.goal_switch"):
        from_dict({"env": {"goal_switch": -1}})
    with pytest.raises(ConfigError, match="ga.antithetic"):
        from_dict({"ga": {"antithetic": "sideways", "evals_per_individual": 2}})
    with pytest.raises(ConfigError, match="ga.antithetic"):
        from_dict({"env": {"goal": "random"}, "ga": {"antithetic": "goal", "evals_per_individual": 2}})
    cfg = from_dict({"env": {"reward": "spin"}, "ga": {"antithetic": "goal", "evals_per_individual": 2}})
    assert cfg.ga.flips == ("goal",) and lifetime.antithetic_configs(cfg)[1].env.goal == -1
    assert lifetime.antithetic_configs(cfg)[1].env.action_sign == 1
    assert from_dict({"ga": {"antithetic": True, "evals_per_individual": 2}}).ga.flips == ("action_sign",)


def test_a_reward_blind_rule_scores_zero_on_antithetic_goal_pairs() -> None:
    # With the reward zeroed, both lifetimes of a pair run identically, so +x and -x cancel exactly.
    cfg = from_dict({"env": {"init": "down", "reward": "spin"},
                     "ga": {"population_size": 6, "num_survivors": 2, "lifetime_steps": 40,
                            "evals_per_individual": 2, "antithetic": "goal"}})
    layout = GenomeLayout()
    g = layout.random(6, 0.5, torch.Generator().manual_seed(0))
    keys = rng.individual_keys(5, 3, 0, torch.arange(6))
    blind = lifetime.Conditions(zero_reward=True)
    plus = lifetime.run_lifetimes(g, layout, cfg, keys, conditions=blind)[0]
    minus = lifetime.run_lifetimes(g, layout, lifetime.antithetic_configs(cfg)[1], keys, conditions=blind)[0]
    assert (plus != 0).all() and torch.equal(plus, -minus)
    assert torch.equal(lifetime.evaluate(g, layout, cfg, seed=5, generation=3),
                       (lifetime.run_lifetimes(g, layout, cfg, keys)[0]
                        + lifetime.run_lifetimes(g, layout, lifetime.antithetic_configs(cfg)[1], keys)[0]) / 2)


def test_antithetic_both_runs_each_goal_with_each_motor_direction_on_the_same_draws() -> None:
    cfg = from_dict({"env": {"init": "down", "reward": "spin"},
                     "ga": {"population_size": 6, "num_survivors": 2, "lifetime_steps": 40,
                            "evals_per_individual": 8, "antithetic": "both"}})
    group = lifetime.antithetic_configs(cfg)
    assert cfg.ga.group == 4
    assert [(c.env.goal, c.env.action_sign) for c in group] == [(1, 1), (-1, 1), (1, -1), (-1, -1)]
    layout = GenomeLayout()
    g = layout.random(6, 0.5, torch.Generator().manual_seed(0))
    runs = [lifetime.run_lifetimes(g, layout, c, rng.individual_keys(5, 3, draw, torch.arange(6)))[0]
            for draw in range(2) for c in group]
    assert len({tuple(r.tolist()) for r in runs}) == 8  # every goal and direction changes the lifetime
    assert torch.allclose(lifetime.evaluate(g, layout, cfg, seed=5, generation=3), sum(runs) / 8)
    # A group of four is the two goal pairs, one per motor direction, on the same draws (so rescoring too).
    goal = [from_dict({**cfg.to_dict(), "env": {**cfg.to_dict()["env"], "action_sign": sign},
                       "ga": {**cfg.to_dict()["ga"], "antithetic": "goal"}}) for sign in (1, -1)]
    both = evaluation.rescore(g[:2], layout, cfg, episodes=3, seed=7)
    pairs = [evaluation.rescore(g[:2], layout, c, episodes=3, seed=7) for c in goal]
    assert torch.allclose(both, (pairs[0] + pairs[1]) / 2, rtol=1e-12, atol=0)
    with pytest.raises(ConfigError, match="ga.antithetic: needs a multiple of 4 as evals_per_individual, got 6"):
        from_dict({"ga": {"antithetic": "both", "evals_per_individual": 6}})
    with pytest.raises(ConfigError, match="env.action_sign"):
        from_dict({"env": {"action_sign": "random"}, "ga": {"antithetic": "both", "evals_per_individual": 4}})


def test_worst_motor_fitness_is_the_lower_motor_direction_s_mean_of_the_same_lifetimes() -> None:
    base = {"env": {"init": "down", "reward": "spin"},
            "ga": {"population_size": 6, "num_survivors": 2, "lifetime_steps": 40, "evals_per_individual": 8,
                   "antithetic": "both"}}
    mean = from_dict(base)
    worst = from_dict({**base, "ga": {**base["ga"], "fitness": "worst_motor"}})
    layout = GenomeLayout()
    g = layout.random(6, 0.5, torch.Generator().manual_seed(0))
    per_motor = [lifetime.evaluate(g, layout, from_dict({**base, "env": {**base["env"], "action_sign": sign},
                                                         "ga": {**base["ga"], "antithetic": "goal",
                                                                "evals_per_individual": 4}}), seed=5, generation=3)
                 for sign in (1, -1)]
    assert not torch.equal(per_motor[0], per_motor[1])
    assert torch.allclose(lifetime.evaluate(g, layout, mean, seed=5, generation=3), (per_motor[0] + per_motor[1]) / 2,
                          rtol=1e-12, atol=0)
    assert torch.equal(lifetime.evaluate(g, layout, worst, seed=5, generation=3), torch.minimum(*per_motor))
    scores = [evaluation.rescore(g[:2], layout, c, episodes=3, seed=7) for c in lifetime.motor_directions(worst)]
    assert torch.equal(evaluation.rescore(g[:2], layout, worst, episodes=3, seed=7), torch.minimum(*scores))
    motor = from_dict({**base, "ga": {**base["ga"], "antithetic": "motor", "fitness": "worst_motor"}})
    assert [(c.env.action_sign, c.ga.antithetic, c.ga.evals_per_individual)
            for c in lifetime.motor_directions(motor)] == [(1, False, 4), (-1, False, 4)]
    with pytest.raises(ConfigError, match="ga.fitness: worst_motor needs both motor directions"):
        from_dict({"ga": {"antithetic": "goal", "evals_per_individual": 2, "fitness": "worst_motor"}})
    with pytest.raises(ConfigError, match="ga.fitness: must be one of mean, worst_motor, got 'best'"):
        from_dict({"ga": {"fitness": "best"}})


TASKS = [
    ("Pendulum", {"reward": "spin", "goal": "random", "init": "down"}),
    # A reversal in half the lifetimes (goal_switch_probability), each with its own goal, dt and switch step.
    ("Pendulum", {"reward": "height", "goal": "random", "goal_switch": [6, 20], "goal_switch_probability": 0.5,
                  "init": "random", "dt": [0.03, 0.05]}),
    ("DoublePendulum", {"reward": "spin", "goal": "random", "goal_switch": 5}),
    ("Pendulum", {"reward": "gym", "init": "random", "max_torque": 2.0}),
    ("DoublePendulum", {"reward": "gym", "init": "random", "action_sign": -1}),
]


@pytest.mark.parametrize("env,options", TASKS)
@pytest.mark.slow
def test_every_step_path_runs_the_tasks_alike(env: str, options: dict) -> None:
    config = small_config(env, hidden=[6, 4], steps=30)
    config = config.replace(env=dataclasses.replace(EnvConfig(name=env), **options))
    g, keys = genomes(GenomeLayout(1, 8), 20), rng.individual_keys(3, 0, 0, torch.arange(20))
    _, want_trace, want_states = assert_backends_agree(config, g, keys)
    # The states trace is the env's state: the spin reward is the first link's speed times the goal.
    if options["reward"] == "spin" and "goal_switch" not in options:
        env_ = lifetime.make_env(config, keys)
        assert_close(want_trace, want_states[:, :, 1] * env_.goal[:, None], 1e-6)


@pytest.mark.slow
def test_every_step_path_lets_the_rule_see_given_rewards() -> None:
    config = small_config(hidden=[6, 4], steps=30)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 20), rng.individual_keys(4, 0, 0, torch.arange(20))
    seen = torch.randn(20, 30, generator=torch.Generator().manual_seed(0))
    shown = lifetime.Conditions(seen_rewards=seen)
    want = lifetime.run_lifetimes(g, layout, config, keys, backend="spec", conditions=shown)[0]
    own = lifetime.run_lifetimes(g, layout, config, keys, backend="spec")[0]
    assert (want - own).abs().max() > 1e-3  # the rule does react to what it sees
    for native in (True, False):
        cfg = config.replace(runtime=dataclasses.replace(config.runtime, native=native, compile=False))
        assert_close(lifetime.run_lifetimes(g, layout, cfg, keys, conditions=shown, chunk_size=7)[0], want, 1e-4)


def _reference(options: dict, steps: int = 500, episodes: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = from_dict({"env": {"init": "down", **options}})
    env = lifetime.make_env(cfg, evaluation.evaluation_keys(0, episodes))
    total, _, states = run_reference(env, steps)
    return total, evaluation.heights(states)


@pytest.mark.parametrize("action_sign", [1, -1])
@pytest.mark.slow
def test_reference_controller_swings_up_and_balances(action_sign: int) -> None:
    total, h = _reference({"action_sign": action_sign})
    assert (h[:, -125:] > evaluation.BALANCED_HEIGHT).all()  # every lifetime ends balanced
    assert float(total.mean()) > 560  # of at most 1000: it reaches the top within about 220 steps
    # Heavier and longer pendulums take longer to pump up, but every one ends balanced.
    total, h = _reference({"action_sign": action_sign, "params": {"length": [0.8, 1.2], "mass": [0.8, 1.2]}},
                          steps=1000)
    assert (h[:, -250:] > evaluation.BALANCED_HEIGHT).all()


@pytest.mark.slow
def test_reference_controller_spins_the_goals_way_and_stays_down_when_asked() -> None:
    for goal in (1, -1):
        total, _ = _reference({"reward": "spin", "goal": goal})
        assert float(total.min()) > 800
    total, h = _reference({"goal": -1})
    assert float(total.max()) == 0.0 and float(h.max()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("action_sign", [1, -1])
def test_reference_controller_follows_a_goal_switch_both_ways(action_sign: int) -> None:
    # Swing up and balance, then "stay down" from step 600 on: the controller brings the pendulum down and
    # keeps it there (damping alone would hold it balanced at the top); the other way it swings up.
    options = {"max_torque": 2.0, "action_sign": action_sign, "goal_switch": 600}
    _, h = _reference({**options, "goal": 1}, steps=1000, episodes=8)
    assert (h[:, 500:600] > evaluation.BALANCED_HEIGHT).all()
    assert (h[:, -150:] < 0.05).all()
    _, h = _reference({**options, "goal": -1}, steps=1000, episodes=8)
    assert float(h[:, :600].max()) == 0.0 and (h[:, -100:] > evaluation.BALANCED_HEIGHT).all()


def test_hidden_goal_evaluation_reports_every_goal_and_condition() -> None:
    cfg = from_dict({"env": {"init": "down", "reward": "spin"}, "actor": {"hidden": [4]},
                     "ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": 16,
                            "evals_per_individual": 2, "antithetic": "goal"}})
    layout = GenomeLayout()
    genome = layout.random(1, 0.5, torch.Generator().manual_seed(7))[0]
    result = evaluation.evaluate_rule(genome, layout, cfg, episodes=6, seed=1)
    assert set(result.fitness) == set(evaluation.ALL_CONDITIONS)
    assert torch.equal(result.fitness["reward_zeroed"], torch.zeros(6, dtype=torch.float64))
    for name, goals in result.per_goal.items():
        assert set(goals) == {1, -1}
        assert_close(result.fitness[name], (goals[1] + goals[-1]) / 2, 1e-9)
    data = result.to_dict()["conditions"]
    assert set(data["reference"]["per_goal"]) == {"+1", "-1"}
    assert all(0.0 <= v["balanced_fraction"] <= 1.0 for v in data.values())
    assert all(v.shape == (2, 16) for v in result.height_curve.values())
    assert "goal +1" in evaluation.format_table(result)


def test_derangement_has_no_fixed_points_and_follows_the_seed() -> None:
    d = evaluation.derangement(50, 3)
    assert sorted(d.tolist()) == list(range(50)) and not (d == torch.arange(50)).any()
    assert torch.equal(d, evaluation.derangement(50, 3)) and not torch.equal(d, evaluation.derangement(50, 4))
