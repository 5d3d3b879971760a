"""Config loading: defaults, legacy flat format, overrides and one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from metarl import config as C
from metarl import envs
from metarl.envs.base import EnvOptions, option_names
from metarl.errors import ConfigError


def test_defaults_are_the_seed_values():
    c = C.from_dict({})
    assert (c.ga.population_size, c.ga.num_survivors, c.ga.generations) == (10000, 200, 10000)
    assert (c.ga.mutation_probability, c.ga.mutation_strength, c.ga.lifetime_steps) == (0.001, 0.1, 2000)
    env = c.env
    assert (env.name, env.dt, env.integrator, env.init, env.max_speed) == ("Pendulum", 0.05, "rk4", "up", 10.0)
    assert c.layer_sizes == [3, 8, 8, 1]
    assert (c.rule.signal_dim, c.rule.state_dim) == (1, 8)


def test_legacy_flat_config_translates(seed_files):
    base, _ = seed_files
    c = C.load(base)
    assert c.seed is None and c.device == "cuda"
    assert c.env.integrator == "rk4" and c.ga.lifetime_steps == 2000 and c.ga.evals_per_individual == 1
    assert c.layer_sizes == [3, 8, 8, 1] and c.env.max_torque == 1.0


def test_legacy_network_shape_must_match_env():
    with pytest.raises(ConfigError, match="network_shape"):
        C.from_dict({"env_name": "DoublePendulum", "network_shape": [3, 8, 1]})
    c = C.from_dict({"env_name": "DoublePendulum", "network_shape": [6, 4, 1]})
    assert c.layer_sizes == [6, 4, 1]


def test_overrides_parse_yaml_values():
    data = C.apply_overrides({"ga": {"population_size": 5}}, ["ga.num_survivors=2", "env.params.length=[0.5, 1.5]",
                                                              "seed=7", "env.max_speed=null"])
    c = C.from_dict(data)
    assert c.ga.num_survivors == 2 and c.env.params["length"] == [0.5, 1.5] and c.seed == 7
    assert c.env.max_speed is None


def test_yaml_roundtrip():
    c = C.from_dict({"seed": 3, "env": {"name": "DoublePendulum", "params": {"length1": [0.8, 1.2]}}})
    import yaml

    assert C.from_dict(yaml.safe_load(C.to_yaml(c))) == c


@pytest.mark.parametrize("data, key", [
    ({"ga": {"populaton_size": 3}}, "ga.populaton_size"),
    ({"ga": {"population_size": 10, "num_survivors": 11}}, "ga.num_survivors"),
    ({"env": {"dt": 0}}, "env.dt"),
    ({"env": {"dt": -0.1}}, "env.dt"),
    ({"env": {"name": "Cartpole"}}, "env.name"),
    ({"env": {"integrator": "rk45"}}, "env.integrator"),
    ({"env": {"params": {"lenght": 1.0}}}, "env.params.lenght"),
    ({"env": {"params": {"length": [2.0, 1.0]}}}, "env.params.length"),
    ({"actor": {"hidden": [8, 0]}}, "actor.hidden[1]"),
    ({"actor": {"hidden": "8"}}, "actor.hidden"),
    ({"ga": {"population_size": "many"}}, "ga.population_size"),
    ({"ga": {"population_size": 0}}, "ga.population_size"),
    ({"ga": {"mutation_probability": 2}}, "ga.mutation_probability"),
    ({"seed": 1.5}, "seed"),
    ({"device": "tpu"}, "device"),
    ({"env_name": "Pendulum", "node_info_dim": 6}, "node_info_dim"),
    ({"env_name": "Pendulum", "network_shape": [3, 8, 2]}, "network_shape"),
    ({"env_name": "Pendulum", "learning_rte": 0.1}, "learning_rte"),
])
def test_invalid_values_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        C.from_dict(data)
    message = str(err.value)
    assert message.startswith(key) and "\n" not in message


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'population_size'"):
        C.from_dict({"ga": {"populaton_size": 3}})


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        C.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ga: {population_size: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        C.load(bad)


def test_cuda_without_cuda_warns_and_uses_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert C.resolve_device("cuda").type == "cpu"
    assert C.resolve_device("auto").type == "cpu"


def test_env_options_are_declared_once():
    assert issubclass(C.EnvConfig, EnvOptions)
    assert [f.name for f in dataclasses.fields(C.EnvConfig)] == ["name", *option_names(), "params"]
    kwargs = C.from_dict({"env": {"goal": -1, "goal_switch": 5, "params": {"length": 2.0}}}).env.make_kwargs()
    assert kwargs == {**dataclasses.asdict(EnvOptions(goal=-1, goal_switch=5)), "params": {"length": 2.0}}
    env = envs.make("Pendulum", 2, **kwargs)
    assert env.options == EnvOptions(goal=-1, goal_switch=5)
    assert torch.equal(env.params["length"], torch.full((2,), 2.0))
    assert C.EnvConfig(goal=0).goal == 0  # unchecked until validate, which names the key
    with pytest.raises(ConfigError, match=r"^env.goal: must be 1, -1 or random, got 0$"):
        C.from_dict({"env": {"goal": 0}})
