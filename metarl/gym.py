"""Gymnasium interface: ``metarl/Pendulum-v0`` and ``metarl/DoublePendulum-v0``.

    import gymnasium, metarl
    env = gymnasium.make("metarl/Pendulum-v0", init="down", max_torque=2.0)        # one env (numpy)
    envs = gymnasium.make_vec("metarl/Pendulum-v0", num_envs=1024, vectorization_mode="vector_entry_point")
    envs = gymnasium.make_vec("metarl/Pendulum-v0", num_envs=8, vectorization_mode="vector_entry_point",
                              dynamics="gymnasium")                                   # Pendulum-v1 exactly

Both are backed by one batched torch environment (`metarl.envs`: a `BatchedEnv` and its pure
``transition``); the vector env steps all sub-environments in one call. Options: metarl's env
options (``dt``, ``integrator``, ``reward``, ``init``, ``max_torque``, ``max_speed``, ``action_sign``,
``goal``, physical parameters by name: ``length=1.2``), or ``dynamics="gymnasium"`` for Gymnasium's
Pendulum-v1 (its equations, integrator, limits, cost and observation; `metarl.envs.pendulum_v1`).
Actions are in [-1, 1] (times ``max_torque``) for metarl's dynamics, torques in [-2, 2] N·m for
Gymnasium's. Episodes are never terminated, truncated after 200 steps (``max_episode_steps``); the
vector env resets a finished sub-environment on the next step (Gymnasium's ``NextStep`` autoreset:
that step returns its first observation, reward 0). Sub-environment ``i`` of ``reset(seed=s)`` is
seeded with ``s + i``, as Gymnasium's ``SyncVectorEnv`` seeds its copies. Randomness (random
starts, parameter ranges, random signs) comes from each sub-environment's numpy generator.
"""

from __future__ import annotations

from typing import Any

ENV_IDS = {"metarl/Pendulum-v0": "Pendulum", "metarl/DoublePendulum-v0": "DoublePendulum"}
MAX_EPISODE_STEPS = 200
DYNAMICS = ("metarl", "gymnasium")


def register() -> None:
    """Register the two ids with gymnasium (once; nothing is imported but gymnasium's registry)."""
    from gymnasium.envs.registration import register as gym_register
    from gymnasium.envs.registration import registry

    for env_id, name in ENV_IDS.items():
        if env_id not in registry:
            gym_register(id=env_id, entry_point="metarl.gym:MetarlEnv", vector_entry_point="metarl.gym:MetarlVectorEnv",
                         max_episode_steps=MAX_EPISODE_STEPS, kwargs={"env": name})


class _Batch:
    """``n`` sub-environments as one batched torch env, in float64; numpy in and out."""

    def __init__(self, n: int, env: str, dynamics: str, options: dict[str, Any]) -> None:
        import numpy as np
        import torch

        from . import envs
        from .envs.base import RANDOM_INITS, option_names
        from .envs.pendulum_v1 import PendulumV1

        if dynamics not in DYNAMICS:
            raise ValueError(f"dynamics must be one of {', '.join(DYNAMICS)}, got {dynamics!r}")
        self.n, self.dynamics, self.torch, self.np = n, dynamics, torch, np
        if dynamics == "gymnasium":
            if env != "Pendulum":
                raise ValueError("dynamics='gymnasium' is Gymnasium's Pendulum-v1: only for metarl/Pendulum-v0")
            unknown = set(options) - {"g", "gravity"}
            if unknown:
                raise ValueError(f"dynamics='gymnasium' takes only g (gravity), got {sorted(unknown)}")
            self.env = PendulumV1(n, options.get("g", options.get("gravity", 10.0)))
            self.low, self.high = -2.0, 2.0
        else:
            sim = {k: v for k, v in options.items() if k in option_names()}
            if sim.get("episode_steps") is not None or sim.get("goal_switch") is not None:
                raise ValueError("episode_steps and goal_switch are lifetime options; the Gymnasium env runs episodes")
            if sim.get("obs_noise"):
                raise ValueError("obs_noise is a lifetime option (the actor's sensor noise); wrap the Gymnasium env "
                                 "for noisy observations")
            self.random_init = sim.get("init", "up") in RANDOM_INITS
            self.cls = envs.env_class(env)
            self.options = options
            self.env = self._make([np.random.default_rng(0)] * n)
            self.low, self.high = -1.0, 1.0
        self.obs_dim = self.env.obs_dim
        self.state = self.env.state.clone()
        self.t = np.zeros(n, dtype=np.int64)

    def _make(self, rngs: list) -> Any:
        """metarl's env for ``n`` sub-environments whose random draws come from ``rngs`` (one per row)."""
        from . import envs

        def sampler(count: int) -> Any:
            return self.torch.from_numpy(self.np.stack([rng.random(count) for rng in rngs]))

        return envs.make(self.cls.name, self.n, dtype=self.torch.float64, sampler=sampler, **dict(self.options))

    def reset(self, rows: Any, rngs: list) -> None:
        """New episodes for the sub-environments ``rows`` (bool mask), drawn from their generators."""
        mask = self.torch.from_numpy(rows)
        if self.dynamics == "gymnasium":
            draws = self.np.zeros((self.n, 2))
            for i in self.np.flatnonzero(rows):
                draws[i] = rngs[i].uniform(low=-self.np.array([self.np.pi, 1.0]), high=self.np.array([self.np.pi, 1.0]))
            self.state[mask] = self.torch.from_numpy(draws)[mask]
        else:
            fresh = self._make(rngs)
            self.state[mask] = fresh.state[mask]
            self.env.params = {k: self.torch.where(mask, fresh.params[k], v) for k, v in self.env.params.items()}
            self.env.action_sign = self.torch.where(mask, fresh.action_sign, self.env.action_sign)
            self.env.goal = self.torch.where(mask, fresh.goal, self.env.goal)
        self.t[rows] = 0

    def step(self, action: Any) -> tuple[Any, Any]:
        from .envs.base import EnvState

        a = self.torch.as_tensor(self.np.asarray(action, dtype=self.np.float64).reshape(self.n))
        prev = None
        if self.dynamics != "gymnasium":  # no previous height at an episode's first step (NaN: height_delta's 0)
            prev = self.torch.where(self.torch.from_numpy(self.t == 0), float("nan"), self.env.height(self.state))
        (state, _, _), reward = self.env.transition(EnvState(self.state, prev, self.torch.from_numpy(self.t)), a)
        self.state = state
        self.t += 1
        return self.observe(), reward.numpy().astype(self.np.float64)

    def observe(self) -> Any:
        return self.env.observation(self.state).numpy().astype(self.np.float32)


