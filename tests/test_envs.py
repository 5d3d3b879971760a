"""Physics of the batched pendulums: invariants, a reference derivation, options and batching."""

from __future__ import annotations

import math

import pytest
import torch

from metarl import envs
from metarl.envs.base import DOWN_PENALTY, NEAR_UP_ANGLE, NEAR_UP_SPEED, RANDOM_SPEED, wrap_angle

F64 = torch.float64
G = 9.81


def zeros(env: envs.BatchedEnv) -> torch.Tensor:
    return torch.zeros(env.batch_size, dtype=env.dtype)


def run(env: envs.BatchedEnv, steps: int, action: float = 0.0) -> torch.Tensor:
    """Step ``env`` with a constant action; the trajectory ``(steps + 1, B, 2 * links)``."""
    states = [env.state]
    for _ in range(steps):
        env.step(torch.full((env.batch_size,), action, dtype=env.dtype))
        states.append(env.state)
    return torch.stack(states)


def periods(theta: torch.Tensor, dt: float) -> torch.Tensor:
    """Mean period per batch element of ``theta (T, B)`` from upward zero crossings (linearly interpolated)."""
    out = []
    for column in theta.T:
        a, b = column[:-1], column[1:]
        idx = torch.nonzero((a < 0) & (b >= 0)).flatten()
        times = (idx + a[idx] / (a[idx] - b[idx])) * dt
        assert len(times) >= 3, "too few oscillations to measure a period"
        out.append((times[-1] - times[0]) / (len(times) - 1))
    return torch.stack(out)


# ---------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("name, state", [("Pendulum", [1.0, 0.0]), ("DoublePendulum", [1.0, 0.0, 1.0, 0.0])])
def test_energy_conserved_without_damping_or_torque(name: str, state: list[float]) -> None:
    damping = {"damping": 0.0}
    env = envs.make(name, 1, dtype=F64, dt=0.01, init="down", max_speed=None, params=damping)
    env.state = torch.tensor([state], dtype=F64)
    e0 = env.energy()
    trajectory = run(env, 1000)
    energy = torch.stack([env.energy(s) for s in trajectory])
    assert trajectory[:, 0, 1].abs().max() > 0.5  # it really moved
    assert ((energy - e0).abs() / e0.abs()).max() < 1e-6


def test_energy_decreases_with_damping() -> None:
    env = envs.make("DoublePendulum", 1, dtype=F64, dt=0.01, init="down", params={"damping": 0.3})
    env.state = torch.tensor([[1.0, 0.0, -0.5, 0.3]], dtype=F64)
    energy = torch.stack([env.energy(s) for s in run(env, 300)])
    assert energy[-1] < energy[0] - 1.0


def test_small_angle_period_matches_theory() -> None:
    length, dt = 1.3, 0.01
    env = envs.make("Pendulum", 1, dtype=F64, dt=dt, init="down", max_speed=None, length=length, damping=0.0)
    env.state = torch.tensor([[0.01, 0.0]], dtype=F64)
    measured = periods(run(env, 1500)[:, :, 0], dt)
    expected = 2 * math.pi * math.sqrt(length / G)
    assert abs(measured.item() / expected - 1) < 0.005


def test_positive_torque_accelerates_theta_positively_from_rest() -> None:
    for name in envs.ENVS:
        env = envs.make(name, 1, dtype=F64, init="down")
        env.step(torch.ones(1, dtype=F64))
        theta1, omega1 = env.state[0, 0].item(), env.state[0, 1].item()
        assert theta1 > 0 and omega1 > 0, name


# ---------------------------------------------------------------------------- parameters and batching

def test_per_element_lengths_give_per_element_periods() -> None:
    dt = 0.01
    lengths = torch.tensor([0.5, 2.0], dtype=F64)
    env = envs.make("Pendulum", 2, dtype=F64, dt=dt, init="down", max_speed=None, length=lengths, damping=0.0)
    env.state = torch.tensor([[0.05, 0.0], [0.05, 0.0]], dtype=F64)
    measured = periods(run(env, 1200)[:, :, 0], dt)
    assert torch.allclose(measured, 2 * math.pi * torch.sqrt(lengths / G), rtol=0.005)


