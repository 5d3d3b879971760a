"""The backends (`metarl.backends`) against the spec (`metarl.core.spec`).

Compiled backend: the spec's step under `torch.compile`, compiled once in a small case.
Native kernel (`metarl.backends.native`): its rule steps are checked here on the same inputs, the
rest in `test_native.py`. Every network here has at least two hidden layers of different
widths, so that the rule's aggregation over connections shows.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import assert_close, fitness, genomes, needs_compiler, needs_native, small_config

from metarl import backends
from metarl.backends import lifetime, native
from metarl.config import Config, RuntimeConfig
from metarl.core import actor as actor_mod
from metarl.core import rng
from metarl.core.genome import GenomeLayout
from metarl.core.rule import initial_rule_state, rule_named
from metarl.core.spec import reference_rule_step

KW = {"learning_rate": 0.01, "weight_limit": 4.0, "sigma_limit": 1.0}
# (S, H, layer sizes, rule declaration)
SHAPES = [(1, 8, [3, 12, 6, 1], "standard"), (1, 8, [3, 16, 5, 1], "standard"), (2, 4, [6, 10, 7, 1], "standard"),
          (1, 0, [3, 9, 5, 1], "standard"), (1, 8, [3, 12, 6, 1], "reward_change"),
          (2, 4, [6, 10, 7, 1], "reward_change")]


@needs_native  # compares the native kernel too
@pytest.mark.parametrize("s_dim,h_dim,sizes,rule", SHAPES)
@pytest.mark.slow
def test_rule_steps_match_reference_over_50_steps(s_dim: int, h_dim: int, sizes: list[int], rule: str) -> None:
    layout, pop = GenomeLayout(s_dim, h_dim, rule_named(rule)), 12
    g = genomes(layout, pop)
    actor = actor_mod.initial_actor(sizes, torch.arange(pop), weight_init=0.1, weight_limit=4.0, sigma_init=0.3)
    rstate = initial_rule_state(sizes, pop, h_dim, traces=layout.rule.traces)
    ref = (rstate, actor)
    gen = torch.Generator().manual_seed(1)
    inputs: list[list[torch.Tensor]] = [[], [], []]
    for _ in range(50):
        x = torch.randn(pop, sizes[0], generator=gen)
        noise = torch.randn(pop, sum(sizes[1:]), generator=gen)
        reward = torch.rand(pop, generator=gen) * 2
        ref = reference_rule_step(g, layout, ref[0], actor_mod.forward(ref[1], x, noise), x, reward, dt=0.05, **KW)
        for kept, t in zip(inputs, (x, noise, reward), strict=True):
            kept.append(t)
    # The native kernel (12 individuals: a partial block of its 16 lanes) on the same inputs.
    nat_actor, nat_rule = native.rule_steps(g, layout, actor, rstate, *(torch.stack(t) for t in inputs), **KW)
    # The native kernel's tanh is a rational approximation within ~5 ulp (kernel/vecmath.h), not torch's,
    # so after 50 chaotic steps it is held to 3e-5 rather than 1e-5. With reward.change the differences grow
    # as with the standard rule (largest 1.8e-6 vs 1.6e-6 after 5 steps, 4.7e-6 vs 6.5e-6 after 20; the trace
    # itself the same bits) but reach 5.3e-5 in one element of 6,912 by step 50: 1e-4.
    for (rule, act), tol in (((nat_rule, nat_actor), 3e-5 if layout.rule.name == "standard" else 1e-4),):
        for field in ("weights", "biases", "sigmas", "sums", "samples", "outputs"):
            for got, want in zip(getattr(act, field), getattr(ref[1], field), strict=True):
                assert_close(got, want, tol)
        for got, want in zip([rule.reward, *rule.nodes, *rule.edges, *rule.traces.values()],
                             [ref[0].reward, *ref[0].nodes, *ref[0].edges, *ref[0].traces.values()], strict=True):
            assert_close(got, want, tol)
    assert set(nat_rule.traces) == set(layout.rule.traces)
    # The rule did change the actor: the comparison is not between two untouched states.
    assert not torch.equal(ref[1].weights[0], actor.weights[0])


@needs_native
@pytest.mark.slow
def test_the_kernel_runs_the_reward_change_rule_as_the_spec() -> None:
    # As trained in experiments/pendulum_reward_balance: sensor noise, the goal flipped at a step drawn per
    # lifetime, the motor either way, a floor under sigma, physics and (so the trace's rate) dt drawn per lifetime.
    base = small_config(steps=60, pop=20, native=True)
    env = dataclasses.replace(base.env, obs_noise=0.03, goal_switch=[15, 40], goal_switch_probability=0.75,
                              action_sign="random", dt=[0.025, 0.05], params={"length": [0.8, 1.6]})
    config = base.replace(env=env, actor=dataclasses.replace(base.actor, sigma_min=0.1),
                          rule=dataclasses.replace(base.rule, declaration="reward_change"))
    assert backends.NATIVE.declines(config) is None
    assert backends.select_backend(config, torch.device("cpu")) is backends.NATIVE  # after its self-check
    layout = GenomeLayout(1, 8, rule_named("reward_change"))
    g, keys = genomes(layout, 20), rng.individual_keys(3, 0, 0, torch.arange(20))
    want = lifetime.run_lifetimes(g, layout, config, keys, backend="spec")[0]
    got = lifetime.run_lifetimes(g, layout, config, keys, backend="native")[0]
    assert_close(got, want, 1e-4)
    # The trace's time constant reaches the kernel: 3 s instead of 1 s, as the spec, and another result.
    slow = config.replace(rule=dataclasses.replace(config.rule, reward_mean_time=3.0))
    got_slow = lifetime.run_lifetimes(g, layout, slow, keys, backend="native")[0]
    assert_close(got_slow, lifetime.run_lifetimes(g, layout, slow, keys, backend="spec")[0], 1e-4)
    assert not torch.allclose(got_slow, got, rtol=1e-3, atol=1e-3)
    # The input matters: the same genomes without it (its rows zeroed) score otherwise.
    blind = g.masked_fill(layout.input_genes("reward_network", "dr") | layout.input_genes("connection_network", "dr"),
                          0.0)
    assert not torch.allclose(lifetime.run_lifetimes(blind, layout, config, keys, backend="native")[0], got,
                              rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("env,hidden,s_dim,h_dim", [("Pendulum", [12, 6], 1, 8), ("DoublePendulum", [12, 6], 1, 8),
                                                    ("Pendulum", [16, 4, 9], 1, 8), ("Pendulum", [7, 11], 2, 4),
                                                    ("DoublePendulum", [10, 5], 1, 0)])
@pytest.mark.slow
def test_lifetime_backends_match_the_spec(env: str, hidden: list[int], s_dim: int, h_dim: int) -> None:
    config = small_config(env, hidden, s_dim, h_dim)
    layout = GenomeLayout(s_dim, h_dim)
    g, keys = genomes(layout, 20), rng.individual_keys(3, 0, 0, torch.arange(20))
    want = fitness(config, g, keys, backend="spec")
    assert_close(fitness(config, g, keys, backend="native"), want, 1e-4)


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_native)])
@pytest.mark.slow
def test_fitness_does_not_depend_on_the_split(native: bool) -> None:
    # 40 individuals: the native kernel's blocks of 16 are full, partial, and split over threads.
    config = small_config("DoublePendulum", pop=40, native=native)
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 40), rng.individual_keys(5, 2, 0, torch.arange(40))
    whole = fitness(config, g, keys)
    assert torch.equal(fitness(config, g, keys, chunk_size=7), whole)
    for i in (0, 13, 39):
        assert torch.equal(fitness(config, g[i:i + 1], keys[i:i + 1]), whole[i:i + 1])
    evaluated = lifetime.evaluate(g, layout, config, seed=5, generation=2)
    assert torch.equal(evaluated, whole)
    alone = lifetime.evaluate(g[13:14], layout, config, seed=5, generation=2, indices=torch.tensor([13]))
    assert torch.equal(alone, whole[13:14])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        assert torch.equal(fitness(config, g, keys), whole)
    finally:
        torch.set_num_threads(threads)


@needs_compiler
@pytest.mark.slow
@pytest.mark.long(60)
def test_compiled_step_matches_and_does_not_depend_on_the_split() -> None:
    config = small_config(hidden=[6], compile=True, pop=16, steps=30)  # one hidden layer: a smaller graph to compile
    layout = GenomeLayout(1, 8)
    g, keys = genomes(layout, 16), rng.individual_keys(1, 0, 0, torch.arange(16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback to eager execution warns: fail instead
        whole = fitness(config, g, keys)
    assert_close(whole, fitness(config, g, keys, backend="spec"), 1e-4)
    # Chunks are padded to one compiled size, so an individual's arithmetic is the same alone.
    for i in (0, 9):
        assert torch.equal(fitness(config, g[i:i + 1], keys[i:i + 1]), whole[i:i + 1])
    assert torch.equal(fitness(config, g[:11], keys[:11]), whole[:11])


def test_compile_is_decided_by_the_config_alone() -> None:
    def chosen(config: Config) -> str:
        return backends.select_backend(config, torch.device("cpu")).name

    auto = dataclasses.replace(small_config(), runtime=RuntimeConfig(compile=None, native=False))
    assert chosen(auto) == "spec"
    big = dataclasses.replace(auto, ga=dataclasses.replace(auto.ga, population_size=10000, lifetime_steps=2000))
    assert chosen(big) == "compiled"
    assert chosen(small_config(compile=True)) == "compiled"
    assert chosen(dataclasses.replace(big, runtime=RuntimeConfig(compile=False, native=False))) == "spec"
