"""The environment protocol (`BatchedEnv`) and the machinery the pendulums share.

A subclass declares its parameters and the equations of motion (`derivatives`); this base
class integrates them (RK4 or Euler), wraps angles, clamps speeds and computes rewards. The
pendulum defaults (angles per link, ``[sin, cos, omega]`` observations, the ``up`` and
``random`` inits, the height) are methods a new task overrides: docs/extending.md, "Add an environment". Every
tensor has a leading batch dimension ``B`` (one environment per individual of the population).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch

INTEGRATORS = ("rk4", "euler")
REWARDS = ("height", "height_delta", "spin", "gym")
INITS = ("up", "down", "random", "near_up")
RANDOM_INITS = ("random", "near_up")  # inits drawn per lifetime (and per episode) from uniform numbers
ACTION_SIGNS = (1, -1, "random")
GOALS = (1, -1, "random")

# The original project starts almost exactly upright so that the pendulum falls.
UP_OFFSET = 1e-5
# `random` init: angular speeds uniform in [-RANDOM_SPEED, RANDOM_SPEED].
RANDOM_SPEED = 0.5
# `near_up` init: angles uniform within NEAR_UP_ANGLE (rad) of upright, speeds within
# NEAR_UP_SPEED (rad/s); inside the region the reference controller catches with max_torque 1.
NEAR_UP_ANGLE = 0.05
NEAR_UP_SPEED = 0.05
# Observation entries per link: sin theta, cos theta, omega.
OBS_PER_LINK = 3
# `height_delta`: decreases of the height are penalised by this factor.
DOWN_PENALTY = 1.1
# `gym`: Gymnasium Pendulum-v1's cost, -(angle from upright^2 + GYM_SPEED_COST omega^2 + GYM_TORQUE_COST torque^2),
# summed over links (the torque term once), of the state at the start of the step and the step's torque (as
# Gymnasium scores it): 0 balanced, -pi^2 hanging at rest, worse spinning fast.
GYM_SPEED_COST = 0.1
GYM_TORQUE_COST = 0.001

# Widest `goal_switch` range, last - first (the native kernel compares a lifetime's step with t in float32).
MAX_SWITCH_SPAN = 2**24

# `learning_rate_dt`: the rule's rate is learning_rate * dt / REFERENCE_DT (a rate per REFERENCE_DT seconds).
REFERENCE_DT = 0.05

ParamValue = float | int | list | tuple | torch.Tensor
Sampler = Callable[[int], torch.Tensor]  # count -> uniform numbers (B, count) in [0, 1)


@dataclass(frozen=True)
class EnvOptions:
    """Simulation options shared by all environments: the one declaration of these config `env` keys
    and their defaults (`metarl.config.EnvConfig` inherits them and adds ``name`` and ``params``)."""

    # Integration step (s); or [min, max], drawn per individual (after every other env draw, so that the
    # other draws of a lifetime are those of a scalar dt).
    dt: float | list[float] = 0.05
    integrator: str = "rk4"
    reward: str = "height"
    init: str = "up"
    max_torque: float = 1.0
    max_speed: float | None = 10.0
    # Direction of the motor: 1, -1, or "random" (±1 per batch element). A random sign
    # makes every fixed controller useless on average: a rule must find the direction.
    action_sign: int | str = 1
    # Hidden goal: the reward is multiplied by this sign (1, -1, or "random" per batch element).
    # The observation does not show it, so only the reward tells the actor what is wanted:
    # with reward `height`, -1 means "stay down"; with `spin`, it is the wanted direction.
    goal: int | str = 1
    # Reversal: the goal's sign flips from this step number on (0-based; None = never); or [first, last], a step
    # drawn per lifetime, uniform over the integers first..last (after every other env draw, the reversal's
    # own included), so that a rule cannot learn the step by counting.
    goal_switch: int | list[int] | None = None
    # Share of lifetimes whose goal flips at goal_switch, drawn per lifetime (after every other env draw, dt's
    # included); the others keep their goal. 1 = every lifetime: a rule trained on a mix must both settle
    # and follow a reversal.
    goal_switch_probability: float = 1.0
    # Episodes: every this many steps the env goes back to a start state (drawn again for random
    # inits) while the actor and the rule keep what they learned (`metarl.core.step.reset_episode`).
    # None = the lifetime is one episode.
    episode_steps: int | None = None
    # Sensor noise: Gaussian noise of this std on what the actor and the rule observe (and the reference
    # controller, `metarl.core.step.observe`), from each individual's own stream (`metarl.core.rng.STREAM_OBS_NOISE`).
    obs_noise: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.dt_range
        if not (low > 0 and high >= low):
            raise ValueError(f"dt must be > 0 (a range [min, max] with 0 < min <= max), got {self.dt}")
        if not self.obs_noise >= 0:
            raise ValueError(f"obs_noise must be >= 0, got {self.obs_noise}")
        for name, value, allowed in (("integrator", self.integrator, INTEGRATORS),
                                     ("reward", self.reward, REWARDS),
                                     ("init", self.init, INITS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.action_sign not in ACTION_SIGNS:
            raise ValueError(f"action_sign must be 1, -1 or 'random', got {self.action_sign!r}")
        if self.goal not in GOALS:
            raise ValueError(f"goal must be 1, -1 or 'random', got {self.goal!r}")
        if self.episode_steps is not None and self.episode_steps < 1:
            raise ValueError(f"episode_steps must be >= 1 or None, got {self.episode_steps}")
        if self.goal_switch is not None:
            first, last = self.switch_range
            if not 0 <= first <= last <= first + MAX_SWITCH_SPAN:
                raise ValueError(f"goal_switch must be >= 0, a range [first, last] with 0 <= first <= last <= first "
                                 f"+ 2^24, or None, got {self.goal_switch}")
        if not 0.0 <= self.goal_switch_probability <= 1.0:
            raise ValueError(f"goal_switch_probability must be in [0, 1], got {self.goal_switch_probability}")
        if self.max_speed is not None and not self.max_speed > 0:
            raise ValueError(f"max_speed must be > 0 or None, got {self.max_speed}")

    @property
    def dt_range(self) -> tuple[float, float]:
        """``(min, max)`` of ``dt`` (equal for a scalar)."""
        if isinstance(self.dt, (list, tuple)):
            if len(self.dt) != 2:
                raise ValueError(f"dt: a range must be [min, max], got {list(self.dt)}")
            return float(self.dt[0]), float(self.dt[1])
        return float(self.dt), float(self.dt)

    @property
    def switch_range(self) -> tuple[int, int]:
        """``(first, last)`` of ``goal_switch`` (equal for a single step; ``goal_switch`` must be set)."""
        switch = self.goal_switch
        if switch is None:
            raise ValueError("goal_switch is None: no reversal")
        if isinstance(switch, (list, tuple)):
            if len(switch) != 2:
                raise ValueError(f"goal_switch: a range must be [first, last], got {list(switch)}")
            return int(switch[0]), int(switch[1])
        return int(switch), int(switch)

    @property
    def switch_step_drawn(self) -> bool:
        """Whether each lifetime draws the step its goal flips at (``goal_switch`` a range)."""
        return isinstance(self.goal_switch, (list, tuple))

    @property
    def switch_drawn(self) -> bool:
        """Whether each lifetime draws if its goal flips (a reversal with a probability below 1)."""
        return self.goal_switch is not None and self.goal_switch_probability < 1.0

    @property
    def mean_dt(self) -> float:
        """The middle of ``dt``'s range (``dt`` itself when a scalar): for frame rates and durations."""
        low, high = self.dt_range
        return 0.5 * (low + high)


