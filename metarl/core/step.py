"""One step of a lifetime (observe, act, env step, learning rule) as the pure function `transition`.

The spec runs it with `metarl.core.actor` and the plain rule of `metarl.core.spec`; the compiled
backend runs these same functions under `torch.compile` (`metarl.backends.compiled`). The native kernel
(`metarl.backends.native`) is the same step in C++. Every random draw comes from the individual's key
(`metarl.core.rng`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import envs
from ..config import Config
from ..envs.base import RANDOM_INITS, REFERENCE_DT, BatchedEnv, EnvState
from . import actor as actor_mod
from . import rng
from .actor import ActorState
from .genome import GenomeLayout
from .rule import REWARD_MEAN_TIME, RuleState
from .spec import reference_rule_step


@dataclass(frozen=True)
class Conditions:
    """Ablations of a lifetime (used to measure whether a rule really learns)."""

    plastic: bool = True  # False: the rule is never applied; the initial actor acts unchanged
    zero_reward: bool = False  # True: the rule always sees reward 0
    # The rule sees these rewards ``(P, T)`` (e.g. another lifetime's) instead of its own; None = its own.
    seen_rewards: torch.Tensor | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class StepSpec:
    """Everything constant about a step: a compiled step is specialised on it."""

    neurons: int  # actor neurons with noise
    learning_rate: float
    weight_limit: float
    sigma_limit: float
    conditions: Conditions  # without seen_rewards (the spec holds no tensors: compiled code guards on it)
    lifetime_steps: int  # ga.lifetime_steps (what the rule's ``lifetime_fraction`` source divides by)
    sigma_min: float = 0.0  # actor.sigma_min: the least noise scale an update leaves
    reward_mean_time: float = REWARD_MEAN_TIME  # rule.reward_mean_time: trace reward.mean's time constant (s)


@dataclass
class Carry:
    """What changes from step to step."""

    t: torch.Tensor  # 0-d int64: the step number (a tensor, so compiled code does not specialise on it)
    state: torch.Tensor  # (P, state_size) env state
    # (P,) height after the last step; NaN before the first. None after a step only from an env whose transition
    # returns no height (as `metarl.envs.pendulum_v1`'s): the next step takes it as NaN (`Lifetime.step`).
    prev_height: torch.Tensor | None
    actor: ActorState
    rule: RuleState


def transition(env: BatchedEnv, genomes: torch.Tensor, layout: GenomeLayout, noise_keys: torch.Tensor,
               carry: Carry, spec: StepSpec, seen: torch.Tensor | None = None, obs_keys: torch.Tensor | None = None,
               learning_rates: torch.Tensor | None = None) -> tuple[Carry, torch.Tensor]:
    """One step of a lifetime; returns the next carry and the reward ``(P,)``. Pure.

    ``env`` supplies the physics (its own state is not used), ``noise_keys (P,)`` the
    sampling-noise stream and ``obs_keys (P,)`` the sensor-noise stream (needed when
    ``env.options.obs_noise`` > 0); ``seen (P,)``, if given, is the reward the rule sees instead of
    its own (`Conditions`); ``learning_rates (P,)``, if given, the rule's rate per individual instead
    of ``spec.learning_rate`` (`learning_rates`). The step is `act` on the (noisy) observation, the
    env's transition, then `learn` from the reward.
    """
    x = observe(env, carry.state, carry.t, obs_keys)
    actor, action = act(carry.actor, x, carry.t, noise_keys, spec)
    (state, height, _), reward = env.transition(EnvState(carry.state, carry.prev_height, carry.t), action)
    rule, actor = learn(genomes, layout, carry.rule, actor, x, reward, carry.t, spec, seen, learning_rates,
                        dt=env.dt)
    return Carry(carry.t + 1, state, height, actor, rule), reward


def observe(env: BatchedEnv, state: torch.Tensor, t: int | torch.Tensor, obs_keys: torch.Tensor | None
            ) -> torch.Tensor:
    """What the actor and the rule observe at step number ``t``: ``env.observation(state)`` ``(P, obs)``
    plus, with ``env.options.obs_noise`` > 0, Gaussian noise of that std, numbers ``t * obs .. t * obs +
    obs - 1`` of each individual's sensor-noise stream (``obs_keys (P,)``: `metarl.core.rng.STREAM_OBS_NOISE`
    keys). The reference controller sees the same (`metarl.analysis.controllers.run_reference`)."""
    x = env.observation(state)
    sigma = env.options.obs_noise
    if sigma > 0:
        if obs_keys is None:
            raise ValueError("env.obs_noise > 0 needs the sensor-noise keys")
        n = x.shape[1]
        x = x + sigma * rng.normal_at(obs_keys, t * n, n, dtype=x.dtype, exact=False)
    return x


def act(actor: ActorState, x: torch.Tensor, t: torch.Tensor, noise_keys: torch.Tensor,
        spec: StepSpec) -> tuple[ActorState, torch.Tensor]:
    """The actor's forward pass on observation ``x (P, obs)`` at step number ``t`` of the lifetime
    (its sampling noise); returns the actor with its activations and the action ``(P,)`` in
    [-1, 1]. Pure; the first half of `transition`."""
    pop = x.shape[0]
    if spec.sigma_limit == 0:
        noise = x.new_zeros(pop, spec.neurons)
    else:
        noise = rng.normal_at(noise_keys, t * spec.neurons, spec.neurons, dtype=x.dtype, exact=False)
    actor = actor_mod.forward(actor, x, noise)
    return actor, actor.outputs[-1][:, 0]


def learn(genomes: torch.Tensor, layout: GenomeLayout, rule: RuleState, actor: ActorState, x: torch.Tensor,
          reward: torch.Tensor, t: torch.Tensor, spec: StepSpec, seen: torch.Tensor | None = None,
          learning_rates: torch.Tensor | None = None, *, dt: float | torch.Tensor | None = None
          ) -> tuple[RuleState, ActorState]:
    """One application of the rule after `act` on ``x`` at step number ``t``, given the ``reward (P,)``
    that followed (or ``seen``, the reward shown instead; `Conditions` may zero it or skip the rule) at
    the rate ``spec.learning_rate`` (or ``learning_rates (P,)``), in an env of time step ``dt`` (what the
    rule's traces read); returns the rule's state and the actor. Pure; the second half of `transition`."""
    if spec.conditions.plastic:
        if spec.conditions.zero_reward:
            seen = torch.zeros_like(reward)
        elif seen is None:
            seen = reward
        rate = spec.learning_rate if learning_rates is None else learning_rates
        rule, actor = reference_rule_step(genomes, layout, rule, actor, x, seen, learning_rate=rate,
                                          weight_limit=spec.weight_limit, sigma_limit=spec.sigma_limit, t=t,
                                          lifetime_steps=spec.lifetime_steps, sigma_min=spec.sigma_min, dt=dt,
                                          reward_mean_time=spec.reward_mean_time)
    return rule, actor


def learning_rates(config: Config, env: BatchedEnv) -> float | torch.Tensor:
    """The rule's learning rate for the lifetimes of ``env``: ``actor.learning_rate``, or with
    ``actor.learning_rate_dt`` that times ``dt / REFERENCE_DT`` (a rate per 0.05 s of simulated time, so a
    rule learns as fast per second at any step): a float, or ``(P,)`` where ``env.dt`` is drawn per
    individual."""
    rate = config.actor.learning_rate
    return rate * env.dt / REFERENCE_DT if config.actor.learning_rate_dt else rate


def make_env(config: Config, keys: torch.Tensor, *, dtype: torch.dtype = torch.float32) -> BatchedEnv:
    """The environments of the lifetimes with ``keys (P,)``: parameters, initial state, motor
    direction and goal drawn from each key's env stream (on the keys' device)."""
    offset = [0]

    def sampler(count: int) -> torch.Tensor:
        u = rng.uniform(keys, rng.STREAM_ENV_PARAMS, count, offset=offset[0], dtype=dtype)
        offset[0] += count
        return u

    return envs.make(config.env.name, keys.shape[0], device=keys.device, dtype=dtype, sampler=sampler,
                     **config.env.make_kwargs())


def reset_episode(env: BatchedEnv, keys: torch.Tensor | None, t: int) -> bool:
    """Start a new episode if one starts at step number ``t`` (every ``env.options.episode_steps``
    steps, from the second episode on); returns whether it did.

    The env goes back to its start state with no previous height; for random inits (`random`,
    `near_up`) episode ``e >= 1`` starts from a fresh draw of each key's env-init stream (episode 0
    is the env's initial state, drawn by `make_env`). The step number runs on through the whole
    lifetime (a `goal_switch` counts lifetime steps), and the actor and the rule keep what they
    learned: only the environment is reset. ``keys (B,)`` may be None when the init is not random. Every
    backend (`metarl.backends.lifetime.Lifetime`) and the reference controller
    (`metarl.analysis.controllers.run_reference`) reset through this function.
    """
    steps = env.options.episode_steps
    if steps is None or t == 0 or t % steps:
        return False
    uniform = None
    if env.options.init in RANDOM_INITS:
        if keys is None:
            raise ValueError(f"reset_episode: init {env.options.init!r} draws each episode's start from the keys")
        n = env.state_size()
        uniform = rng.uniform(keys, rng.STREAM_ENV_INIT, n, offset=(t // steps - 1) * n, dtype=env.dtype)
    env.restore(env.initial_state(uniform), None, t)
    return True
