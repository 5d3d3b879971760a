"""A rule's actor on Gymnasium's Pendulum-v1 (metarl.analysis.gym_rule) and show_results.py --gymnasium."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script

from metarl.analysis import gym_rule
from metarl.backends.lifetime import Lifetime
from metarl.cli.main import run_main
from metarl.core import rng
from metarl.core.step import make_env as lifetime_env
from metarl.envs import make as make_env
from metarl.runs.io import load_model
from metarl.shipped import model as shipped_model

gymnasium = pytest.importorskip("gymnasium")

MODEL = "pendulum_balance"


def test_observation_mapping_matches_metarls_pendulum_gymnasium() -> None:
    # The same physical states: Pendulum-v1's th (from upright) and metarl's theta = th + pi (from hanging).
    ths = np.array([-3.0, -1.2, 0.0, 0.4, 2.5, math.pi])
    thdots = np.array([0.5, -7.0, 0.0, 3.3, -0.1, 8.0])
    ref = gymnasium.make("Pendulum-v1")
    ref.reset(seed=0)
    got = []
    for th, thdot in zip(ths, thdots, strict=True):
        ref.unwrapped.state = np.array([th, thdot])
        got.append(gym_rule.metarl_observation(ref.unwrapped._get_obs()))
    ours = make_env("Pendulum", len(ths), dtype=torch.float64)
    want = ours.observation(torch.tensor(np.stack((ths + math.pi, thdots), axis=1)))
    np.testing.assert_allclose(np.stack(got), want.numpy(), atol=1e-6)
    np.testing.assert_allclose(gym_rule.height(np.stack(got)), ours.height(torch.tensor(
        np.stack((ths + math.pi, thdots), axis=1))).numpy(), atol=1e-6)
    assert gym_rule.gymnasium_action(np.array([-1.0, 0.25, 3.0])).tolist() == [[-2.0], [0.5], [2.0]]


def test_metarls_pendulum_v0_with_gymnasium_dynamics_gives_the_same_mapped_observations_gymnasium() -> None:
    ref, ours = gymnasium.make("Pendulum-v1"), gymnasium.make("metarl/Pendulum-v0", dynamics="gymnasium")
    a, b = ref.reset(seed=3)[0], ours.reset(seed=3)[0]
    actions = np.random.default_rng(0).uniform(-2, 2, size=(200, 1)).astype(np.float32)
    for action in actions:
        np.testing.assert_allclose(gym_rule.metarl_observation(a), gym_rule.metarl_observation(b), atol=1e-5)
        a, b = ref.step(action)[0], ours.step(action)[0]


def test_rule_actor_is_the_spec_lifetime_gymnasium() -> None:
    # Driven from outside by metarl's own env, RuleActor (metarl.core.step's act and learn) is a spec Lifetime.
    model = load_model(shipped_model("pendulum_swingup"))
    config = model.config
    keys = rng.individual_keys(0, 1, 2, torch.arange(3))
    life = Lifetime(model.genome[None].expand(3, -1).contiguous(), model.layout, config, keys, backend="spec")
    want = torch.stack([life.step() for _ in range(30)])
    env = lifetime_env(config, keys)
    agent = gym_rule.RuleActor(model, keys)
    got = []
    for _ in range(30):
        action = agent.act(env.observe())
        _, reward = env.step(action)
        agent.learn(reward)
        got.append(reward)
    torch.testing.assert_close(torch.stack(got), want, rtol=0, atol=0)
    torch.testing.assert_close(agent.actor.weights[0], life.actor.weights[0], rtol=0, atol=0)


@pytest.mark.parametrize("policy", [pytest.param("learned", marks=pytest.mark.slow), "no_plasticity", "random"])
def test_helper_returns_per_episode_returns_gymnasium(policy: str) -> None:
    returns = gym_rule.run_rule_on_gymnasium(MODEL, "Pendulum-v1", episodes=2, lifetimes=2, seed=1, policy=policy)
    assert returns.shape == (2, 2) and returns.dtype == np.float64
    assert np.all(returns < 0) and np.all(returns > -200 * (math.pi**2 + 0.1 * 64 + 0.001 * 4))
    # The same seed, the same returns: the first lifetime again, alone.
    again = gym_rule.run_rule_on_gymnasium(MODEL, "Pendulum-v1", episodes=1, lifetimes=1, seed=1, policy=policy)
    np.testing.assert_array_equal(returns[:1, :1], again)


@pytest.mark.slow
def test_the_return_is_pendulum_v1s_and_the_rule_persists_across_resets_gymnasium() -> None:
    # The random policy's returns are those of a plain gymnasium loop with the same seeds.
    returns = gym_rule.run_rule_on_gymnasium(MODEL, episodes=2, lifetimes=1, seed=4, policy="random")
    env = gymnasium.make("Pendulum-v1")
    env.action_space.seed(gym_rule.lifetime_seed(4, 0))
    want = []
    for e in range(2):
        env.reset(seed=gym_rule.lifetime_seed(4, 0) if e == 0 else None)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(env.action_space.sample())
            total, done = total + r, terminated or truncated
        want.append(total)
    np.testing.assert_allclose(returns[0], want)
    # The rule keeps learning through the reset: its second episode differs from a fresh actor's first.
    env_reward = gym_rule.run_rule_on_gymnasium(MODEL, episodes=2, lifetimes=2, seed=4)
    height = gym_rule.run_rule_on_gymnasium(MODEL, episodes=2, lifetimes=2, seed=4, reward="height")
    assert not np.allclose(env_reward, height)
    frozen = gym_rule.run_rule_on_gymnasium(MODEL, episodes=2, lifetimes=2, seed=4, policy="no_plasticity")
    assert not np.allclose(env_reward, frozen)


def test_helper_accepts_metarls_pendulum_v0_gymnasium() -> None:
    ours = gym_rule.run_rule_on_gymnasium(MODEL, "metarl/Pendulum-v0", episodes=1, lifetimes=2, seed=2,
                                          policy="no_plasticity")
    ref = gym_rule.run_rule_on_gymnasium(MODEL, "Pendulum-v1", episodes=1, lifetimes=2, seed=2,
                                         policy="no_plasticity")
    np.testing.assert_allclose(ours, ref, rtol=1e-3)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"env_id": "CartPole-v1"}, "Pendulum-v1 or metarl/Pendulum-v0 only"),
    ({"episodes": 0}, "episodes per lifetime must be an integer >= 1"),
    ({"lifetimes": -2}, "lifetimes must be an integer >= 1"),
    ({"reward": "cost"}, "reward must be one of env, height"),
    ({"policy": "greedy"}, "policy must be one of"),
])
def test_helper_rejects_bad_arguments_gymnasium(kwargs: dict, message: str) -> None:
    with pytest.raises(gym_rule.UserError, match=message):
        gym_rule.run_rule_on_gymnasium(MODEL, **kwargs)


def test_without_gymnasium_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from metarl.cli.show_results import main

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    assert run_main(main, [MODEL, "--gymnasium", "Pendulum-v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: running on Gymnasium needs gymnasium")


@pytest.mark.slow
def test_cli_prints_the_table_and_writes_json_gymnasium(tmp_path: Path) -> None:
    out = tmp_path / "gym.json"
    result = run_script("show_results.py", MODEL, "--gymnasium", "Pendulum-v1", "--episodes-per-lifetime", "2",
                        "--lifetimes", "2", "--seed", "1", "--reward", "height", "--json", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["episode"])
    assert lines[header].split() == ["episode", *gym_rule.POLICIES]
    assert [line.split()[0] for line in lines[header + 1:header + 4]] == ["1", "2", "all"]
    data = json.loads(out.read_text())
    assert data["settings"]["reward"] == "height" and data["env_id"] == "Pendulum-v1"
    learned = np.array(data["policies"]["learned"]["returns"])
    assert learned.shape == (2, 2)
    want = gym_rule.run_rule_on_gymnasium(MODEL, episodes=2, lifetimes=2, seed=1, reward="height")
    np.testing.assert_allclose(learned, want)
    assert data["policies"]["learned"]["per_episode"][0]["mean"] == pytest.approx(want[:, 0].mean())


@pytest.mark.parametrize(("args", "message"), [
    (["--gymnasium", "CartPole-v1"], "Pendulum-v1 or metarl/Pendulum-v0 only"),
    (["--gymnasium", "NoSuchEnv-v9"], "Pendulum-v1 or metarl/Pendulum-v0 only"),
    (["--gymnasium", "Pendulum-v1", "--lifetimes", "0"], "--lifetimes must be >= 1"),
    (["--gymnasium", "Pendulum-v1", "--episodes-per-lifetime", "0"], "--episodes-per-lifetime must be >= 1"),
    (["--gymnasium", "Pendulum-v1", "--lifetimes", "many"], "invalid int value"),
    (["--gymnasium", "Pendulum-v1", "--reward", "cost"], "invalid choice"),
    (["--gymnasium", "Pendulum-v1", "--evaluate"], "cannot be combined with --evaluate"),
    (["--gymnasium", "Pendulum-v1", "--episodes", "4"], "cannot be combined with --episodes"),
    (["--lifetimes", "3"], "--lifetimes needs --gymnasium"),
])
def test_cli_bad_arguments_exit_2_with_one_line_gymnasium(args: list[str], message: str,
                                                         capsys: pytest.CaptureFixture) -> None:
    from metarl.cli.show_results import main

    assert run_main(main, [MODEL, *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert message in captured.err


def test_cli_rejects_a_double_pendulum_model_gymnasium(capsys: pytest.CaptureFixture) -> None:
    from metarl.cli.show_results import main

    assert run_main(main, ["double_pendulum_swingup", "--gymnasium", "Pendulum-v1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "DoublePendulum" in captured.err


def test_docs_table_gives_the_committed_measurements_gymnasium() -> None:
    text = (ROOT / "docs/gymnasium.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| (env reward|height) \|(.*)$", text, flags=re.M)
    assert len(rows) == 10
    for name, sees, rest in rows:
        data = json.loads((ROOT / f"docs/gymnasium/{name}_{'env' if sees == 'env reward' else 'height'}.json")
                          .read_text())
        assert data["settings"] == {"episodes_per_lifetime": 10, "lifetimes": 64, "seed": 0, "reward": data[
            "settings"]["reward"], "hidden": [8, 8], "overrides": []}
        per_episode = data["policies"]["learned"]["per_episode"]
        cells = [c.strip().replace("*", "") for c in rest.split("|")[:3]]
        for cell, summary in zip(cells[:2], (per_episode[0], per_episode[-1]), strict=True):
            lo, hi = summary["ci95"]
            assert cell == f"{summary['mean']:.1f} [{lo:.0f}, {hi:.0f}]", name
        assert cells[2] == f"{np.mean(data['policies']['learned']['returns']):.1f}", name
    data = json.loads((ROOT / "docs/gymnasium/pendulum_balance_env.json").read_text())
    for label, policy in (("no plasticity", "no_plasticity"), ("random policy", "random")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
        first, last = data["policies"][policy]["per_episode"][0], data["policies"][policy]["per_episode"][-1]
        assert f"| {first['mean']:.1f} [{first['ci95'][0]:.0f}, {first['ci95'][1]:.0f}] |" in row
        assert f"| {last['mean']:.1f} [{last['ci95'][0]:.0f}, {last['ci95'][1]:.0f}] |" in row
        assert row.endswith(f"| {np.mean(data['policies'][policy]['returns']):.1f} |")