class EnvState(NamedTuple):
    """What changes from step to step (as gymnax's ``EnvState``); the env object holds the parameters."""

    state: torch.Tensor  # (B, state_size) [q1, v1, q2, v2, ...]: coordinate, velocity pairs
    prev_height: torch.Tensor | None  # (B,) height after the last step; None (or NaN) before the first
    t: int | torch.Tensor  # the step number (0-based)


def option_names() -> tuple[str, ...]:
    """Names of the simulation options."""
    return tuple(f.name for f in fields(EnvOptions))


def resolve_params(defaults: Mapping[str, float], given: Mapping[str, ParamValue], batch_size: int,
                   sampler: Sampler, *, device: torch.device | str, dtype: torch.dtype
                   ) -> dict[str, torch.Tensor]:
    """Turn scalars, ``[min, max]`` ranges and ``(B,)`` tensors into ``(B,)`` tensors.

    Ranges are drawn from ``sampler`` in the order of ``defaults`` (one column each), so
    the same sampler gives the same parameters whatever subset of them is randomised.
    """
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(defaults)}")
    ranged = [k for k in defaults if _is_range(given.get(k))]
    u = sampler(len(ranged)).to(device=device, dtype=dtype) if ranged else None
    out = {}
    for name, default in defaults.items():
        value = given.get(name, default)
        if isinstance(value, torch.Tensor):
            out[name] = value.to(device=device, dtype=dtype).expand(batch_size).clone()
        elif isinstance(value, (list, tuple)):  # a range (`_is_range`): in ``ranged``, so ``u`` was drawn
            assert u is not None
            lo, hi = float(value[0]), float(value[1])
            if hi < lo:
                raise ValueError(f"parameter {name}: range [min, max] has min > max: {list(value)}")
            out[name] = lo + (hi - lo) * u[:, ranged.index(name)]
        else:
            out[name] = torch.full((batch_size,), float(value), device=device, dtype=dtype)
    return out


