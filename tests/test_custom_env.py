"""A new task in Python alone: the cart-pole of examples/custom_env.py (its physics, the backends that run
it, the native kernel generated from its Python) and the example itself, end to end."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
from conftest import NATIVE_MISSING, ROOT, assert_close, lifetime_traces, needs_native, run_script

from metarl import backends, envs
from metarl.backends import lifetime, native
from metarl.config import from_dict
from metarl.core import rng
from metarl.core.genome import GenomeLayout
from metarl.core.rule import STANDARD
from metarl.errors import ConfigError

F64 = torch.float64
EXAMPLE = ROOT / "examples" / "custom_env.py"


@pytest.fixture
def example() -> Iterator[ModuleType]:
    """examples/custom_env.py imported (registering CartPole), and CartPole unregistered afterwards, so that no
    other test sees it (the config reference and the hostile-value cases list every registered env)."""
    spec = importlib.util.spec_from_file_location("custom_env_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        envs.ENVS.pop("CartPole", None)
        sys.modules.pop("custom_env_example", None)


def cart_pole(example: ModuleType, batch: int = 1, **options: Any) -> envs.BatchedEnv:
    options = {"dt": 0.01, "init": "down", "max_speed": None, **options}
    return envs.make("CartPole", batch, dtype=F64, **options)


def random_states(batch: int, seed: int = 0) -> torch.Tensor:
    """States near the centre of the track: x in ±0.5 m, x' in ±0.5 m/s, any pole angle, theta' in ±2 rad/s."""
    u = torch.rand(batch, 4, generator=torch.Generator().manual_seed(seed), dtype=F64) * 2 - 1
    return u * torch.tensor([0.5, 0.5, math.pi, 2.0], dtype=F64)


# ---------------------------------------------------------------------------- physics

def test_power_balance_of_the_equations_of_motion(example: ModuleType) -> None:
    # Along the equations of motion dE/dt = F x' - b_c x'^2 - b_p theta'^2: the force's power less the friction's.
    env = cart_pole(example, 64, params={"cart_mass": [0.5, 2.0], "pole_mass": [0.05, 1.0], "length": [0.3, 1.5],
                                         "cart_friction": [0.0, 0.5], "pole_friction": [0.0, 0.5]})
    state, force = random_states(64).requires_grad_(), torch.linspace(-5, 5, 64, dtype=F64)
    (gradient,) = torch.autograd.grad(env.energy(state).sum(), state)
    de_dt = (gradient * env.derivatives(state, force)).sum(dim=1)
    state = state.detach()
    p, x_dot, theta_dot = env.params, state[:, 1], state[:, 3]
    power = force * x_dot - p["cart_friction"] * x_dot**2 - p["pole_friction"] * theta_dot**2
    assert_close(de_dt, power, 1e-12)


def test_energy_conserved_without_force_or_friction(example: ModuleType) -> None:
    env = cart_pole(example, 8)
    env.state = random_states(8)
    energy = [env.energy()]
    for _ in range(100):  # 1 s of RK4 steps of 0.01 s
        env.step(torch.zeros(8, dtype=F64))
        energy.append(env.energy())
    assert env.state[:, 0].abs().max() < example.TRACK  # no end stop was hit
    assert (env.state[:, 3] - random_states(8)[:, 3]).abs().max() > 0.5  # the pole really moved
    e = torch.stack(energy)
    assert ((e - e[0]).abs() / (1 + e[0].abs())).max() < 1e-7


def test_mirrored_state_and_force_give_the_mirrored_motion(example: ModuleType) -> None:
    env, mirror = cart_pole(example, 16), cart_pole(example, 16)
    env.state, mirror.state = random_states(16), -random_states(16)
    force = torch.linspace(-1, 1, 16, dtype=F64)
    for _ in range(100):
        env.step(force)
        mirror.step(-force)
        assert_close(mirror.state, -env.state, 1e-12)


def test_a_very_heavy_cart_leaves_the_pole_a_pendulum(example: ModuleType) -> None:
    # The cart does not move; the pole with friction b_p swings as metarl's Pendulum with damping b_p / (m l^2).
    mass, length, friction = 0.5, 0.8, 0.2
    env = cart_pole(example, 32, params={"cart_mass": 1e12, "pole_mass": mass, "length": length,
                                         "pole_friction": friction})
    pendulum = envs.make("Pendulum", 32, dtype=F64, params={"mass": mass, "length": length,
                                                            "damping": friction / (mass * length**2)})
    state = random_states(32)
    got = env.derivatives(state, torch.zeros(32, dtype=F64))
    want = pendulum.derivatives(state[:, 2:], torch.zeros(32, dtype=F64))
    assert_close(got[:, 1], torch.zeros(32, dtype=F64), 1e-9)
    assert_close(got[:, 2:], want, 1e-9)


def test_end_stops_observation_reward_and_inits(example: ModuleType) -> None:
    env = cart_pole(example, 2, dt=0.05, reward="height")
    env.state = torch.tensor([[example.TRACK - 0.01, 3.0, 0.0, 0.0], [0.0, 0.0, math.pi, 0.0]], dtype=F64)
    obs, reward = env.step(torch.tensor([1.0, 0.0], dtype=F64))
    assert env.state[0, :2].tolist() == [example.TRACK, 0.0]  # stopped at the end stop
    assert obs.shape == (2, 5) and env.obs_dim == 5
    assert_close(obs[1], torch.tensor([0.0, 0.0, 0.0, -1.0, 0.0], dtype=F64), 1e-9)
    height = 1 - torch.cos(env.state[:, 2])
    assert_close(reward, height - example.POSITION_COST * env.state[:, 0] ** 2, 1e-12)
    assert cart_pole(example, 3).state.abs().max() == 0
    up = cart_pole(example, 3, init="up").state
    assert (up[:, 2].abs() > 3.14).all() and (up[:, [0, 1, 3]] == 0).all()
    drawn = cart_pole(example, 64, init="random").state
    assert (drawn[:, 2].std() > 1) and (drawn[:, 3].abs() <= 0.5).all() and (drawn[:, :2] == 0).all()


# ---------------------------------------------------------------------------- registration and the config

def test_a_registered_env_is_valid_in_a_config_and_checks_what_it_implements(example: ModuleType) -> None:
    config = from_dict(example.CONFIG)
    assert config.env.name == "CartPole" and config.layer_sizes == [5, 8, 1]
    from_dict({"env": {"name": "CartPole", "params": {"cart_friction": 0.0}}})  # friction may be zero
    for env, message in [({"name": "CartPole", "reward": "spin"},
                          "env.reward: CartPole does not implement 'spin'; valid: height, height_delta"),
                         ({"name": "CartPole", "init": "near_up"},
                          "env.init: CartPole does not implement 'near_up'; valid: down, up, random"),
                         ({"name": "CartPole", "params": {"pole_mass": 0}}, "env.params.pole_mass: "),
                         ({"name": "CartPol"}, "valid: Pendulum, DoublePendulum, CartPole")]:
        with pytest.raises(ConfigError) as caught:
            from_dict({"env": env})
        assert message in str(caught.value)
    with pytest.raises(ValueError, match="reward must be one of height, height_delta"):
        envs.make("CartPole", 1, reward="gym")


def test_register_checks_the_class(example: ModuleType) -> None:
    envs.register("CartPole", example.CartPole)  # again: nothing changes
    assert envs.env_class("CartPole") is example.CartPole

    Other = type("Other", (example.CartPole,), {})
    with pytest.raises(ValueError, match="'CartPole' is registered already"):
        envs.register("CartPole", Other)
    with pytest.raises(ValueError, match="the class's name attribute is 'CartPole'"):
        envs.register("Cart", Other)
    with pytest.raises(TypeError, match="subclass of metarl.envs.BatchedEnv"):
        envs.register("Cart", dict)  # type: ignore[arg-type]
    bad = type("Bad", (example.CartPole,), {"name": "Bad", "rewards": ("height", "distance"), "may_be_zero": ("x",)})
    with pytest.raises(ValueError, match="rewards 'distance' unknown .*; may_be_zero names 'x', not a parameter"):
        envs.register("Bad", bad)
    assert "Bad" not in envs.ENVS and "Cart" not in envs.ENVS


# ---------------------------------------------------------------------------- backends

@pytest.mark.slow
def test_spec_and_compiled_steps_agree_on_the_cart_pole(example: ModuleType) -> None:
    config = from_dict({**example.CONFIG, "ga": {**example.CONFIG["ga"], "lifetime_steps": 30}})
    layout = GenomeLayout(config.rule.signal_dim, config.rule.state_dim)
    g = layout.random(8, 0.5, torch.Generator().manual_seed(1))
    keys = rng.individual_keys(0, 0, 0, torch.arange(8))
    want = lifetime_traces(config, g, keys, "spec")
    got = lifetime_traces(config, g, keys, "compiled")
    for a, b in zip(got, want, strict=True):
        assert_close(a, b, 1e-4)
    assert want[2].shape == (8, 30, 4) and want[2][:, :, 0].abs().max() > 0  # the cart moved


@needs_native
def test_the_cart_pole_runs_on_the_native_kernel_generated_from_its_python(example: ModuleType) -> None:
    config = from_dict({**example.CONFIG, "runtime": {"native": None}})
    cpu = torch.device("cpu")
    assert backends.NATIVE.why_not(config, cpu, torch.float32, config.layer_sizes) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fall-back line
        assert backends.select_backend(config, cpu) is backends.NATIVE  # and checked against the spec
    prog = native.program(STANDARD, backends.sample_env(config), 1)
    assert (prog.env, prog.n_state, prog.n_obs, prog.n_params) == ("CartPole", 4, 5, 6)
    # The end stops (a Python override of advance) and the reward's position cost are in the generated code.
    assert "0x1.3333340000000p+1f /* 2.4000000953674316 */" in prog.code and "0.05000000074505806" in prog.code
    layout = GenomeLayout(1, 8)
    g, keys = layout.random(6, 0.5, torch.Generator().manual_seed(1)), rng.individual_keys(3, 0, 0, torch.arange(6))
    states = {}
    for backend in ("spec", "native"):
        states[backend] = torch.zeros(6, 150, 4)
        lifetime.run_lifetimes(g, layout, config, keys, steps=150, backend=backend, states=states[backend])
    assert states["native"][:, :, 0].abs().max() <= example.TRACK  # the end stops hold
    torch.testing.assert_close(states["native"][:, :20], states["spec"][:, :20], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_the_example_evolves_a_rule_on_the_cart_pole() -> None:
    proc = run_script(str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    if NATIVE_MISSING is None:
        assert lines[0] == "native kernel: runs it (generated from the Python above)"
        assert lines[1] == "backend: native"
    generations = [line for line in lines if line.startswith("generation ")]
    assert [line.split(":")[0] for line in generations] == [f"generation {g}" for g in range(4)]
    best = [float(line.split("best fitness ")[1].split()[0]) for line in generations]
    assert all(math.isfinite(b) for b in best) and max(best) > 0  # some rule lifts the pole on average
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr.lower()