def test_parameter_ranges_are_sampled_per_element_within_bounds() -> None:
    env = envs.make("DoublePendulum", 50, length1=[0.5, 1.5], mass2=(2.0, 3.0))
    length1, mass2 = env.params["length1"], env.params["mass2"]
    assert length1.shape == (50,) and len(torch.unique(length1)) == 50
    assert ((length1 >= 0.5) & (length1 <= 1.5)).all() and ((mass2 >= 2.0) & (mass2 <= 3.0)).all()
    assert (env.params["length2"] == 1.0).all()


def test_batch_elements_are_independent() -> None:
    gen = torch.Generator().manual_seed(1)
    batch = 5
    for name, cls in envs.ENVS.items():
        params = {k: 0.5 + torch.rand(batch, generator=gen, dtype=F64) for k in cls.param_defaults}
        states = (torch.rand(batch, 2 * cls.links, generator=gen, dtype=F64) * 2 - 1) * 3
        actions = torch.rand(20, batch, generator=gen, dtype=F64) * 2 - 1
        together = envs.make(name, batch, dtype=F64, params=params)
        together.state = states
        for a in actions:
            together.step(a)
        for i in range(batch):
            alone = envs.make(name, 1, dtype=F64, params={k: v[i].item() for k, v in params.items()})
            alone.state = states[i : i + 1]
            for a in actions:
                alone.step(a[i : i + 1])
            assert torch.allclose(alone.state[0], together.state[i], rtol=0, atol=1e-12), (name, i)


# ---------------------------------------------------------------------------- options

def test_euler_and_rk4_both_run_and_agree_for_small_steps() -> None:
    finals = {}
    for integrator in ("euler", "rk4"):
        env = envs.make("DoublePendulum", 1, dtype=F64, dt=0.001, integrator=integrator, init="down")
        env.state = torch.tensor([[0.5, 0.0, 0.2, 0.0]], dtype=F64)
        finals[integrator] = run(env, 300, action=0.3)[-1]
    difference = (finals["euler"] - finals["rk4"]).abs().max()
    assert 0 < difference < 0.01  # different integrators, same physics


def test_angles_stay_wrapped_and_speeds_clamped() -> None:
    for name in envs.ENVS:
        env = envs.make(name, 8, dt=0.05, init="random", max_torque=50.0, max_speed=4.0)
        trajectory = run(env, 200, action=1.0)
        angles, speeds = trajectory[..., 0::2], trajectory[..., 1::2]
        assert ((angles >= -math.pi) & (angles < math.pi)).all()
        assert speeds.abs().max() <= 4.0
        assert speeds.abs().max() == 4.0  # the clamp was actually reached
        assert angles.max() - angles.min() > 6.0  # it went round, so wrapping happened


def test_wrap_maps_whole_turns_to_the_same_angle() -> None:
    env = envs.make("Pendulum", 3, dtype=F64, init="down")
    env.state = torch.tensor([[math.pi, 0.0], [-math.pi, 0.0], [7.0, 0.0]], dtype=F64)
    env.step(zeros(env))
    theta = env.state[:, 0]
    assert torch.allclose(theta[:2], torch.full((2,), -math.pi, dtype=F64), atol=1e-3)
    assert abs(theta[2].item() - (7.0 - 2 * math.pi)) < 0.05


def test_height_reward_is_zero_hanging_and_two_per_link_upright() -> None:
    for name, cls in envs.ENVS.items():
        env = envs.make(name, 1, dtype=F64, init="down")
        _, reward = env.step(zeros(env))
        assert reward.item() == 0.0
        upright = torch.zeros(1, 2 * cls.links, dtype=F64)
        upright[:, 0::2] = math.pi
        assert env.height(upright).item() == pytest.approx(2.0 * cls.links)
        env = envs.make(name, 1, dtype=F64)  # init up (default): starts upright
        _, reward = env.step(zeros(env))
        assert reward.item() == pytest.approx(2.0 * cls.links, abs=1e-6)


