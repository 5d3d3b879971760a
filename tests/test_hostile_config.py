"""Hostile input to run_config.py: every config key, bad YAML files, runs too large for the machine.

Every refusal is exit 2 with one line naming the problem, no traceback, and nothing written.
The keys are enumerated from the config dataclasses, so keys added later are covered too.
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from conftest import ROOT, TINY, run_in_process, run_script

from metarl import config as C
from metarl import resources
from metarl.cli import train as run_config
from metarl.envs import ENVS, env_class


def config_keys(cls: type = C.Config, prefix: str = "") -> list[str]:
    """Every key of the schema, sections included (``env``, ``env.dt``, ...)."""
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        keys.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += config_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def list_keys(cls: type = C.Config, prefix: str = "") -> list[str]:
    """Keys whose value is a list (their elements get the hostile values too)."""
    keys, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += list_keys(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is list:
            keys.append(prefix + f.name)
    return keys


# YAML text of each hostile value, as given to --set.
HOSTILE = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf", "-1": "-1", "0": "0", "1e30": "1.0e+30",
           "10**30": str(10**30), "10**5000": "9" * 5000, "wrong type": "{wrong: type}", "list": "[1, 2, 3]",
           "huge string": "x" * 100_000}

# (key, value) pairs that are legitimately valid; everything else must be refused.
VALID = {("seed", "0"), ("env.max_torque", "0"), ("env.action_sign", "-1"), ("env.goal", "-1"),
         ("env.goal_switch", "0"), ("env.goal_switch_probability", "0"), ("env.obs_noise", "0"),
         ("actor.weight_init", "0"),
         ("actor.sigma_limit", "0"), ("actor.sigma_min", "0"), ("actor.sigma_init", "0"), ("actor.learning_rate", "0"),
         ("rule.state_dim", "0"), ("rule.init_std", "0"), ("ga.mutation_probability", "0"),
         ("ga.mutation_strength", "0"), ("env.params.damping", "0"), ("actor.hidden", "list")}


def cases() -> list[tuple[str, list[str], str]]:
    """(key named in the error, --set overrides, hostile value name)."""
    out = []
    for key in config_keys():
        out += [(key, [f"{key}={text}"], name) for name, text in HOSTILE.items()]
    for key in list_keys():
        out += [(key, [f"{key}=[{text}]"], f"[{name}]") for name, text in HOSTILE.items() if name != "huge string"]
    for env in ENVS:
        for param in env_class(env).param_defaults:
            key = f"env.params.{param}"
            out += [(key, [f"env.name={env}", f"{key}={text}"], name) for name, text in HOSTILE.items()]
            out += [(key, [f"env.name={env}", f"{key}=[1, {text}]"], f"[1, {name}]") for name, text in HOSTILE.items()
                    if name not in ("list", "huge string")]
    return out


CASES = cases()


@pytest.mark.parametrize("key, overrides, value", CASES, ids=[f"{k}={v}" for k, _, v in CASES])
def test_every_key_refuses_hostile_values(tmp_path, key, overrides, value):
    out = tmp_path / "run"
    args = [str(ROOT / TINY), "--out", str(out)] + [a for o in overrides for a in ("--set", o)]
    if (key, value) in VALID:
        C.load(ROOT / TINY, overrides)  # accepted: loads without error
        return
    code, err = run_in_process(args)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}: {err[:300]}"
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}"), err[:300]
    assert "Traceback" not in err and len(lines[0]) < 600
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, key", [("env.dt=.inf", "env.dt"), (f"seed={2**64}", "seed"),
                                           ("actor.hidden=[0]", "actor.hidden[0]")])
@pytest.mark.slow
def test_hostile_values_as_a_real_process(tmp_path, override, key):
    proc = run_script("run_config.py", TINY, "--out", str(tmp_path / "r"), "--set", override, real_process=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {key}: ") and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "r").exists()


def test_hostile_values_cover_the_schema():
    assert len(CASES) >= 400
    assert {"env.dt", "ga.population_size", "runtime.threads", "seed", "actor.hidden"} <= {k for k, _, _ in CASES}


@pytest.mark.parametrize("key, text, message", [
    ("env.dt", ".inf", "env.dt: must be finite and in [1e-06, 1], got inf"),
    ("env.dt", "1.0e-300", "got 1e-300"),
    ("env.dt", "10", "got 10"),
    ("seed", "-1", "seed: must be an integer in [0, 2^63-1], got -1"),
    ("seed", str(2**64), "seed: must be an integer in [0, 2^63-1]"),
    ("runtime.threads", str(10**12), "runtime.threads: must be an integer in [1, 1024]"),
    ("ga.population_size", "10000000000", "ga.population_size: must be an integer in [1, 10^9]"),
    ("ga.lifetime_steps", str(10**30), "ga.lifetime_steps: must be an integer in [1, 10^9], got 1e+30"),
    ("actor.hidden", f"[{2**40}]", "actor.hidden[0]: must be an integer in [1, 10^6]"),
    ("env.params.length", "[1, .nan]", "env.params.length: must be finite"),
    ("ga.mutation_strength", ".nan", "ga.mutation_strength: must be finite and in [0, 1e+06], got nan"),
])
def test_messages_give_the_reason(tmp_path, key, text, message):
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", f"{key}={text}"])
    assert code == 2 and message in err, err


@pytest.mark.parametrize("prefix", ["", "ga.", "env.params."])
def test_huge_key_names_give_a_short_line(tmp_path, prefix):
    override = prefix + "x" * 100_000 + "=1"
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", override])
    assert code == 2 and len(err.strip().splitlines()) == 1 and len(err) < 600, err[:300]
    assert err.startswith(f"error: {prefix}xxx") and "(100000 characters)" in err


def test_seed_flag_out_of_range(tmp_path):
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--seed", str(2**64)])
    assert code == 2 and err.startswith("error: seed: must be an integer in [0, 2^63-1]")


# ---------------------------------------------------------------------------- YAML files

@pytest.mark.parametrize("name, content, message", [
    ("empty", b"", "the config is empty (write {} to run the defaults"),
    ("comments", b"# nothing but a comment\n\n   # and another\n", "the config is empty"),
    ("deep", b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n", "invalid YAML"),
    ("deep mapping", b"{a: " * 3000 + b"}" * 3000 + b"\n", "invalid YAML"),
    ("deep block", "".join(f"{' ' * i}k:\n" for i in range(1200)).encode(), "invalid YAML"),
    ("binary", bytes(range(256)) * 4, "cannot read"),
    ("control chars", b"ga:\x00\x01 {}\n", "invalid YAML"),
    ("huge integer", b"seed: " + b"9" * 10_000 + b"\n", "invalid YAML"),
    ("list", b"[1, 2]\n", "config: expected a mapping"),
    ("scalar", b"hello\n", "config: expected a mapping"),
    ("tag", b"!!python/object/apply:os.system ['true']\n", "invalid YAML"),
    ("unhashable key", b"? [a]\n: 1\n", "invalid YAML"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "")
@pytest.mark.slow
def test_bad_yaml_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    code, err = run_in_process([str(path), "--out", str(tmp_path / "r"), "--set", "ga.generations=1"])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err[:300]
    assert not (tmp_path / "r").exists()


def test_huge_yaml_file_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(C.MAX_YAML_BYTES + 1)
    code, err = run_in_process([str(path), "--out", str(tmp_path / "r")])
    assert code == 2 and "too large for a YAML config" in err and len(err.strip().splitlines()) == 1


def test_empty_mapping_means_the_defaults(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n")
    assert C.load(path) == C.from_dict({})


# ---------------------------------------------------------------------------- memory and work

@pytest.mark.parametrize("overrides", [
    ["ga.population_size=100000000"],
    ["actor.hidden=[1000000]", "ga.population_size=10000"],
    ["rule.state_dim=1024", "ga.population_size=10000"],
    ["actor.hidden=[4096, 4096]", "ga.population_size=100000"],
])
def test_runs_too_large_for_memory_are_refused_before_any_work(tmp_path, overrides):
    out = tmp_path / "r"
    args = [str(ROOT / TINY), "--out", str(out), "--set", "ga.num_survivors=2"]
    code, err = run_in_process(args + [a for o in overrides for a in ("--set", o)])
    assert code == 2 and err.startswith("error: memory: the run needs about "), err
    assert "available" in err and "--allow-large" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_allow_large_skips_the_memory_check():
    config = C.from_dict({"ga": {"population_size": 100_000_000}})
    cpu = torch.device("cpu")
    with pytest.raises(resources.ResourceError, match="memory"):
        resources.check(config, cpu)
    estimate = resources.check(config, cpu, allow_large=True)
    assert estimate.host > resources.available_memory()[0]
    assert run_config.parse_args(["x.yaml", "--allow-large"]).allow_large


def test_estimate_of_the_shipped_configs_fits_and_grows_with_the_population():
    cpu = torch.device("cpu")
    base = C.load(ROOT / "configs" / "base.yaml")
    small = resources.estimate(base, cpu)
    assert small.host < 1 << 30  # a generation of 10,000 individuals was measured below 1 GiB (test_run_config)
    ten_times = dataclasses.replace(base.ga, population_size=10 * base.ga.population_size)
    big = resources.estimate(base.replace(ga=ten_times),
                             cpu)
    assert big.population == pytest.approx(10 * small.population, rel=0.01)


@pytest.mark.slow
def test_deep_actor_needs_an_explicit_torch_step(tmp_path):
    deep = "actor.hidden=[4, 4, 4, 4, 4, 4, 4, 4, 4]"
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", deep])
    assert code == 2 and err.startswith("error: actor.hidden: 9 hidden layers make 10 layers") and \
        "runtime.native: false" in err
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", deep,
                                "--set", "runtime.native=false", "--generations", "1"])
    assert code == 0, err


@pytest.mark.parametrize("override", ["actor.hidden=[]", "rule.state_dim=0"])
def test_linear_actor_and_stateless_rule_are_valid(tmp_path, override):
    code, err = run_in_process([str(ROOT / TINY), "--out", str(tmp_path / "r"), "--set", override,
                                "--generations", "2"])
    assert code == 0, err
    assert (tmp_path / "r" / "best_model.yaml").exists()
