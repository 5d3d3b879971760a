"""Warm starts (``ga.init_model``): generation 0 from a saved model's rule, e.g. for a curriculum."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, TINY, run_in_process

from metarl import config as C
from metarl.core.genome import GenomeLayout
from metarl.core.rule import STANDARD, CellDeclaration, RuleDeclaration, register_rule, rule_named
from metarl.errors import ConfigError
from metarl.evolve import trainer as training
from metarl.runs import io

# The standard rule without the reward cell's input neuron.sigma: not the standard rule with inputs added.
DROPPED = register_rule(RuleDeclaration("test_dropped", (
    CellDeclaration("reward_network", STANDARD.cells[0].inputs[:-1], STANDARD.cells[0].outputs), *STANDARD.cells[1:])))
MODEL = str(ROOT / "experiments" / "pendulum_swingup" / "model.yaml")


def test_generation_zero_is_the_model_and_mutated_copies() -> None:
    config = C.load(ROOT / TINY, [f"ga.init_model={MODEL}", "ga.population_size=400"])
    state = training.new_run(config)
    genome = io.load_model(MODEL).genome.float()
    pop = state.population
    assert pop.shape == (400, genome.shape[0]) and pop.dtype == torch.float32
    assert torch.equal(pop[0], genome)  # the model itself, unchanged
    changed = pop[1:] != genome
    share = float(changed.double().mean())
    assert abs(share - config.ga.mutation_probability) < 0.01  # as children are mutated
    assert changed.any(dim=1).all() or share < 0.01
    assert torch.equal(training.new_run(config).population, pop)  # seeded: reproducible
    other = training.new_run(config.replace(seed=config.seed + 1)).population
    assert torch.equal(other[0], genome) and not torch.equal(other, pop)


def test_a_warm_started_run_begins_where_the_model_is(tmp_path) -> None:
    # The model's own task (experiments/pendulum_swingup's config made small): its rule swings up from rest.
    small = ["--quiet", "--generations", "1", "--set", "ga.population_size=20", "--set", "ga.num_survivors=4",
             "--set", "ga.lifetime_steps=300", "--set", "runtime.threads=1"]
    bests = {}
    for name, extra in (("warm", ["--set", f"ga.init_model={MODEL}"]), ("cold", [])):
        out = tmp_path / name
        config = str(ROOT / "experiments/pendulum_swingup/pendulum_swingup.yaml")
        code, _ = run_in_process([config, "--out", str(out), *small, *extra])
        assert code == 0
        bests[name] = float((out / "log.csv").read_text().splitlines()[1].split(",")[1])
    assert bests["warm"] > 4 * bests["cold"]  # measured: 63.8 against 7.9
    config = C.from_dict(C.read_yaml(tmp_path / "warm" / "config.yaml"))
    assert config.ga.init_model == MODEL  # recorded with the run


def test_a_bad_model_is_one_line_and_nothing_is_written(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("actor: [1, 2]\n")
    small = tmp_path / "small.yaml"
    model = io.load_model(MODEL)
    layout = GenomeLayout(1, 4)
    io.save_model(small, layout.random(1, 0.1, torch.Generator().manual_seed(0))[0], layout,
                  model.config.replace(rule=C.RuleConfig(signal_dim=1, state_dim=4)), fitness=0.0, generation=0, seed=0)
    for path, message in ((tmp_path / "missing.yaml", "no such model file"), (bad, "not a saved model"),
                          (small, "state_dim 4")):
        out = tmp_path / "run"
        code, err = run_in_process([str(ROOT / TINY), "--out", str(out), "--set", f"ga.init_model={path}"])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ga.init_model: ") and message in err, err
        assert not out.exists()


def test_a_rule_with_an_input_added_starts_from_a_standard_model(tmp_path) -> None:
    # reward_change is the standard rule with the input reward.change added: generation 0 is the model embedded,
    # the new input's weights 0.
    config = C.load(ROOT / TINY, [f"ga.init_model={MODEL}", "rule.declaration=reward_change"])
    state = training.new_run(config)
    model = io.load_model(MODEL)
    wide = GenomeLayout(1, 8, rule_named("reward_change"))
    assert torch.equal(state.population[0], wide.embed(model.genome.float(), model.layout))
    other = C.load(ROOT / TINY, [f"ga.init_model={MODEL}", f"rule.declaration={DROPPED.name}"])
    with pytest.raises(ConfigError, match="whose reward_network drops the inputs neuron.sigma .*with inputs added"):
        training.new_run(other)