def test_height_delta_is_zero_first_then_penalises_decreases() -> None:
    env = envs.make("Pendulum", 1, dtype=F64, reward="height_delta", init="down", max_speed=None, damping=0.0)
    env.state = torch.tensor([[0.0, 4.0]], dtype=F64)  # swings up, then back down
    _, first = env.step(zeros(env))
    assert first.item() == 0.0
    rises = falls = 0
    for _ in range(40):
        before = env.height().clone()
        _, reward = env.step(zeros(env))
        delta = (env.height() - before).item()
        expected = delta if delta >= 0 else DOWN_PENALTY * delta
        assert reward.item() == pytest.approx(expected, abs=1e-12)
        rises, falls = rises + (delta > 0), falls + (delta < 0)
    assert rises > 0 and falls > 0
    env.state = env.state  # assigning a state restarts the delta
    assert env.step(zeros(env))[1].item() == 0.0


def test_inits() -> None:
    up = envs.make("DoublePendulum", 2, dtype=F64)
    assert torch.allclose(up.state[:, 0::2].abs(), torch.full((2, 2), math.pi, dtype=F64), atol=1e-3)
    assert (up.state[:, 1::2] == 0).all()
    down = envs.make("DoublePendulum", 2, dtype=F64, init="down")
    assert (down.state == 0).all()


def test_random_init_is_reproducible_from_the_generator() -> None:
    def state(seed: int) -> torch.Tensor:
        return envs.make("DoublePendulum", 16, init="random", generator=torch.Generator().manual_seed(seed)).state

    a, b, c = state(3), state(3), state(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0::2].abs() <= math.pi).all() and (a[:, 1::2].abs() <= RANDOM_SPEED).all()
    assert a[:, 0::2].std() > 1.0  # spread over the circle, not all at one angle


def test_near_up_init_stays_within_its_box_around_upright() -> None:
    env = envs.make("DoublePendulum", 256, dtype=F64, init="near_up", generator=torch.Generator().manual_seed(5))
    offset = wrap_angle(env.state[:, 0::2] - math.pi)
    assert (offset.abs() <= NEAR_UP_ANGLE + 1e-12).all() and offset.std() > NEAR_UP_ANGLE / 3
    assert (env.state[:, 1::2].abs() <= NEAR_UP_SPEED).all() and env.state[:, 1::2].std() > NEAR_UP_SPEED / 3
    again = envs.make("DoublePendulum", 256, dtype=F64, init="near_up", generator=torch.Generator().manual_seed(5))
    assert torch.equal(env.state, again.state)


def test_unknown_env_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="Pendulum, DoublePendulum"):
        envs.make("Cartpole", 1)


def test_observation_layout_and_action_shapes() -> None:
    env = envs.make("DoublePendulum", 3, dtype=F64, init="random")
    t1, w1, t2, w2 = env.state.unbind(1)
    expected = torch.stack((t1.sin(), t1.cos(), w1, t2.sin(), t2.cos(), w2), dim=1)
    assert torch.equal(env.observe(), expected) and env.obs_dim == 6 and env.action_dim == 1
    obs, reward = env.step(torch.zeros(3, 1, dtype=F64))
    assert obs.shape == (3, 6) and reward.shape == (3,)
    with pytest.raises(ValueError, match="action must have shape"):
        env.step(torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype: torch.dtype) -> None:
    for name in envs.ENVS:
        env = envs.make(name, 4, dtype=dtype, init="random")
        reference = envs.make(name, 4, dtype=F64, init="random")
        obs, reward = env.step(torch.full((4,), 0.5, dtype=dtype))
        reference.step(torch.full((4,), 0.5, dtype=F64))
        assert env.state.dtype == obs.dtype == reward.dtype == dtype
        assert torch.allclose(env.state.double(), reference.state, atol=1e-5)


