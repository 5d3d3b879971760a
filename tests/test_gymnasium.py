"""The Gymnasium interface (metarl.gym): registration, single and vector envs, Pendulum-v1 reproduced exactly."""

from __future__ import annotations

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

import metarl  # noqa: E402  (registers the ids)


def test_import_metarl_registers_both_ids_gymnasium() -> None:
    assert {"metarl/Pendulum-v0", "metarl/DoublePendulum-v0"} <= set(gymnasium.registry)
    assert metarl.envs.make("Pendulum", 2).state.shape == (2, 2)  # subpackages load on first access


def test_pendulum_v1_reproduced_step_for_step_gymnasium() -> None:
    ref, ours = gymnasium.make("Pendulum-v1"), gymnasium.make("metarl/Pendulum-v0", dynamics="gymnasium")
    assert ours.action_space == ref.action_space and ours.observation_space == ref.observation_space
    rng, seed, worst, episodes = np.random.default_rng(0), 7, 0.0, 0
    obs_ref, _ = ref.reset(seed=seed)
    obs, _ = ours.reset(seed=seed)
    worst = float(np.abs(obs_ref - obs).max())
    for _ in range(1000):
        action = rng.uniform(-2.5, 2.5, size=1).astype(np.float32)  # clipped to [-2, 2] by both
        a, b = ref.step(action), ours.step(action)
        worst = max(worst, float(np.abs(a[0] - b[0]).max()), abs(a[1] - b[1]))
        assert a[2:4] == b[2:4]
        if a[3]:  # truncated after 200 steps; both start again from the same seeded state
            episodes += 1
            seed += 1
            obs_ref, _ = ref.reset(seed=seed)
            obs, _ = ours.reset(seed=seed)
            worst = max(worst, float(np.abs(obs_ref - obs).max()))
    assert episodes == 5 and worst <= 1e-5


def test_vector_env_is_gymnasiums_sync_vector_env_with_autoreset_gymnasium() -> None:
    ref = gymnasium.make_vec("Pendulum-v1", num_envs=4, vectorization_mode="sync")
    ours = gymnasium.make_vec("metarl/Pendulum-v0", num_envs=4, vectorization_mode="vector_entry_point",
                              dynamics="gymnasium")
    assert isinstance(ours, metarl.gym.MetarlVectorEnv) and ours.single_action_space == ref.single_action_space
    assert ours.metadata["autoreset_mode"] == ref.metadata["autoreset_mode"]
    rng = np.random.default_rng(1)
    a_obs, _ = ref.reset(seed=3)
    b_obs, _ = ours.reset(seed=3)
    worst = float(np.abs(a_obs - b_obs).max())
    truncations = 0
    for _ in range(450):
        action = rng.uniform(-2, 2, size=(4, 1)).astype(np.float32)
        a, b = ref.step(action), ours.step(action)
        assert b[0].dtype == np.float32 and b[0].shape == (4, 3) and b[1].shape == (4,)
        worst = max(worst, float(np.abs(a[0] - b[0]).max()), float(np.abs(a[1] - b[1]).max()))
        assert (a[2] == b[2]).all() and (a[3] == b[3]).all()
        truncations += int(b[3].sum())
    assert truncations == 8 and worst <= 1e-5


def test_metarl_dynamics_options_and_seeding_gymnasium() -> None:
    envs = gymnasium.make_vec("metarl/DoublePendulum-v0", num_envs=3, vectorization_mode="vector_entry_point",
                              init="random", max_torque=0.5)
    obs, _ = envs.reset(seed=0)
    again, _ = envs.reset(seed=0)
    other, _ = envs.reset(seed=1)
    assert obs.shape == (3, 6) and np.array_equal(obs, again) and not np.array_equal(obs, other)
    assert envs.single_action_space.low[0] == -1 and envs.single_action_space.high[0] == 1
    one = gymnasium.make("metarl/Pendulum-v0", init="down")
    first, _ = one.reset(seed=0)
    assert np.allclose(first, [0.0, 1.0, 0.0])  # [sin, cos, omega], hanging at rest
    obs, reward, terminated, truncated, _ = one.step(np.array([1.0], dtype=np.float32))
    assert obs[2] > 0 and reward > 0 and not terminated and not truncated
    with pytest.raises(ValueError, match="only for metarl/Pendulum-v0"):
        gymnasium.make("metarl/DoublePendulum-v0", dynamics="gymnasium")


def test_gym_reward_is_pendulum_v1s_reward_step_for_step_gymnasium() -> None:
    # metarl's `gym` reward on Gymnasium's states and actions: th from upright there, from hanging here.
    import torch

    ref = gymnasium.make("Pendulum-v1").unwrapped
    ref.reset(seed=3)
    env = metarl.envs.make("Pendulum", 1, reward="gym", max_torque=2.0, dtype=torch.float64)
    rng, worst = np.random.default_rng(4), 0.0
    for _ in range(300):
        th, thdot = (float(v) for v in ref.state)
        action = rng.uniform(-2.5, 2.5, size=1).astype(np.float32)
        env.state = torch.tensor([[th + np.pi, thdot]], dtype=torch.float64)
        _, reward = env.step(torch.from_numpy(action.astype(np.float64) / 2.0))
        _, want, *_ = ref.step(action)
        worst = max(worst, abs(float(reward[0]) - float(want)))
    assert worst <= 1e-5
    rest = metarl.envs.make("Pendulum", 1, init="down", reward="gym", dtype=torch.float64)
    assert float(rest.step(torch.zeros(1, dtype=torch.float64))[1]) == -np.pi ** 2  # hanging at rest, as Pendulum-v1
