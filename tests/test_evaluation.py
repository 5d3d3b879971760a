"""metarl.analysis.evaluation: baselines share their draws, ablations do what they say, results are reproducible."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from metarl.analysis import evaluation
from metarl.analysis.controllers import run_reference
from metarl.analysis.evaluation import Summary, evaluate_rule, lifetime_gain, random_rule_genomes, sample_lifetimes
from metarl.backends.lifetime import Conditions, make_env, run_lifetimes
from metarl.config import from_dict
from metarl.core import rng
from metarl.core.genome import GenomeLayout

STEPS = 12
EPISODES = 6


def tiny_config(**actor: object):
    # sigma_init > 0 makes the sampling noise matter, so shared keys are really tested.
    return from_dict({"seed": 0, "device": "cpu", "actor": {"hidden": [4], "sigma_init": 0.3, **actor},
                      "ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": STEPS}})


@pytest.fixture
def rule() -> tuple[torch.Tensor, GenomeLayout]:
    layout = GenomeLayout(signal_dim=1, state_dim=8)
    return layout.random(1, 0.5, torch.Generator().manual_seed(7))[0], layout


def test_summary_mean_std_and_ci() -> None:
    s = Summary.of(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert (s.mean, s.n) == (2.5, 4)
    assert s.std == pytest.approx(math.sqrt(5 / 3))  # sample std (n - 1)
    lo, hi = s.ci95
    assert hi - s.mean == pytest.approx(1.96 * s.std / 2) and s.mean - lo == pytest.approx(hi - s.mean)
    assert s.to_dict() == {"mean": 2.5, "std": s.std, "ci95": [lo, hi], "n": 4}
    assert Summary.of(torch.tensor([5.0])).ci95 == (5.0, 5.0)


def test_lifetime_gain_is_last_quarter_minus_first_quarter() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 3.0, 5.0],
                            [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    assert lifetime_gain(rewards).tolist() == [4.0, 0.0]
    assert lifetime_gain(torch.tensor([[1.0, 3.0]])).tolist() == [2.0]  # quarters of at least one step


def test_evaluation_keys_are_unseen_by_training() -> None:
    keys = set(evaluation.evaluation_keys(0, 64).tolist())
    replay = set(evaluation.evaluation_keys(0, 64, generation=evaluation.REPLAY_GENERATION).tolist())
    assert len(keys) == 64 and not keys & replay
    for generation in range(100):
        assert not keys & set(rng.individual_keys(0, generation, 0, torch.arange(64)).tolist())


def test_random_rule_genomes_follow_the_initial_distribution_and_the_seed() -> None:
    layout = GenomeLayout()
    a = random_rule_genomes(layout, 50, 0.1, seed=3)
    assert a.shape == (50, layout.size)
    assert torch.equal(a, random_rule_genomes(layout, 50, 0.1, seed=3))
    assert not torch.equal(a, random_rule_genomes(layout, 50, 0.1, seed=4))
    assert float(a.std()) == pytest.approx(0.1, rel=0.05) and abs(float(a.mean())) < 0.005
    assert len({tuple(g.tolist()) for g in a}) == 50  # one genome per episode
    # Not the GA's initial population of a run with the same seed.
    assert not torch.equal(a, layout.random(50, 0.1, torch.Generator().manual_seed(3)))


def test_no_plasticity_leaves_the_actor_unchanged(rule) -> None:
    genome, layout = rule
    keys = evaluation.evaluation_keys(1, 3)
    frozen = sample_lifetimes(genome, layout, tiny_config(), keys, steps=STEPS, conditions=Conditions(plastic=False))
    learned = sample_lifetimes(genome, layout, tiny_config(), keys, steps=STEPS)
    assert frozen.rewards.shape == (3, STEPS)
    for name in ("weights", "biases", "sigmas"):
        for before, after in zip(getattr(frozen.initial, name), getattr(frozen.final, name), strict=True):
            assert torch.equal(before, after)
        assert torch.equal(getattr(learned.initial, name)[0], getattr(frozen.initial, name)[0])  # same draws
    assert any(not torch.equal(a, b) for a, b in zip(learned.initial.weights, learned.final.weights, strict=True))


def test_sample_lifetimes_matches_run_lifetimes(rule) -> None:
    genome, layout = rule
    keys = evaluation.evaluation_keys(2, 4)
    sample = sample_lifetimes(genome, layout, tiny_config(), keys, steps=STEPS)
    fitness, rewards = run_lifetimes(genome.expand(4, -1), layout, tiny_config(), keys, steps=STEPS, trace=True)
    assert torch.equal(sample.rewards, rewards)


def test_without_learning_rate_all_rule_conditions_equal_no_plasticity(rule) -> None:
    # With learning rate 0 the rule changes nothing, so the conditions differ only if their
    # actors, environments or noise differ: they must be exactly equal.
    genome, layout = rule
    result = evaluate_rule(genome, layout, tiny_config(learning_rate=0.0), episodes=EPISODES, seed=5)
    base = result.fitness["no_plasticity"]
    assert base.shape == (EPISODES,) and len(set(base.tolist())) == EPISODES  # episodes differ
    for name in ("learned", "reward_zeroed", "random_rule", "reward_shuffled"):
        assert torch.equal(result.fitness[name], base), name
    assert result.differences["learned - no_plasticity"].mean == 0.0
    assert result.ratio == 1.0


def test_evaluation_is_reproducible_and_seed_dependent(rule) -> None:
    genome, layout = rule
    config = tiny_config(learning_rate=0.5)
    a = evaluate_rule(genome, layout, config, episodes=EPISODES, seed=11)
    b = evaluate_rule(genome, layout, config, episodes=EPISODES, seed=11)
    c = evaluate_rule(genome, layout, config, episodes=EPISODES, seed=12)
    assert a.to_dict() == b.to_dict()
    assert a.fitness["learned"].tolist() != c.fitness["learned"].tolist()
    assert not torch.equal(a.fitness["learned"], a.fitness["no_plasticity"])  # the rule does act
    assert set(a.to_dict()["conditions"]) == set(evaluation.ALL_CONDITIONS)
    assert a.gain.shape == (EPISODES,) and a.steps == STEPS


def test_rule_runs_on_a_differently_sized_actor(rule) -> None:
    genome, layout = rule
    result = evaluate_rule(genome, layout, tiny_config(), episodes=3, seed=0, steps=5, sizes=[3, 16, 16, 1])
    assert all(torch.isfinite(v).all() and v.shape == (3,) for v in result.fitness.values())
    assert result.steps == 5


def test_table_lists_every_condition_and_the_ratio(rule) -> None:
    genome, layout = rule
    table = evaluation.format_table(evaluate_rule(genome, layout, tiny_config(), episodes=3, seed=0, steps=4))
    for name in (*evaluation.ALL_CONDITIONS, "learned / no_plasticity", "lifetime_gain", "95% CI", "balanced"):
        assert name in table


@pytest.mark.slow
def test_reversal_is_reported_per_motor_direction_and_goal(rule) -> None:
    genome, layout = rule
    config = from_dict({"seed": 0, "device": "cpu", "env": {"init": "down", "action_sign": "random", "goal_switch": 8,
                                                            "max_torque": 2.0},
                        "actor": {"hidden": [4], "sigma_init": 0.3},
                        "ga": {"population_size": 4, "num_survivors": 1, "lifetime_steps": STEPS,
                               "evals_per_individual": 2, "antithetic": "goal"}, "runtime": {"native": False}})
    result = evaluate_rule(genome, layout, config, episodes=6, seed=3)
    groups = result.reversal()
    signs = result.action_sign  # a motor drawn per lifetime in training: every episode run with both directions
    assert signs.shape == (2, 6) and signs[0].eq(1).all() and signs[1].eq(-1).all()
    assert set(groups) == {"motor +1", "motor -1", "goal +1->-1", "goal -1->+1", "motor +1, goal +1->-1",
                           "motor +1, goal -1->+1", "motor -1, goal +1->-1", "motor -1, goal -1->+1"}
    assert groups["motor +1"]["learned"].numel() == 6 and groups["goal +1->-1"]["learned"].numel() == 12
    # The second half of each lifetime: its rewards from the switch on, here of the reference controller.
    keys = evaluation.evaluation_keys(3, 6)
    after = {}
    for sign in (1, -1):
        plus = config.replace(env=dataclasses.replace(config.env, goal=1, action_sign=sign))
        _, rewards, _ = run_reference(make_env(plus, keys), STEPS, keys)
        after[sign] = rewards[:, 8:].double().sum(dim=1)
    assert torch.equal(groups["goal +1->-1"]["reference"], torch.cat([after[1], after[-1]]))
    assert torch.equal(groups["motor -1, goal +1->-1"]["reference"], after[-1])
    data = result.to_dict()["reversal"]
    assert data["switch"] == 8 and data["steps_after"] == STEPS - 8
    assert set(data["groups"]["motor -1"]["conditions"]) == set(evaluation.ALL_CONDITIONS)
    table = evaluation.format_table(result)
    assert "reversal: the goal flips at step 8" in table and "motor -1, goal -1->+1" in table
    assert evaluate_rule(genome, layout, tiny_config(), episodes=3, seed=0).reversal() == {}
    # A training mix (some lifetimes reverse, some not) is evaluated with every lifetime reversed.
    mixed = config.replace(env=dataclasses.replace(config.env, goal_switch_probability=0.5))
    again = evaluate_rule(genome, layout, mixed, episodes=6, seed=3).reversal()
    assert all(torch.equal(again[g][n], groups[g][n]) for g in groups for n in groups[g])
    # A switch step drawn per lifetime: each lifetime's second half from its own step on.
    ranged = config.replace(env=dataclasses.replace(config.env, goal_switch=[3, 9]))
    result = evaluate_rule(genome, layout, ranged, episodes=6, seed=3)
    env = make_env(ranged.replace(env=dataclasses.replace(ranged.env, goal=1, action_sign=1)), keys)
    _, rewards, _ = run_reference(env, STEPS, keys)
    mask = torch.arange(STEPS)[None, :] >= env.switch_step[:, None]
    assert len(set(env.switch_step.tolist())) > 1
    assert torch.equal(result.reversal()["motor +1, goal +1->-1"]["reference"], (rewards.double() * mask).sum(dim=1))
    assert result.to_dict()["reversal"]["switch"] == [3, 9]
    assert "a step drawn per lifetime in 3-9" in evaluation.format_table(result)