@pytest.mark.slow
def test_large_batch() -> None:
    for name in envs.ENVS:
        env = envs.make(name, 100_000, init="random", gravity=[9.0, 10.0])
        for _ in range(3):
            obs, reward = env.step(torch.rand(100_000) * 2 - 1)
        assert obs.shape == (100_000, env.obs_dim) and torch.isfinite(obs).all() and torch.isfinite(reward).all()


# ---------------------------------------------------------------------------- reference derivation

def lagrangian_accelerations(q: torch.Tensor, qd: torch.Tensor, torque: float, lengths: torch.Tensor,
                             masses: torch.Tensor, g: float, damping: float) -> torch.Tensor:
    """Angular accelerations of a chain of point masses, from its Lagrangian by automatic differentiation.

    Independent of the hand-derived equations: only the mass positions are written down;
    velocities, the mass matrix and the Coriolis terms all come from autograd.
    ``q, qd: (N,)`` absolute angles from the downward vertical and their rates.
    """
    from torch.func import grad, hessian, jacrev, jvp

    def positions(angles: torch.Tensor) -> torch.Tensor:
        # (N, 2) Cartesian positions of the masses, y up, pivot at the origin.
        steps = torch.stack((lengths * torch.sin(angles), -lengths * torch.cos(angles)), dim=1)
        return torch.cumsum(steps, dim=0)

    def lagrangian(angles: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
        pos, vel = jvp(positions, (angles,), (rates,))
        kinetic = 0.5 * (masses * (vel**2).sum(dim=1)).sum()
        potential = (masses * g * pos[:, 1]).sum()
        return kinetic - potential

    mass_matrix = hessian(lagrangian, argnums=1)(q, qd)
    mixed = jacrev(grad(lagrangian, argnums=1), argnums=0)(q, qd)  # d/dq of dL/dqd
    generalised = torch.zeros_like(q)
    generalised[0] = torque  # the motor sits at the base and turns the first link
    rhs = generalised + grad(lagrangian, argnums=0)(q, qd) - mixed @ qd
    return torch.linalg.solve(mass_matrix, rhs) - damping * qd


@pytest.mark.parametrize("name", list(envs.ENVS))
@pytest.mark.slow
def test_derivatives_match_autograd_lagrangian(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    cls = envs.ENVS[name]
    batch = 8
    params = {k: 0.3 + 1.5 * torch.rand(batch, generator=gen, dtype=F64) for k in cls.param_defaults}
    params["gravity"] = 9.81 * params["gravity"]
    env = envs.make(name, batch, dtype=F64, params=params)
    state = torch.empty(batch, 2 * cls.links, dtype=F64)
    state[:, 0::2] = (torch.rand(batch, cls.links, generator=gen, dtype=F64) * 2 - 1) * math.pi
    state[:, 1::2] = (torch.rand(batch, cls.links, generator=gen, dtype=F64) * 2 - 1) * 5
    torque = (torch.rand(batch, generator=gen, dtype=F64) * 2 - 1) * 3
    ours = env.derivatives(state, torque)
    suffix = [""] if cls.links == 1 else [str(i + 1) for i in range(cls.links)]
    for i in range(batch):
        lengths = torch.stack([params[f"length{s}"][i] for s in suffix])
        masses = torch.stack([params[f"mass{s}"][i] for s in suffix])
        expected = lagrangian_accelerations(state[i, 0::2], state[i, 1::2], torque[i].item(), lengths, masses,
                                            params["gravity"][i].item(), params["damping"][i].item())
        assert torch.equal(ours[i, 0::2], state[i, 1::2])
        assert torch.allclose(ours[i, 1::2], expected, rtol=1e-6, atol=1e-6), (i, ours[i], expected)