def _spaces(batch: _Batch) -> tuple[Any, Any]:
    import numpy as np
    from gymnasium import spaces

    if batch.dynamics == "gymnasium":
        high = np.array([1.0, 1.0, 8.0], dtype=np.float32)
        obs = spaces.Box(low=-high, high=high, dtype=np.float32)
    else:
        obs = spaces.Box(low=-np.inf, high=np.inf, shape=(batch.obs_dim,), dtype=np.float32)
    return obs, spaces.Box(low=batch.low, high=batch.high, shape=(1,), dtype=np.float32)


def _env_base() -> type:
    import gymnasium

    return gymnasium.Env


class MetarlEnv(_env_base()):  # type: ignore[misc]  # gymnasium is optional: its base class is found at import
    """One environment (``gymnasium.make``); gymnasium's TimeLimit truncates it after 200 steps."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env: str = "Pendulum", dynamics: str = "metarl", **options: Any) -> None:
        self._batch = _Batch(1, env, dynamics, options)
        self.observation_space, self.action_space = _spaces(self._batch)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        import numpy as np

        super().reset(seed=seed)
        self._batch.reset(np.ones(1, dtype=bool), [self.np_random])
        return self._batch.observe()[0], {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward = self._batch.step(action)
        return obs[0], float(reward[0]), False, False, {}


def _vector_base() -> type:
    from gymnasium.vector import VectorEnv

    return VectorEnv


class MetarlVectorEnv(_vector_base()):  # type: ignore[misc]
    """``num_envs`` environments in one batch (``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``)."""

    def __init__(self, num_envs: int = 1, env: str = "Pendulum", dynamics: str = "metarl",
                 max_episode_steps: int | None = MAX_EPISODE_STEPS, **options: Any) -> None:
        import numpy as np
        from gymnasium.vector import AutoresetMode
        from gymnasium.vector.utils import batch_space

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self._batch = _Batch(num_envs, env, dynamics, options)
        self.single_observation_space, self.single_action_space = _spaces(self._batch)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._rngs: list | None = None
        self._autoreset = np.zeros(num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict | None = None) -> tuple[Any, dict]:
        import numpy as np
        from gymnasium.utils import seeding

        if seed is None or self._rngs is None or isinstance(seed, (int, list)):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)] if not isinstance(seed, list) \
                else seed
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: {len(seeds)} seeds for {self.num_envs} environments")
            self._rngs = [seeding.np_random(s)[0] for s in seeds]
        self._batch.reset(np.ones(self.num_envs, dtype=bool), self._rngs)
        self._autoreset[:] = False
        return self._batch.observe(), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        import numpy as np

        if self._rngs is None:
            raise RuntimeError("call reset() before step()")
        restart = self._autoreset.copy()
        obs, reward = self._batch.step(actions)
        if restart.any():
            self._batch.reset(restart, self._rngs)
            obs = np.where(restart[:, None], self._batch.observe(), obs)
            reward = np.where(restart, 0.0, reward)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = terminated.copy()
        if self.max_episode_steps:
            truncated = ~restart & (self._batch.t >= self.max_episode_steps)
        self._autoreset = terminated | truncated
        return obs, reward, terminated, truncated, {}