def _is_range(value: object) -> bool:
    return isinstance(value, (list, tuple))


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Wrap angles to [-pi, pi)."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


class BatchedEnv:
    """A batch of independent environments integrated together (the environment protocol).

    ``state``: ``(B, state_size())`` as coordinate, velocity pairs ``[q1, v1, q2, v2, ...]``; for the
    pendulums ``[theta1, omega1, theta2, omega2, ...]``. A subclass sets the class attributes below,
    `derivatives`, and overrides the pendulum defaults it does not share (docs/extending.md, "Add an environment");
    `metarl.envs.register` makes it known by ``name``.
    """

    name: str = ""  # the config's env.name
    links: int = 1  # pendulum rods (the default state, observation and height are per link)
    param_defaults: Mapping[str, float] = {}  # physical parameters and their defaults, in kernel order
    may_be_zero: tuple[str, ...] = ()  # parameters that may be 0 (friction); the others must be > 0
    rewards: tuple[str, ...] = REWARDS  # the env.reward kinds it computes
    inits: tuple[str, ...] = INITS  # the env.init kinds it starts from

    def __init__(self, batch_size: int, params: Mapping[str, torch.Tensor], options: EnvOptions,
                 *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 init_uniform: torch.Tensor | None = None, sign_uniform: torch.Tensor | None = None,
                 goal_uniform: torch.Tensor | None = None, dt_uniform: torch.Tensor | None = None,
                 switch_uniform: torch.Tensor | None = None, switch_step_uniform: torch.Tensor | None = None
                 ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for option, value, allowed in (("reward", options.reward, self.rewards), ("init", options.init, self.inits)):
            if value not in allowed:
                raise ValueError(f"{self.name}: {option} must be one of {', '.join(allowed)}, got {value!r}")
        self.batch_size = batch_size
        self.options = options
        self.device = torch.device(device)
        self.dtype = dtype
        self.params = dict(params)
        self._prev_height: torch.Tensor | None = None
        self.state = self.initial_state(init_uniform)
        self.action_sign = self._sign("action_sign", sign_uniform)
        self.goal = self._sign("goal", goal_uniform)
        self.dt = self._dt(dt_uniform)
        self.switch_sign = self._switch_sign(switch_uniform)
        self.switch_step = self._switch_step(switch_step_uniform)

    @classmethod
    def state_size(cls) -> int:
        """Entries of the physical state: a coordinate and its velocity per link."""
        return 2 * cls.links

    @classmethod
    def observation_size(cls) -> int:
        """Observation size of this environment: ``[sin, cos, omega]`` per link."""
        return OBS_PER_LINK * cls.links

    @property
    def obs_dim(self) -> int:
        """Observation size: ``[sin, cos, omega]`` per link."""
        return self.observation_size()

    @property
    def action_dim(self) -> int:
        """Action size (one motor torque)."""
        return 1

    @property
    def state(self) -> torch.Tensor:
        """Physical state ``(B, state_size())``."""
        return self._state

    @state.setter
    def state(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value, device=self.device, dtype=self.dtype)
        expected = (self.batch_size, self.state_size())
        if value.shape != expected:
            raise ValueError(f"state must have shape {expected}, got {tuple(value.shape)}")
        self._state = value.clone()
        self._prev_height = None
        self.t = 0

    @property
    def prev_height(self) -> torch.Tensor | None:
        """Height ``(B,)`` after the last step; None before the first (or after assigning `state`)."""
        return self._prev_height

    def restore(self, state: torch.Tensor, prev_height: torch.Tensor | None, t: int) -> None:
        """Take ``state``, ``prev_height`` and the step count ``t`` as computed outside `step`
        (`metarl.backends.lifetime` steps the physics itself); no copy and no checks."""
        self._state, self._prev_height, self.t = state, prev_height, t

    def initial_state(self, uniform: torch.Tensor | None = None) -> torch.Tensor:
        """Start state of the configured ``init``; ``uniform (B, state_size())`` feeds `random` and `near_up`."""
        state = torch.zeros(self.batch_size, self.state_size(), device=self.device, dtype=self.dtype)
        if self.options.init == "up":
            state[:, 0::2] = math.pi * (1 + UP_OFFSET)
        elif self.options.init in RANDOM_INITS:
            if uniform is None:
                raise ValueError(f"init {self.options.init!r} needs uniform numbers")
            u = 2 * uniform.to(device=self.device, dtype=self.dtype) - 1
            if self.options.init == "random":
                state[:, 0::2] = u[:, : self.links] * math.pi
                state[:, 1::2] = u[:, self.links :] * RANDOM_SPEED
            else:
                state[:, 0::2] = math.pi + u[:, : self.links] * NEAR_UP_ANGLE
                state[:, 1::2] = u[:, self.links :] * NEAR_UP_SPEED
        return wrap_state(state)

    def _sign(self, option: str, uniform: torch.Tensor | None) -> torch.Tensor:
        """``(B,)`` of ±1 for the option ``action_sign`` or ``goal``; ``uniform (B, 1)`` feeds `random`."""
        value = getattr(self.options, option)
        if value != "random":
            return torch.full((self.batch_size,), float(value), device=self.device, dtype=self.dtype)
        if uniform is None:
            raise ValueError(f"{option} 'random' needs uniform numbers")
        u = uniform.to(device=self.device, dtype=self.dtype)[:, 0]
        return torch.where(u < 0.5, -1.0, 1.0).to(self.dtype)

    def _dt(self, uniform: torch.Tensor | None) -> float | torch.Tensor:
        """The step: the float ``dt``, or for a range ``(B,)`` drawn from ``uniform (B, 1)``."""
        if not isinstance(self.options.dt, (list, tuple)):
            return float(self.options.dt)
        if uniform is None:
            raise ValueError("a dt range needs uniform numbers")
        low, high = self.options.dt_range
        return low + (high - low) * uniform.to(device=self.device, dtype=self.dtype)[:, 0]

    def _switch_sign(self, uniform: torch.Tensor | None) -> torch.Tensor:
        """``(B,)``: -1 where the lifetime reverses at ``goal_switch`` (all of them unless
        `EnvOptions.switch_drawn`; then those with ``uniform (B, 1)`` below the probability), +1 where it keeps
        its goal."""
        if not self.options.switch_drawn:
            return torch.full((self.batch_size,), -1.0, device=self.device, dtype=self.dtype)
        if uniform is None:
            raise ValueError("a goal_switch_probability below 1 needs uniform numbers")
        u = uniform.to(device=self.device, dtype=self.dtype)[:, 0]
        return torch.where(u < self.options.goal_switch_probability, -1.0, 1.0).to(self.dtype)

    def _switch_step(self, uniform: torch.Tensor | None) -> int | torch.Tensor | None:
        """The step the goal flips at: None (never), the int ``goal_switch``, or for a range ``(B,)`` int64 drawn
        from ``uniform (B, 1)``: first + floor(u * (last - first + 1)), in float64."""
        if self.options.goal_switch is None:
            return None
        first, last = self.options.switch_range
        if not self.options.switch_step_drawn:
            return first
        if uniform is None:
            raise ValueError("a goal_switch range needs uniform numbers")
        u = uniform.to(device=self.device, dtype=torch.float64)[:, 0]
        return (first + torch.floor(u * (last - first + 1))).clamp(max=last).to(torch.int64)

    @property
    def goal_after_switch(self) -> torch.Tensor:
        """The goal's sign ``(B,)`` from ``goal_switch`` on: `goal` times `switch_sign` (derived, so that it
        follows `goal` wherever that is set again, as the Gymnasium wrapper does on a reset)."""
        return self.goal * self.switch_sign

    def observe(self) -> torch.Tensor:
        """Observation ``(B, 3 * links)``: ``[sin theta_i, cos theta_i, omega_i]`` per link."""
        return self.observation(self._state)

    def observation(self, state: torch.Tensor) -> torch.Tensor:
        """Observation ``(B, 3 * links)`` of ``state (B, 2 * links)``."""
        theta, omega = state[:, 0::2], state[:, 1::2]
        return torch.stack((torch.sin(theta), torch.cos(theta), omega), dim=2).flatten(1)

    def height(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """Height reward ``(B,)``: ``1 - cos(theta)`` summed over links."""
        state = self._state if state is None else state
        return (1 - torch.cos(state[:, 0::2])).sum(dim=1)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply ``action`` (``(B,)`` or ``(B, 1)``, in [-1, 1]); return ``(obs, reward)``."""
        if action.dim() == 2:
            action = action[:, 0]
        if action.shape != (self.batch_size,):
            raise ValueError(f"action must have shape ({self.batch_size},) or ({self.batch_size}, 1), "
                             f"got {tuple(action.shape)}")
        after, reward = self.transition(EnvState(self._state, self._prev_height, self.t), action)
        self._state, self._prev_height = after.state, after.prev_height
        self.t = int(after.t)  # an int already: the transition of the int self.t
        return self.observe(), reward

    def transition(self, env_state: EnvState, action: torch.Tensor) -> tuple[EnvState, torch.Tensor]:
        """The pure step (as gymnax's ``step_env``): the state after ``action (B,)`` and the reward ``(B,)``.
        `step` and every torch lifetime backend (`metarl.core.step`) use it."""
        state = self.advance(env_state.state, action)
        height = self.height(state)
        reward = self.reward(env_state.state, state, height, env_state.prev_height, env_state.t, self.torque(action))
        return EnvState(state, height, env_state.t + 1), reward

    def torque(self, action: torch.Tensor) -> torch.Tensor:
        """The motor's torque ``(B,)`` for ``action (B,)``: clamped to [-1, 1], times max_torque and the sign."""
        return action.to(self.dtype).clamp(-1.0, 1.0) * (self.options.max_torque * self.action_sign)

    def advance(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The state ``(B, 2 * links)`` one step after ``state`` under ``action (B,)``; pure.

        Integrates, wraps the angles and clamps the speeds. `step` and the lifetime
        step (`metarl.core.step`) both use it, so they share the physics exactly.
        """
        dt = self.dt if isinstance(self.dt, float) else self.dt[:, None]
        state = integrate(self.derivatives, state, self.torque(action), dt, self.options.integrator)
        state = self.wrap(state)
        if self.options.max_speed is not None:
            state[:, 1::2] = state[:, 1::2].clamp(-self.options.max_speed, self.options.max_speed)
        return state

    def reward(self, start: torch.Tensor, state: torch.Tensor, height: torch.Tensor,
               prev_height: torch.Tensor | None, t: int | torch.Tensor, torque: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Reward ``(B,)`` of step number ``t`` (0-based), which went from ``start`` to ``state`` and ``height``
        under ``torque`` (`gym` only; None = 0); ``prev_height`` None (or NaN) = first step. `gym` scores
        ``start`` and the torque, as Gymnasium's Pendulum-v1 does (the cost of the state the action was taken
        in); the others score the state reached. Times the goal sign (flipped from ``goal_switch`` on)."""
        kind = self.options.reward
        if kind == "height":
            reward = height
        elif kind == "spin":
            reward = state[:, 1]  # angular speed of the first link (rad/s)
        elif kind == "gym":  # the torque's cost, then each link's, in this order (the native kernel's sums)
            reward = torch.zeros_like(height) if torque is None else -(GYM_TORQUE_COST * torque * torque)
            for i in range(start.shape[1] // 2):
                from_up, omega = wrap_angle(start[:, 2 * i] - math.pi), start[:, 2 * i + 1]
                reward = reward - (from_up * from_up + GYM_SPEED_COST * omega * omega)
        elif prev_height is None:
            reward = torch.zeros_like(height)
        else:
            delta = height - prev_height
            # NaN marks "no previous height" where a tensor must stand in for None (compiled steps).
            reward = torch.where(torch.isnan(prev_height), 0.0,
                                 torch.where(delta < 0, DOWN_PENALTY * delta, delta))
        return reward * self.goal_at(t)

    def goal_at(self, t: int | torch.Tensor) -> torch.Tensor:
        """The hidden goal's sign ``(B,)`` at step number ``t``: `goal`, from `switch_step` (``goal_switch``, or
        the lifetime's draw from its range) on `goal_after_switch` (flipped in the lifetimes that reverse)."""
        switch = self.switch_step
        if switch is None:
            return self.goal
        return torch.where(torch.as_tensor(t) >= switch, self.goal_after_switch, self.goal)

    def wrap(self, state: torch.Tensor) -> torch.Tensor:
        """A copy of ``state`` with its angle coordinates wrapped to [-pi, pi) (the pendulums: every one)."""
        return wrap_state(state)

    def derivatives(self, state: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """Time derivative of ``state`` under ``torque (B,)``."""
        raise NotImplementedError

    def energy(self, state: torch.Tensor | None = None) -> torch.Tensor:
        """Total mechanical energy ``(B,)`` (kinetic + potential, zero at the pivot height)."""
        raise NotImplementedError

    def geometry(self, index: int = 0) -> list[tuple[float, float]]:
        """Pivot, joint and tip positions (metres, y up) of batch element ``index``."""
        theta = self._state[index, 0::2].detach().double().cpu().tolist()
        lengths = [float(self.params[k][index]) for k in self.link_length_names]
        points = [(0.0, 0.0)]
        for t, length in zip(theta, lengths, strict=True):
            x, y = points[-1]
            points.append((x + length * math.sin(t), y - length * math.cos(t)))
        return points

    @property
    def link_length_names(self) -> tuple[str, ...]:
        """Names of the rod-length parameters, from the pivot outwards."""
        raise NotImplementedError


def wrap_state(state: torch.Tensor) -> torch.Tensor:
    """Wrap the angle columns of a state to [-pi, pi)."""
    state = state.clone()
    state[:, 0::2] = wrap_angle(state[:, 0::2])
    return state


Derivative = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def integrate(f: Derivative, state: torch.Tensor, torque: torch.Tensor, dt: float | torch.Tensor, method: str
              ) -> torch.Tensor:
    """One step of ``method`` (``rk4`` or ``euler``) of ``state' = f(state, torque)``; ``dt`` a float or
    ``(B, 1)`` (one step per individual)."""
    if method == "euler":
        return state + dt * f(state, torque)
    k1 = f(state, torque)
    k2 = f(state + (0.5 * dt) * k1, torque)
    k3 = f(state + (0.5 * dt) * k2, torque)
    k4 = f(state + dt * k3, torque)
    return state + (dt / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
